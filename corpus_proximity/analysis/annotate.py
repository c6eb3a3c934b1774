"""Annotation: tag model outputs (and eval questions) with the corpus region they are closest to.

For every row of a results file (JSONL/CSV/Parquet), each text field is embedded with the
corpus' own model (query prefix; cached under ``queries-<key>``) and placed in the cluster tree by
a vote of its ``annotation.knn_k`` nearest corpus chunks (exact, or an IVF index above
``annotation.exact_search_max_chunks``; ``annotation.placement = "centroid"`` descends to the
nearest child centroid instead; see corpus_proximity.tree.placement), giving its cluster path, the
names, the cosine distance to each chosen centroid, and its nearest chunk. Its nearest-chunk
similarity is compared with the corpus's own (leave-one-document-out, cached under
``calibration-<key>``): below the ``annotation.outside_percentile`` it is *outside the corpus*. For
each correctness field, error concentration by cluster is tested at every depth (cluster_stats),
outside outputs in their own row, out of the tests.

Fields are dotted paths into nested JSON and may use ``*`` globs, so GSM8K's published
``example_model_solutions.jsonl`` needs no converter; one call tests all four of its models:

    python annotate_with_clusters.py configs/clustering_01_tiny.py \\
        --results example_model_solutions.jsonl --text-field question --correct-field '*.is_correct'

Writes ``DIR/annotated.csv``, ``DIR/annotated.parquet`` (the input rows plus, per text field F,
``F.cluster_depth_<d>``, ``F.name_depth_<d>``, ``F.distance_depth_<d>``, ``F.nearest_chunk``,
``F.nearest_chunk_distance``, ``F.nn_sim``, ``F.nn_percentile`` (0-100, against the corpus),
``F.outside`` — unprefixed when there is one text field — and ``correct`` or
``correct.<field>`` booleans) and ``DIR/analysis.json`` (``analyses``: one entry per text field ×
correctness field, each with per-depth contingency table, chi2, dof, p, Cramér's V and
per-cluster rows with q-values). DIR defaults to ``data/outputs/<name>/annotations/<results stem>``.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from corpus_proximity import cli, faults
from corpus_proximity.analysis.stats import OUTSIDE, analyze_clusters
from corpus_proximity.cache import StageDir, atomic_write_json, atomic_writer, check_artifacts, publish_dir, stage_key
from corpus_proximity.config import ExperimentConfig, to_dict
from corpus_proximity.errors import InputError
from corpus_proximity.naming.stage import names_or_ids
from corpus_proximity.text import chunking, embedding
from corpus_proximity.text.corpus import read_jsonl
from corpus_proximity.text.embedders import SentenceTransformerEmbedder, default_prefixes, resolve_model_dir
from corpus_proximity.tree import stage as tree_stage
from corpus_proximity.tree.index import ExactSearch, IVFSearch, NearestChunkSearch
from corpus_proximity.tree.placement import Placed, calibrate_outside, outside_flags, place_outputs
from corpus_proximity.tree.tree import ClusterTree
from corpus_proximity.untrusted import term

_TRUE = {"true", "1", "yes", "y", "correct", "t"}
_FALSE = {"false", "0", "no", "n", "incorrect", "wrong", "f"}
QUERY_STAGE, QUERY_VERSION = "queries", 1
_EMBEDDERS: dict[str, SentenceTransformerEmbedder] = {}
IVF_STAGE, IVF_VERSION = "ivf", 1
CALIBRATION_STAGE, CALIBRATION_VERSION = "calibration", 1


# --- reading results ---------------------------------------------------------------------------

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


def leaf_paths(row: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in row.items():
        out += leaf_paths(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"]
    return out


def expand_fields(rows: list[dict], patterns: list[str]) -> list[str]:
    """Globs (``*.is_correct``) → the matching dotted fields of the first row, in file order."""
    leaves = leaf_paths(rows[0])
    out: list[str] = []
    for pat in patterns:
        found = [f for f in leaves if fnmatch.fnmatchcase(f, pat)] if any(c in pat for c in "*?[") else [pat]
        out += [f for f in found if f not in out]
    return out


def load_results(path: Path) -> list[dict]:
    if not path.is_file():
        raise InputError(f"--results: {path} does not exist; give a JSONL/CSV/Parquet file of model outputs")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        rows = read_jsonl(path)
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
            keys = ", ".join(leaf_paths(r)[:12])
            raise InputError(f"{path}: row {i + 1} has no field '{field}' (fields: {keys}); "
                             f"pass an existing --text-field / --correct-field (dotted paths reach into nested JSON)") from None
    return out


def as_bool(values: list, field: str, path: Path) -> np.ndarray:
    """True/False per value; None/"" (an ungraded row, e.g. a failed call) stays None."""
    out = []
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and np.isnan(v)) or (isinstance(v, str) and not v.strip()):
            out.append(None)
        elif isinstance(v, (bool, np.bool_)):
            out.append(bool(v))
        elif str(v).strip().lower() in _TRUE:
            out.append(True)
        elif str(v).strip().lower() in _FALSE:
            out.append(False)
        else:
            raise InputError(f"{path}: row {i + 1} field '{field}' = {v!r} is not a boolean "
                             f"(use true/false or 1/0)")
    return np.array(out, dtype=object)


# --- the tree and the embedding space ----------------------------------------------------------

def tree_for(cfg: ExperimentConfig, tree_dir: Path | None, config_path: str) -> StageDir:
    """The config's own tree, or ``tree_dir`` after checking it was built from this config."""
    expected = tree_stage.stage_dir(cfg)
    if tree_dir is None:
        if not expected.complete:
            raise InputError(f"no tree for {config_path}; run `python cluster_corpus.py {config_path}` first")
        return expected
    meta_file = next((tree_dir / f for f in ("config.json", "tree_config.json") if (tree_dir / f).is_file()), None)
    if meta_file is None and (tree_dir / "tree.json").is_file():
        raise InputError(f"--tree {tree_dir}: a half-published tree folder (no tree_config.json: a publish was "
                         f"interrupted); rerun `python cluster_corpus.py {config_path}` to publish it again")
    if meta_file is None or not (tree_dir / "tree_arrays.npz").is_file():
        raise InputError(f"--tree {tree_dir}: not a tree folder (needs tree.json, tree_arrays.npz, config.json); "
                         f"give a data/cache/tree-* or data/outputs/<name> folder")
    fix = (f"delete {tree_dir} and rerun" if meta_file.name == "config.json"
           else f"rerun `python cluster_corpus.py {config_path}` to publish it again")
    try:
        meta = json.loads(meta_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InputError(f"{meta_file} is corrupt (not JSON): {fix}") from None
    if not isinstance(meta, dict):
        raise InputError(f"{meta_file} is corrupt (not a JSON object): {fix}")
    check_artifacts(tree_dir, {"artifacts": {k: v for k, v in (meta.get("artifacts") or {}).items()
                                             if k in ("tree.json", "tree_arrays.npz")}}, fix)
    if meta.get("key") == expected.key:
        return StageDir(expected.stage, expected.key, tree_dir)
    who = f"config '{meta.get('experiment')}'" if meta.get("experiment") else "another config"
    diffs = [f"clustering.{k}: {v!r} there, {to_dict(cfg.clustering).get(k)!r} here"
             for k, v in (meta.get("config", {}).get("clustering") or {}).items()
             if to_dict(cfg.clustering).get(k) != v]
    if meta.get("upstream", {}).get("embed") != embedding.stage_dir(cfg).key:
        other = StageDir.for_key(cfg.cache_dir, "embed", meta.get("upstream", {}).get("embed", ""))
        model = other.read_meta().get("model") if other.complete else None
        diffs.append(f"its embeddings are of model {model!r} / another corpus" if model and model != cfg.embedding.model
                     else "its corpus or embeddings differ")
    raise InputError(f"--tree {tree_dir} was built by {who} ({'; '.join(diffs[:4]) or 'different settings'}); "
                     f"annotate with that config, or drop --tree to use {config_path}'s own tree")


def query_prefix(cfg: ExperimentConfig) -> str:
    if cfg.embedding.query_prefix is not None:
        return cfg.embedding.query_prefix
    return default_prefixes(cfg.embedding.model, resolve_model_dir(cfg.embedding.model))["query"]


def embed_queries(cfg: ExperimentConfig, texts: list[str]) -> np.ndarray:
    """Texts embedded with the corpus' model and its query prefix; cached (resumable shards)."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    model_id = embedding.model_identity(cfg)
    key = stage_key(QUERY_STAGE, QUERY_VERSION, {"model": model_id, "prefix": query_prefix(cfg)},
                    {"texts": h.hexdigest()})
    sd = StageDir.for_key(cfg.cache_dir, QUERY_STAGE, key)
    if sd.complete or not sd.begin():  # begin waits for a concurrent run embedding the same texts
        sd.tidy("shards")
        return load_query_embeddings(sd, len(texts))
    if cfg.annotation.engine == "ray":  # the embedding stage's actor pool, the same shards
        from corpus_proximity.text.ray_embed import embed_texts_ray

        shards, dim = embed_texts_ray(replace(cfg.embedding, ray_actors=cfg.annotation.ray_actors), texts,
                                      sd.path / "shards", 256, query_prefix(cfg))
    else:
        embedder = _EMBEDDERS.get(model_id_key := json.dumps(model_id, sort_keys=True))
        if embedder is None:  # one model load per process, however many text fields
            embedder = _EMBEDDERS[model_id_key] = SentenceTransformerEmbedder(cfg.embedding)
        embedder.prefix = query_prefix(cfg)
        shards, dim = embedding.embed_to_shards(texts, embedder, sd.path / "shards", 256, "embedding outputs"), \
            embedder.dim
    embedding.join_shards(shards, sd.file("embeddings.npy"), dim, len(texts))
    sd.finish({"embedding": model_id, "prefix": query_prefix(cfg), "n": len(texts)}, {})
    sd.tidy("shards")
    return load_query_embeddings(sd, len(texts))


def load_query_embeddings(sd: StageDir, n: int) -> np.ndarray:
    """The cached query embeddings, or a one-line error naming the file and the fix."""
    path = sd.file("embeddings.npy")
    try:
        emb = np.load(path)
    except Exception as e:
        raise InputError(f"{path} is corrupt (unreadable: {type(e).__name__}): {sd.fix}") from None
    if emb.ndim != 2 or len(emb) != n or emb.dtype != np.float32:
        raise InputError(f"{path} is corrupt (shape {emb.shape} {emb.dtype}, expected {n} float32 rows): {sd.fix}")
    return emb


def proximity_search(cfg: ExperimentConfig, embed_sd: StageDir, corpus: np.ndarray) -> NearestChunkSearch:
    """Exact search for moderate corpora; a cached IVF index above the configured size."""
    a = cfg.annotation
    if len(corpus) <= a.exact_search_max_chunks:
        return ExactSearch(corpus)
    params = {"nlist": a.ivf_nlist or IVFSearch.auto_nlist(len(corpus)), "seed": 0}
    sd = StageDir.for_key(cfg.cache_dir, IVF_STAGE, stage_key(IVF_STAGE, IVF_VERSION, params, {"embed": embed_sd.key}))
    if sd.complete:
        return IVFSearch.load(sd.file("index.faiss"), a.ivf_nprobe)
    cli.console.print(f"building an IVF index over {len(corpus):,} chunks ({params['nlist']} lists; once, cached "
                      f"in {sd.path})")
    index = IVFSearch.build(corpus, params["nlist"], a.ivf_nprobe, params["seed"])
    if not sd.begin():  # a concurrent run built it meanwhile
        return IVFSearch.load(sd.file("index.faiss"), a.ivf_nprobe)
    atomic_writer(sd.file("index.faiss"), index.save)
    sd.finish(params, {"embed": embed_sd.key})
    return index


def outside_calibration(cfg: ExperimentConfig, embed_sd: StageDir, corpus: np.ndarray) -> np.ndarray:
    """The corpus's leave-one-document-out nearest-chunk similarities (sorted); cached per corpus."""
    a = cfg.annotation
    params = {"n_sample": a.calibration_sample, "seed": a.seed}
    sd = StageDir.for_key(cfg.cache_dir, CALIBRATION_STAGE,
                          stage_key(CALIBRATION_STAGE, CALIBRATION_VERSION, params, {"embed": embed_sd.key}))
    if sd.complete:
        return np.load(sd.file("nn_sims.npy"))
    doc_ids = chunking.read_chunks(chunking.stage_dir(cfg), ["doc_id"]).column("doc_id").to_pylist()
    sims = calibrate_outside(corpus, doc_ids, a.calibration_sample, a.seed)
    sd.begin()
    def write(p: Path) -> None:
        with open(p, "wb") as f:  # a file object: np.save would append .npy to the temp name
            np.save(f, sims)

    atomic_writer(sd.file("nn_sims.npy"), write)
    sd.finish({**params, "n": len(sims), "percentiles": {str(q): float(np.percentile(sims, q)) for q in (1, 5, 50)}},
              {"embed": embed_sd.key})
    return sims


# --- annotate ----------------------------------------------------------------------------------

def place_all(cfg: ExperimentConfig, embedded: dict[str, np.ndarray], search: NearestChunkSearch,
              tree: ClusterTree) -> dict[str, Placed]:
    """Each text field's outputs placed in the tree, here or (``annotation.engine = "ray"``) on a
    Ray actor pool holding the index once (corpus_proximity.tree.ray_place); the same result."""
    a = cfg.annotation
    if a.engine == "local":
        return {f: place_outputs(emb, search, tree, a.placement, a.knn_k) for f, emb in embedded.items()}
    from corpus_proximity.tree.ray_place import RayPlacer

    placer = RayPlacer(search, tree, a, cfg.embedding.ray_address)
    try:
        return {f: placer.place(emb) for f, emb in embedded.items()}
    finally:
        placer.close()


def _alias(field: str) -> str:
    return field.replace(".", "_")


def annotate(cfg: ExperimentConfig, rows: list[dict], results: Path, text_fields: list[str],
             correct_fields: list[str], tree_sd: StageDir):
    """(annotated DataFrame, analysis dict) for ``rows``; see the module doc for the columns."""
    import pandas as pd

    embed_sd = embedding.stage_dir(cfg)
    meta = embed_sd.read_meta() if embed_sd.complete else {}
    if cfg.embedding.precomputed_path or meta.get("model") != cfg.embedding.model:
        raise InputError(f"the tree was built on embeddings of {meta.get('model') or 'a precomputed .npy'!r}; "
                         f"outputs can only be placed in it when embedded by the same model (embedding.model)")
    tree = ClusterTree.load(tree_sd.path)
    texts_fields = expand_fields(rows, text_fields)
    texts = {f: [str(t) for t in column(rows, f, results)] for f in texts_fields}
    correct, skipped = {}, []
    for f in expand_fields(rows, correct_fields):
        try:
            correct[f] = as_bool(column(rows, f, results), f, results)
        except InputError as e:
            if "has no field" not in str(e):
                raise
            skipped.append({"correct_field": f, "reason": str(e)})
    for pat in correct_fields:
        if not any(fnmatch.fnmatchcase(f, pat) for f in correct) and not any(s["correct_field"] == pat for s in skipped):
            skipped.append({"correct_field": pat, "reason": f"no field of {results} matches '{pat}'"})
    corpus = embedding.load_embeddings(embed_sd)
    if corpus.shape[1] != tree.dim:
        raise InputError(f"corpus embeddings are {corpus.shape[1]}-d but the tree is {tree.dim}-d; rebuild the tree")
    search = proximity_search(cfg, embed_sd, corpus)
    calib = outside_calibration(cfg, embed_sd, corpus)
    chunk_ids = chunking.read_chunks(chunking.stage_dir(cfg), ["chunk_id"]).column("chunk_id").to_pylist()
    names = names_or_ids(cfg)
    out = pd.DataFrame(rows)
    for col in list(out.columns):  # nested JSON → strings, so CSV and Parquet both hold it
        if out[col].map(lambda v: isinstance(v, (dict, list))).any():
            out[col] = out[col].map(lambda v: json.dumps(v) if isinstance(v, (dict, list)) else v)
    for f, vals in correct.items():
        out["correct" if len(correct) == 1 else f"correct.{_alias(f)}"] = pd.array(list(vals), dtype="boolean")
    analysis = {"results": str(results), "n_rows": len(rows), "tree": tree_sd.path.name, "tree_key": tree_sd.key,
                "model": cfg.embedding.model, "proximity": search.kind, "placement": cfg.annotation.placement,
                "knn_k": cfg.annotation.knn_k, "outside_percentile": cfg.annotation.outside_percentile,
                "outside_threshold": float(np.percentile(calib, cfg.annotation.outside_percentile)),
                "text_fields": texts_fields, "outside": {},
                "correct_fields": list(correct), "skipped": skipped, "analyses": []}
    embedded = {f: embed_queries(cfg, texts[f]) for f in texts_fields}  # all first: Ray's CPUs go to one pool at a time
    for f, emb in embedded.items():
        if emb.shape[1] != tree.dim:
            raise InputError(f"outputs embed to {emb.shape[1]}-d but the tree is {tree.dim}-d; the spaces differ")
    placed = place_all(cfg, embedded, search, tree)
    for f in texts_fields:
        a, near, nn_sim = placed[f]
        paths = a.paths
        pct, outside = outside_flags(nn_sim, calib, cfg.annotation.outside_percentile)
        # in the tests an item whose leaf is shallower than d stays in that leaf, so every graded
        # item counts at every depth (the columns keep "" below the leaf); outside items are their own row
        carried = paths.copy()
        for d in range(1, carried.shape[1]):
            carried[:, d] = np.where(carried[:, d] == "", carried[:, d - 1], carried[:, d])
        carried[outside] = OUTSIDE
        analysis["outside"][f] = {"n": int(outside.sum()), "share": float(outside.mean())}
        pre = "" if len(texts_fields) == 1 else _alias(f) + "."
        for d in range(paths.shape[1]):
            out[f"{pre}cluster_depth_{d}"] = paths[:, d]
            out[f"{pre}name_depth_{d}"] = [names.get(x, "") for x in paths[:, d]]
            out[f"{pre}distance_depth_{d}"] = a.distances[:, d]
        out[f"{pre}nearest_chunk"] = [chunk_ids[i] for i in near]
        out[f"{pre}nearest_chunk_distance"] = 1.0 - nn_sim
        out[f"{pre}nn_sim"] = nn_sim
        out[f"{pre}nn_percentile"] = pct
        out[f"{pre}outside"] = outside
        for c, vals in correct.items():
            graded = np.array([v is not None for v in vals])
            ok = np.array([bool(v) for v in vals[graded]], dtype=bool)
            entry = {"text_field": f, "correct_field": c, "n_graded": int(graded.sum()),
                     "n_ungraded": int((~graded).sum()), "depths": {}}
            for d in range(paths.shape[1]):
                entry["depths"][f"depth_{d}"] = analyze_clusters(carried[graded, d], ok, cfg.annotation.alpha,
                                                                 cfg.annotation.min_n, names=names)
            analysis["analyses"].append(entry)
    if not correct:
        analysis["note"] = ("no correctness field found: rows annotated, error tests skipped; pass "
                            "--correct-field FIELD (a boolean per row) to test where errors concentrate")
    return out, analysis


def default_out(cfg: ExperimentConfig, results: Path) -> Path:
    return cfg.outputs / "annotations" / results.stem


def previous_run(out_dir: Path) -> str | None:
    """What an earlier run in ``out_dir`` annotated ("N rows of FILE"), None when there is none."""
    try:
        a = json.loads((out_dir / "analysis.json").read_text())
        return f"{a['n_rows']} rows of {a['results']}"
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_outputs(out_dir: Path, df, analysis: dict) -> None:
    """One run's folder, published as a whole (built beside it, then swapped in): a reader, or a
    run killed half-way, never leaves the tables of one run beside another's analysis."""
    def build(tmp: Path) -> None:
        df.to_csv(tmp / "annotated.csv", index=False)
        faults.pause("annotate")  # tests kill here: the new run's folder half built
        df.to_parquet(tmp / "annotated.parquet", index=False)
        atomic_write_json(tmp / "analysis.json", analysis)

    publish_dir(out_dir, build)


def print_analysis(analysis: dict, console=None) -> None:
    from rich.table import Table

    console = console or cli.console
    for s in analysis["skipped"]:
        console.print(f"[yellow]skipped {term(s['correct_field'])}: {term(s['reason'])}[/yellow]")
    if analysis.get("note"):
        console.print(term(analysis["note"]))
    for f, o in (analysis.get("outside") or {}).items():
        console.print(f"outside the corpus ({term(f)}): {o['n']} of {analysis['n_rows']} outputs ({o['share']:.0%}) have no "
                      f"chunk nearer than the corpus's own percentile {analysis['outside_percentile']:g} (cosine "
                      f"similarity {analysis['outside_threshold']:.3f}); they are kept out of the per-cluster tests")
    if not analysis["analyses"]:
        return
    depths = sorted(analysis["analyses"][0]["depths"])
    suffix = ".".join(sorted({e["correct_field"].rpartition(".")[2] for e in analysis["analyses"]}))
    one_text = len(analysis["text_fields"]) == 1
    t = Table(title=f"where errors concentrate ({analysis['n_rows']} rows"
                    f"{', text: ' + analysis['text_fields'][0] if one_text else ''}; tree {analysis['tree']}): "
                    f"Cramér's V and p per depth")
    for col in ([] if one_text else ["text"]) + ["correct", "n", "errors"] + [d.replace("depth_", "depth ") for d in depths]:
        t.add_column(col, no_wrap=True)
    for e in analysis["analyses"]:
        first = e["depths"][depths[0]]
        cells = []
        for d in depths:
            o = e["depths"][d]["overall"]
            cells.append("n/a" if o["p"] is None else f"{o['cramers_v']:.2f} {o['p']:.2g}")
        rate = "n/a" if first["error_rate"] is None else f"{first['error_rate']:.1%}"
        short = e["correct_field"].removesuffix("." + suffix) if len(analysis["analyses"]) > 1 else e["correct_field"]
        t.add_row(*([] if one_text else [term(e["text_field"])]), term(short), str(e["n_graded"]), rate, *cells)
    console.print(t)
    for e in analysis["analyses"]:
        for d in depths:
            console.print(f"[bold]{term(e['correct_field'])} ({term(e['text_field'])}) {d}[/bold]: "
                          f"{term(e['depths'][d]['summary'])}")


HOW_TO = ("to place model outputs in this tree: python annotate_with_clusters.py {config} --results FILE "
          "--text-field question --correct-field '*.is_correct'  (e.g. GSM8K's example_model_solutions.jsonl from "
          "https://github.com/openai/grade-school-math), or set annotation.results_path")
