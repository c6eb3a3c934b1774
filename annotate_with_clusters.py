"""Stage 5: tag model outputs (and eval questions) with the corpus region they are closest to.

For every row of a results file (JSONL/CSV/Parquet), each configured text field is embedded with
the corpus' own model and descended through the cluster tree — at each depth the nearest child
centroid (cosine) — giving its cluster path, the cosine distance to each chosen centroid, and the
distance to the nearest corpus chunk (corpus proximity, exact batched search). With a
correctness field, error concentration by cluster is tested at every depth (cluster_stats).

    python annotate_with_clusters.py configs/clustering_01_tiny.py \\
        --results ../shared/data/gsm8k/example_model_solutions.jsonl \\
        --text-field question --text-field 175b_verification.solution \\
        --correct-field 175b_verification.is_correct --out data/outputs/gsm8k
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import chunking
import cli
import cluster_corpus
import embed_chunks
from cache import atomic_write_json, atomic_writer
from cluster_stats import analyze_clusters
from cluster_tree import ROOT, ClusterTree
from embedders import SentenceTransformerEmbedder, default_prefixes, resolve_model_dir
from errors import InputError, cli_errors

_TRUE = {"true", "1", "yes", "y", "correct", "t"}
_FALSE = {"false", "0", "no", "n", "incorrect", "wrong", "f"}


@dataclass
class Assignment:
    paths: np.ndarray
    """(n, n_depths) node ids; "" below the item's leaf."""
    distances: np.ndarray
    """(n, n_depths) cosine distance to the chosen centroid; NaN below the leaf."""


def assign_to_clusters(embeddings: np.ndarray, tree: ClusterTree) -> Assignment:
    """Nearest child centroid at each depth, descending from the root.

    One matrix product per tree node (items grouped by their current node), never a Python
    loop per item."""
    X = np.asarray(embeddings, dtype=np.float32)
    n, depths = len(X), max(tree.n_depths, 1)
    paths = np.full((n, depths), "", dtype=object)
    dist = np.full((n, depths), np.nan, dtype=np.float32)
    current = np.full(n, ROOT, dtype=object)
    for d in range(tree.n_depths):
        nxt = np.full(n, "", dtype=object)
        for node_id in np.unique(current[current != ""]):
            node = tree.nodes[node_id]
            rows = np.flatnonzero(current == node_id)
            if not node.children:
                continue
            cents = np.stack([tree.nodes[c].centroid for c in node.children])
            sims = X[rows] @ cents.T
            best = np.argmax(sims, axis=1)
            chosen = np.array(node.children, dtype=object)[best]
            paths[rows, d] = chosen
            dist[rows, d] = 1.0 - sims[np.arange(len(rows)), best]
            nxt[rows] = chosen
        current = nxt
    return Assignment(paths, dist)


def nearest_chunks(queries: np.ndarray, corpus: np.ndarray, block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Exact nearest corpus chunk (cosine) for each query, in blocks to bound memory."""
    idx = np.empty(len(queries), dtype=np.int64)
    dist = np.empty(len(queries), dtype=np.float32)
    for lo in range(0, len(queries), block):
        sims = np.asarray(queries[lo:lo + block], dtype=np.float32) @ np.asarray(corpus, dtype=np.float32).T
        best = np.argmax(sims, axis=1)
        idx[lo:lo + block] = best
        dist[lo:lo + block] = 1.0 - sims[np.arange(len(best)), best]
    return idx, dist


def get_path(row: dict, dotted: str):
    """``a.b.c`` into nested dicts; a key that itself contains dots is tried whole first."""
    if dotted in row:
        return row[dotted]
    cur = row
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            raise KeyError(dotted)
        cur = cur[part]
    return cur


def load_results(path: Path) -> list[dict]:
    if not path.is_file():
        raise InputError(f"--results: {path} does not exist; give a JSONL/CSV/Parquet file of model outputs")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        rows = []
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise InputError(f"{path}:{i}: not valid JSON ({e.msg})") from None
    elif suffix in (".csv", ".parquet"):
        import pandas as pd

        df = pd.read_csv(path, dtype=str, keep_default_na=False) if suffix == ".csv" else pd.read_parquet(path)
        rows = df.to_dict(orient="records")
    else:
        raise InputError(f"--results: {path} has unsupported suffix {suffix!r}; use .jsonl, .csv or .parquet")
    if not rows:
        raise InputError(f"--results: {path} has no rows")
    if not all(isinstance(r, dict) for r in rows):
        raise InputError(f"--results: {path}: every row must be a JSON object (one result per line)")
    return rows


def column(rows: list[dict], field: str, path: Path) -> list:
    out = []
    for i, r in enumerate(rows):
        try:
            out.append(get_path(r, field))
        except KeyError:
            keys = ", ".join(sorted(r)[:12])
            raise InputError(f"{path}: row {i + 1} has no field '{field}' (fields: {keys}); "
                             f"pass an existing --text-field / --correct-field (dotted paths reach into nested JSON)") from None
    return out


def as_bool(values: list, field: str, path: Path) -> np.ndarray:
    out = []
    for i, v in enumerate(values):
        if isinstance(v, (bool, np.bool_)):
            out.append(bool(v))
        elif str(v).strip().lower() in _TRUE:
            out.append(True)
        elif str(v).strip().lower() in _FALSE:
            out.append(False)
        else:
            raise InputError(f"{path}: row {i + 1} field '{field}' = {v!r} is not a boolean "
                             f"(use true/false or 1/0)")
    return np.array(out, dtype=bool)


def _alias(field: str) -> str:
    return field.replace(".", "_")


@cli_errors
def main(argv: list[str] | None = None) -> int:
    p = cli.parser("Annotate model outputs with their corpus cluster path and test error concentration.")
    p.add_argument("--results", type=Path, required=True, help="JSONL/CSV/Parquet of model outputs")
    p.add_argument("--text-field", action="append", default=None, help="text field(s) to embed (dotted paths ok)")
    p.add_argument("--correct-field", default=None, help="boolean correctness field (dotted path ok)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--limit", type=int, default=None, help="annotate only the first N rows")
    args = p.parse_args(argv)
    cfg = cli.resolve(args)
    tree_sd = cluster_corpus.stage_dir(cfg)
    if not tree_sd.complete:
        raise InputError(f"no tree for {args.config}; run `python cluster_corpus.py {args.config}` first")
    embed_sd = embed_chunks.stage_dir(cfg)
    meta = embed_sd.read_meta()
    if meta.get("model") != cfg.embedding.model or cfg.embedding.precomputed_path:
        raise InputError(f"the tree of {args.config} was built on embeddings of {meta.get('model')!r}; outputs must be "
                         f"embedded with the same model (set embedding.model accordingly)")
    tree = ClusterTree.load(tree_sd.path)
    rows = load_results(args.results)[: args.limit]
    fields = args.text_field or ["text"]
    correct = None
    if args.correct_field:
        correct = as_bool(column(rows, args.correct_field, args.results), args.correct_field, args.results)
    texts = {f: [str(t) for t in column(rows, f, args.results)] for f in fields}
    embedder = SentenceTransformerEmbedder(cfg.embedding)
    if embedder.dim != tree.dim:
        raise InputError(f"embedding dim {embedder.dim} differs from the tree's {tree.dim}; the spaces differ")
    embedder.prefix = (cfg.embedding.query_prefix if cfg.embedding.query_prefix is not None
                       else default_prefixes(cfg.embedding.model, resolve_model_dir(cfg.embedding.model))["query"])
    corpus = embed_chunks.load_embeddings(embed_sd)
    chunk_ids = chunking.read_chunks(chunking.stage_dir(cfg), ["chunk_id"]).column("chunk_id").to_pylist()
    names = _names(cfg)
    import pandas as pd

    out = pd.DataFrame(rows)
    for col in list(out.columns):  # nested JSON → strings, so CSV and Parquet both hold it
        if out[col].map(lambda v: isinstance(v, (dict, list))).any():
            out[col] = out[col].map(lambda v: json.dumps(v) if isinstance(v, (dict, list)) else v)
    analysis = {"results": str(args.results), "tree": tree_sd.path.name, "fields": {}}
    for f in fields:
        emb = embedder.encode(texts[f], 0)
        a = assign_to_clusters(emb, tree)
        near, near_d = nearest_chunks(emb, corpus)
        pre = "" if len(fields) == 1 else _alias(f) + "."
        for d in range(a.paths.shape[1]):
            out[f"{pre}cluster_depth_{d}"] = a.paths[:, d]
            out[f"{pre}name_depth_{d}"] = [names.get(x, "") for x in a.paths[:, d]]
            out[f"{pre}distance_depth_{d}"] = a.distances[:, d]
        out[f"{pre}nearest_chunk"] = [chunk_ids[i] for i in near]
        out[f"{pre}nearest_chunk_distance"] = near_d
        if correct is not None:
            analysis["fields"][f] = {f"depth_{d}": analyze_clusters(a.paths[:, d], correct)
                                     for d in range(a.paths.shape[1])}
    if correct is None:
        analysis["note"] = "no --correct-field: rows annotated, error tests skipped"
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_writer(args.out / "annotated.csv", lambda p_: out.to_csv(p_, index=False))
    atomic_writer(args.out / "annotated.parquet", lambda p_: out.to_parquet(p_, index=False))
    atomic_write_json(args.out / "analysis.json", analysis)
    cli.console.print(f"annotated {len(out)} rows → {args.out}/annotated.csv, annotated.parquet, analysis.json")
    for f, per_depth in analysis["fields"].items():
        for d, res in per_depth.items():
            cli.console.print(f"[bold]{f} {d}[/bold]: {res['summary']}")
    if correct is None:
        cli.console.print(analysis["note"])
    return 0


def _names(cfg) -> dict[str, str]:
    from name_clusters import load_names

    try:
        return load_names(cfg)
    except InputError:  # names are optional (e.g. LLM names not made yet): ids are shown alone
        return {}


if __name__ == "__main__":
    raise SystemExit(main())
