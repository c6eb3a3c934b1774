"""Everything the report and the dashboard show, read from the cache once: the tree, its names,
the 2-D map, the chunk texts and (where model outputs were annotated) where the errors sit."""

from __future__ import annotations

import json
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path

import numpy as np
import pandas as pd

from corpus_proximity import cli
from corpus_proximity.analysis import contamination
from corpus_proximity.analysis.contamination_outcomes import stage_shares
from corpus_proximity.cache import StageDir
from corpus_proximity.config import ExperimentConfig
from corpus_proximity.ensemble.registry import latest_stability
from corpus_proximity.errors import InputError
from corpus_proximity.explore import views as ex_
from corpus_proximity.explore.map import load_map
from corpus_proximity.naming import stage as naming_stage
from corpus_proximity.text import chunking
from corpus_proximity.tree.tree import ClusterTree


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
    stages: dict | None = None
    """Stage × node of the tree (``contamination.tree_stages``) when the chunks carry
    ``contamination.stage_field``; the node table then has a ``stage_share.<stage>`` column each."""


def load_names(cfg: ExperimentConfig, config_arg: str) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """Names and descriptions of the config's nodes, and notes on what is missing (never fatal:
    a node without a name is shown by its id)."""
    how = f"name them with `python name_clusters.py {config_arg} --tree` (offline, seconds)"
    if cfg.naming.namer == "none":
        return {}, {}, [f"naming.namer = none: nodes are shown by id; {how}"]
    try:
        names = naming_stage.load_names(cfg)
        records = naming_stage.read_names(naming_stage.stage_dir(cfg))
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
    """Per node: graded outputs of ``text_field`` placed in it, errors, error rate. Outputs outside
    the corpus are in no node (not even the root's count): they are their own row in the error views."""
    by_depth = {d: ann.table[ann.col(text_field, f"cluster_depth_{d}")].astype(str).to_numpy()
                for d in ann.depths(text_field)}
    graded, correct = ann.outcome(correct_field)
    return ex_.node_errors(by_depth, graded & ~ann.outside(text_field), correct)


def load_exploration(cfg: ExperimentConfig, annotations: Path | None = None, field_label: str | None = None,
                     correct_field: str | None = None, config_arg: str = "CONFIG", log=cli.console) -> Exploration:
    """Read (or compute, for the map and offline names) everything the report and dashboard show."""
    tree_sd = naming_stage.tree_stage(cfg, config_arg)
    tree = ClusterTree.load(tree_sd.path)
    up = tree_sd.read_meta()["upstream"]
    chunks = chunking.read_chunks(StageDir.for_key(cfg.cache_dir, chunking.STAGE, up["chunks"]),
                                  ["chunk_id", "doc_id", "text", "metadata"])
    texts = chunks.column("text").to_pylist()
    names, desc, notes = load_names(cfg, config_arg)
    coords, shown, in_memory = load_map(cfg, log)
    if in_memory:
        notes.append("the cache is read-only: the 2-D map was computed in memory, not cached")
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
    stab = latest_stability(cfg.cache_dir, tree_sd.key)
    stages, shares = None, None
    chunk_stage = contamination.chunk_stages(cfg, chunks.column("metadata").to_pylist())
    if chunk_stage is not None:
        stages = contamination.tree_stages(tree, chunk_stage, cfg.contamination.stage_field, cfg.contamination.alpha)
        shares = stage_shares({nid: n.members for nid, n in tree.nodes.items()}, chunk_stage)
    table = ex_.node_table(tree, names, desc, errors, stab.mean if stab is not None else None, shares)
    return Exploration(cfg, tree, tree_sd.path, ex_.display_names(tree, names), table,
                       ex_.hover_samples(tree, texts, v.hover_samples, v.preview_chars), texts,
                       chunks.column("chunk_id").to_pylist(), chunks.column("doc_id").to_pylist(),
                       coords, shown, map_note, ann, field_label, correct_field, notes, stages)


def map_outputs(ex: Exploration, text_field: str | None = None, correct_field: str | None = None) -> pd.DataFrame | None:
    """The annotated outputs of a field at their nearest chunk's map coordinates (None without any)."""
    text_field, correct_field = text_field or ex.field, correct_field or ex.correct_field
    if ex.annotations is None or text_field is None:
        return None
    return ex_.output_positions(ex.annotations, text_field, correct_field,
                                {c: i for i, c in enumerate(ex.chunk_ids)}, ex.coords)


def top_labels(ex: Exploration) -> np.ndarray:
    return ex.tree.labels_at_depth(0) if ex.tree.n_depths else np.full(ex.tree.n_points, ex_.NOISE, dtype=object)
