"""Exploration: a standalone HTML report of a config's named tree, a 2-D map of its chunks, and
(where model outputs were annotated) where the errors sit; plus ``items.json`` / ``clusters.json``
for external viewers. ``dashboard.py`` shows the same data interactively.

    python visualize_clusters.py configs/clustering_01_tiny.py [--out report.html] [--annotations DIR]
    streamlit run dashboard.py -- configs/clustering_01_tiny.py

The 2-D map is its own cached stage (``<cache_dir>/map2d-<key>/coords.npy``), keyed on the
embeddings and ``visualization``'s map fields: UMAP (cosine, 2-D) fitted on at most
``visualization.map_max_points`` chunks (a deterministic sample above it), the rest transformed.
"""

from __future__ import annotations

import html
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass, field as dc_field
from pathlib import Path

import numpy as np
import pandas as pd

import chunking
import cli
import embed_chunks
import exploration as ex_
from cache import StageDir, atomic_save_npy, atomic_write_json, atomic_write_text, stage_key
from cluster_tree import ClusterTree
from config import ExperimentConfig
from errors import InputError, cli_errors

STAGE = "map2d"
STAGE_VERSION = 1
MAP_FIELDS = ("map_max_points", "umap_n_neighbors", "umap_min_dist", "seed")


# --- the 2-D map stage -----------------------------------------------------------------------------

def stage_dir(cfg: ExperimentConfig, embed: StageDir | None = None) -> StageDir:
    embed = embed or embed_chunks.stage_dir(cfg)
    ident = {k: getattr(cfg.visualization, k) for k in MAP_FIELDS}
    return StageDir.for_key(cfg.cache_dir, STAGE, stage_key(STAGE, STAGE_VERSION, ident, {"embed": embed.key}))


def map_sample(n: int, max_points: int, seed: int) -> np.ndarray:
    """Rows the map is fitted on and shows: all of them, or a sorted seeded sample of ``max_points``."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))


def fit_map(X: np.ndarray, max_points: int, n_neighbors: int, min_dist: float, seed: int,
            block: int = 50_000) -> tuple[np.ndarray, np.ndarray]:
    """2-D coordinates of every row of ``X`` (cosine UMAP fitted on :func:`map_sample`, the rest
    transformed in blocks) and the fitted rows. Fewer than 8 rows: their first two principal axes."""
    n = len(X)
    fitted = map_sample(n, max_points, seed)
    coords = np.zeros((n, 2), dtype=np.float32)
    if n < 8:
        centred = np.asarray(X, dtype=np.float64) - np.mean(X, axis=0)
        u, s, _ = np.linalg.svd(centred, full_matrices=False)
        k = min(2, len(s))
        coords[:, :k] = (u[:, :k] * s[:k]).astype(np.float32)
        return coords, fitted
    import umap

    model = umap.UMAP(n_components=2, n_neighbors=max(2, min(n_neighbors, len(fitted) - 1)), min_dist=min_dist,
                      metric="cosine", random_state=seed, n_jobs=1, low_memory=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        coords[fitted] = model.fit_transform(np.asarray(X[fitted], dtype=np.float32))
        rest = np.setdiff1d(np.arange(n), fitted)
        for lo in range(0, len(rest), block):
            coords[rest[lo:lo + block]] = model.transform(np.asarray(X[rest[lo:lo + block]], dtype=np.float32))
    return coords, fitted


def run_map(cfg: ExperimentConfig, log=cli.console) -> StageDir:
    """The config's 2-D map (cached); needs the finished embeddings."""
    embed = embed_chunks.stage_dir(cfg)
    sd = stage_dir(cfg, embed)
    if sd.complete:
        log.print(f"[green]map2d: cache hit[/green] {sd.path}")
        return sd
    emb = embed_chunks.load_embeddings(embed)
    v = cfg.visualization
    note = f" (fitted on a sample of {v.map_max_points})" if len(emb) > v.map_max_points else ""
    log.print(f"map2d: UMAP of {len(emb)} × {emb.shape[1]} to 2-D{note} → {sd.path}")
    t0 = time.perf_counter()
    coords, fitted = fit_map(emb, v.map_max_points, v.umap_n_neighbors, v.umap_min_dist, v.seed)
    sd.begin()
    atomic_save_npy(sd.file("coords.npy"), coords)
    atomic_save_npy(sd.file("fitted.npy"), fitted.astype(np.int64))
    sd.finish({"visualization": {k: getattr(v, k) for k in MAP_FIELDS}}, {"embed": embed.key},
              {"n": len(emb), "n_fitted": len(fitted), "seconds": round(time.perf_counter() - t0, 2)})
    return sd


# --- everything the report and the dashboard show ----------------------------------------------

@dataclass
class Exploration:
    cfg: ExperimentConfig
    tree: ClusterTree
    tree_dir: Path
    names: dict[str, str]
    """Node id → label (its name, else its id)."""
    table: pd.DataFrame
    """exploration.node_table, with the error columns of ``field`` when annotations have them."""
    samples: dict[str, list[str]]
    texts: list[str]
    chunk_ids: list[str]
    doc_ids: list[str]
    coords: np.ndarray
    shown: np.ndarray
    """Rows drawn on the map (all, or the deterministic sample)."""
    map_note: str
    annotations: ex_.Annotations | None = None
    field: str | None = None
    """The annotated text field shown on the map and used for node error rates."""
    correct_field: str | None = None
    """The correctness field behind the error rates and the map's right / wrong markers."""
    notes: list[str] = dc_field(default_factory=list)
    """What is missing and the command that produces it (names, annotations)."""


def load_names(cfg: ExperimentConfig, config_arg: str) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """Names and descriptions of the config's nodes, and notes on what is missing (never fatal:
    a node without a name is shown by its id)."""
    import name_clusters

    how = f"name them with `python name_clusters.py {config_arg} --tree` (offline, seconds)"
    if cfg.naming.namer == "none":
        return {}, {}, [f"naming.namer = none: nodes are shown by id; {how}"]
    try:
        names = name_clusters.load_names(cfg)
        records = name_clusters.read_names(name_clusters.stage_dir(cfg))
    except InputError as e:
        return {}, {}, [f"{e}; until then nodes are shown by id"]
    desc = {nid: r.summary or ", ".join(r.keywords) for nid, r in records.items()}
    missing = sum(1 for r in records.values() if not r.name)
    notes = [f"{missing} node(s) have no name (shown by id); rerun `python name_clusters.py {config_arg} --name`"] if missing else []
    return names, desc, notes


def find_annotations(cfg: ExperimentConfig) -> list[Path]:
    """annotate_with_clusters.py output folders under ``<outputs>/annotations/``, newest first."""
    found = [p.parent for p in (cfg.outputs / "annotations").glob("*/analysis.json")
             if (p.parent / "annotated.parquet").is_file()]
    return sorted(found, key=lambda p: (p / "analysis.json").stat().st_mtime, reverse=True)


def load_annotations(path: Path, tree_dir: Path) -> ex_.Annotations:
    for f in ("annotated.parquet", "analysis.json"):
        if not (path / f).is_file():
            raise InputError(f"--annotations {path}: no {f}; give a folder written by annotate_with_clusters.py --out")
    analysis = json.loads((path / "analysis.json").read_text())
    made_on = analysis.get("tree")
    if made_on and made_on != tree_dir.name:
        raise InputError(f"{path} was annotated against tree {made_on}, but this config's tree is {tree_dir.name}; "
                         f"rerun annotate_with_clusters.py with this config")
    ann = ex_.read_annotations(path, pd.read_parquet(path / "annotated.parquet"), analysis)
    if not ann.fields:
        raise InputError(f"{path}/annotated.parquet has no cluster_depth_* columns; rerun annotate_with_clusters.py")
    return ann


def output_errors(ann: ex_.Annotations, text_field: str, correct_field: str) -> pd.DataFrame:
    """Per node: graded outputs of ``text_field`` placed in it, errors, error rate."""
    by_depth = {d: ann.table[ann.col(text_field, f"cluster_depth_{d}")].astype(str).to_numpy()
                for d in ann.depths(text_field)}
    return ex_.node_errors(by_depth, *ann.outcome(correct_field))


def load_exploration(cfg: ExperimentConfig, annotations: Path | None = None, field_label: str | None = None,
                     correct_field: str | None = None, config_arg: str = "CONFIG", log=cli.console) -> Exploration:
    """Read (or compute, for the map and offline names) everything the report and dashboard show."""
    import name_clusters

    tree_sd = name_clusters.tree_stage(cfg, config_arg)
    tree = ClusterTree.load(tree_sd.path)
    up = tree_sd.read_meta()["upstream"]
    chunks = chunking.read_chunks(StageDir.for_key(cfg.cache_dir, chunking.STAGE, up["chunks"]),
                                  ["chunk_id", "doc_id", "text"])
    texts = chunks.column("text").to_pylist()
    names, desc, notes = load_names(cfg, config_arg)
    map_sd = run_map(cfg, log)
    coords = np.load(map_sd.file("coords.npy"))
    shown = np.load(map_sd.file("fitted.npy"))
    n, v = len(coords), cfg.visualization
    map_note = (f"all {n} chunks" if len(shown) == n else
                f"a deterministic sample of {len(shown):,} of {n:,} chunks (visualization.map_max_points = "
                f"{v.map_max_points}, seed {v.seed}); the others are not drawn")
    ann = None
    if annotations is not None:
        ann = load_annotations(annotations, tree_sd.path)
    else:
        found = find_annotations(cfg)
        for p in found:
            try:
                ann = load_annotations(p, tree_sd.path)
                break
            except InputError as e:
                notes.append(f"skipped {p}: {e}")
        if ann is None:
            notes.append(f"no annotated model outputs for this config: the error views are hidden; produce them with "
                         f"`python annotate_with_clusters.py {config_arg} --results FILE --text-field FIELD "
                         f"--correct-field FIELD --out {cfg.outputs / 'annotations' / 'NAME'}`")
        elif len(found) > 1:
            notes.append(f"showing the newest annotations ({ann.path}); pick others with --annotations DIR")
    errors = None
    if ann is not None:
        if field_label is not None and field_label not in ann.fields:
            raise InputError(f"--field {field_label}: not annotated in {ann.path} (fields: {', '.join(ann.fields)})")
        field_label = field_label or next(iter(ann.fields))
        if correct_field is not None and correct_field not in ann.correct_cols:
            raise InputError(f"--correct-field {correct_field}: not in {ann.path} "
                             f"(graded by: {', '.join(ann.correct_cols) or 'nothing'})")
        correct_field = correct_field or next(iter(ann.correct_cols), None)
        if correct_field is None:
            notes.append(f"{ann.path}: the outputs were not graded, so error rates are hidden; rerun "
                         f"annotate_with_clusters.py with --correct-field FIELD")
        else:
            errors = output_errors(ann, field_label, correct_field)
    from ensemble_registry import latest_stability

    stab = latest_stability(cfg.cache_dir, tree_sd.key)
    table = ex_.node_table(tree, names, desc, errors, stab.mean if stab is not None else None)
    return Exploration(cfg, tree, tree_sd.path, ex_.display_names(tree, names), table,
                       ex_.hover_samples(tree, texts, v.hover_samples, v.preview_chars), texts,
                       chunks.column("chunk_id").to_pylist(), chunks.column("doc_id").to_pylist(),
                       coords, shown, map_note, ann, field_label, correct_field, notes)


def map_outputs(ex: Exploration, text_field: str | None = None, correct_field: str | None = None) -> pd.DataFrame | None:
    """The annotated outputs of a field at their nearest chunk's map coordinates (None without any)."""
    text_field, correct_field = text_field or ex.field, correct_field or ex.correct_field
    if ex.annotations is None or text_field is None:
        return None
    return ex_.output_positions(ex.annotations, text_field, correct_field,
                                {c: i for i, c in enumerate(ex.chunk_ids)}, ex.coords)


def top_labels(ex: Exploration) -> np.ndarray:
    return ex.tree.labels_at_depth(0) if ex.tree.n_depths else np.full(ex.tree.n_points, ex_.NOISE, dtype=object)


# --- the report --------------------------------------------------------------------------------

CSS = """body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1200px;color:#222}
h1{margin-bottom:4px} .meta{color:#555} .note{background:#fff6d6;padding:6px 10px;border-left:4px solid #e0b000}
table{border-collapse:collapse;font-size:13px;margin:8px 0 18px} td,th{border-bottom:1px solid #ddd;padding:3px 8px;text-align:right}
td:nth-child(2),th:nth-child(2){text-align:left} .summary{font-weight:600}"""


def _html_table(df: pd.DataFrame, floats: dict[str, str]) -> str:
    fmt = {c: (lambda f: (lambda x: "" if pd.isna(x) else f.format(x)))(f) for c, f in floats.items() if c in df}
    return df.to_html(index=False, escape=True, formatters=fmt, border=0)


def stats_section(ex: Exploration) -> str:
    ann = ex.annotations
    if ann is None:
        return ""
    parts = [f"<h2>Model outputs: where the errors are</h2><p class=meta>{html.escape(str(ann.path))}: "
             f"{len(ann.table)} outputs; text fields {html.escape(', '.join(ann.fields))}; graded by "
             f"{html.escape(', '.join(ann.correct_cols) or 'nothing')}. On the map, outputs of "
             f"{html.escape(str(ex.field))} sit at their nearest corpus chunk.</p>"]
    for e in ann.analyses:
        for d, res in sorted((e.get("depths") or {}).items()):
            if not isinstance(res, dict) or "clusters" not in res:
                continue
            parts.append(f"<h3>{html.escape(str(e.get('text_field')))} · graded by {html.escape(str(e.get('correct_field')))}"
                         f" · {html.escape(d.replace('_', ' '))}</h3><p class=summary>{html.escape(res['summary'])}</p>")
            parts += [f"<p class=note>{html.escape(w)}</p>" for w in res.get("warnings", [])]
            t = ex_.stats_table(res, ex.names)
            if len(t):
                parts.append(_html_table(t, {"error_rate": "{:.1%}", "ci_low": "{:.1%}", "ci_high": "{:.1%}",
                                             "rate_elsewhere": "{:.1%}", "p": "{:.3g}", "q": "{:.3g}"}))
    if len(parts) == 1:
        parts.append("<p class=note>The outputs were not graded: rerun annotate_with_clusters.py with "
                     "--correct-field FIELD to test where errors concentrate.</p>")
    return "\n".join(parts)


def render_report(ex: Exploration, tree_kind: str = "sunburst") -> str:
    """The whole report as one HTML page with plotly.js inlined (opens offline)."""
    tree, t = ex.tree, ex.table
    colour = "error rate" if "error_rate" in t else "coherence"
    tree_fig = ex_.tree_figure(t, ex.samples, tree_kind, colour, switches=True)
    outputs = map_outputs(ex)
    map_fig = ex_.map_figure(ex.coords, ex.shown, top_labels(ex), ex.names, ex.texts, ex.cfg.visualization.preview_chars,
                             outputs, note=f"map: {ex.map_note}" + (f"; model outputs ({ex.field}) at their nearest chunk"
                                                                     if outputs is not None else ""))
    top = t[t["depth"] == 0][[c for c in ("id", "name", "size", "noise", "coherence", "n_outputs", "error_rate") if c in t]]
    root = tree.root
    body = [f"<h1>Corpus map: {html.escape(ex.cfg.name)}</h1>",
            f"<p class=meta>{tree.n_points} chunks · {tree.n_depths} depths · {len(tree.nodes) - 1} nodes · "
            f"{len(tree.leaves())} leaves · {len(root.noise)} noise at the root · tree {html.escape(ex.tree_dir.name)}</p>",
            *[f"<p class=note>{html.escape(n)}</p>" for n in ex.notes],
            "<h2>The tree</h2><p class=meta>Click a node to zoom in; the menus switch the layout and the colouring. "
            "Hover: statistics and the texts nearest the node's centroid.</p>",
            tree_fig.to_html(full_html=False, include_plotlyjs=True, div_id="tree"),
            "<h2>Top-level clusters</h2>",
            _html_table(top, {"coherence": "{:.2f}", "error_rate": "{:.1%}"}),
            "<h2>Map of the chunks</h2>",
            map_fig.to_html(full_html=False, include_plotlyjs=False, div_id="map"),
            stats_section(ex)]
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>corpus-proximity: {html.escape(ex.cfg.name)}"
            f"</title><style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def export_viewer_files(ex: Exploration, out_dir: Path) -> tuple[Path, Path]:
    """items.json (the mapped chunks) and clusters.json (every node) for external viewers."""
    levels = [ex.tree.labels_at_depth(d) for d in range(ex.tree.n_depths)]
    items = ex_.items_records(ex.shown, ex.chunk_ids, ex.doc_ids, ex.texts, ex.coords, levels,
                              ex.cfg.visualization.preview_chars)
    atomic_write_json(out_dir / "items.json", items)
    atomic_write_json(out_dir / "clusters.json", ex_.clusters_records(ex.table))
    return out_dir / "items.json", out_dir / "clusters.json"


def dashboard_command(args) -> str:
    exe = Path(sys.prefix) / "bin" / "streamlit"
    try:
        exe_s = os.path.relpath(exe) if exe.is_file() and not os.path.relpath(exe).startswith("..") else "streamlit"
    except ValueError:
        exe_s = "streamlit"
    extra = "".join(f" --set {o}" for o in args.overrides)
    ann = f" --annotations {args.annotations}" if args.annotations else ""
    return f"{exe_s} run dashboard.py -- {args.config}{extra}{ann}"


@cli_errors
def main(argv: list[str] | None = None) -> int:
    p = cli.parser("Write the HTML report of a config's named tree and 2-D map (and where model errors sit), "
                   "and export items.json / clusters.json for external viewers.")
    p.add_argument("--out", type=Path, default=None, help="report file (default: <output_dir>/<name>/report.html)")
    p.add_argument("--annotations", type=Path, default=None, metavar="DIR",
                   help="an annotate_with_clusters.py --out folder (default: the newest under <output_dir>/<name>/annotations/)")
    p.add_argument("--field", default=None, help="annotated text field drawn on the map (default: the first)")
    p.add_argument("--correct-field", default=None,
                   help="correctness field behind node error rates and map markers (default: the first)")
    p.add_argument("--tree-kind", choices=ex_.TREE_KINDS, default="sunburst", help="initial tree layout")
    args = p.parse_args(argv)
    cfg = cli.resolve(args)
    ex = load_exploration(cfg, args.annotations, args.field, args.correct_field, args.config)
    for note in ex.notes:
        cli.console.print(f"[yellow]note: {note}[/yellow]")
    out = args.out or cfg.outputs / "report.html"
    atomic_write_text(out, render_report(ex, args.tree_kind))
    items, clusters = export_viewer_files(ex, out.parent)
    cli.console.print(f"map: {ex.map_note}")
    cli.console.print(f"report: {out}")
    cli.console.print(f"viewer files: {items} ({len(ex.shown)} chunks), {clusters} ({len(ex.tree.nodes) - 1} nodes)")
    cli.console.print(f"dashboard: {dashboard_command(args)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
