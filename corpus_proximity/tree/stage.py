"""The tree stage: chunk → embed → cluster for a config, cached as ``tree-<key>/`` (``tree.json``
+ ``tree_arrays.npz``), and its publication to the experiment's output folder with ``labels.csv``."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from corpus_proximity import cli, faults
from corpus_proximity.cache import StageDir, mkdir, stage_key, staging_dir
from corpus_proximity.config import ClusteringConfig, ExperimentConfig, semantic_dict, to_dict
from corpus_proximity.text import chunking, embedding
from corpus_proximity.tree.build import recursive_cluster  # noqa: F401 (ensemble runs call it from here)
from corpus_proximity.tree.scale import build_tree, fitting_on_sample
from corpus_proximity.tree.tree import ClusterTree

STAGE = "tree"
STAGE_VERSION = 3  # 2: coherence in float64; 3: split_consistency in tree.json


LAYERS_FIELDS = ("min_children", "max_children", "layers_base_size", "layers_noise")
FIT_SAMPLE_FIELDS = ("fit_sample", "assign_k", "assign_outside_percentile", "assign_exact_max")


def clustering_identity(cc: ClusteringConfig) -> dict:
    """The clustering fields that decide a tree; the `layers` root's own fields only when that root
    is chosen, and sample-fit + assign's only when ``fit_sample`` is on, so other trees keep the
    keys they had before those existed."""
    sem = semantic_dict(cc)
    if cc.root_clusterer != "layers":
        for f in LAYERS_FIELDS:
            sem.pop(f, None)
    if not cc.fit_sample:
        for f in FIT_SAMPLE_FIELDS:
            sem.pop(f, None)
    if cc.umap_child_epochs in (None, cc.umap_n_epochs):  # the same trees: the keys they had before
        sem.pop("umap_child_epochs", None)
    return sem


def stage_dir(cfg: ExperimentConfig, embed: StageDir | None = None) -> StageDir:
    embed = embed or embedding.stage_dir(cfg)
    key = stage_key(STAGE, STAGE_VERSION, clustering_identity(cfg.clustering), {"embed": embed.key})
    return StageDir.for_key(cfg.cache_dir, STAGE, key)


def run_clustering(cfg: ExperimentConfig, log=cli.console) -> StageDir:
    """chunk → embed → cluster for ``cfg``, each stage reused from the cache when present."""
    embed = embedding.run_embedding(cfg, log)
    sd = stage_dir(cfg, embed)
    if sd.complete:
        log.print(f"[green]tree: cache hit[/green] {sd.path}")
        return sd
    emb = embedding.load_embeddings(embed)
    chunks_sd = chunking.stage_dir(cfg)
    chunk_ids = chunking.read_chunks(chunks_sd, ["chunk_id"]).column("chunk_id").to_pylist()
    log.print(f"tree: clustering {emb.shape[0]} × {emb.shape[1]} → {sd.path}")
    groups = None
    if fitting_on_sample(len(emb), cfg.clustering):
        groups = strata(chunks_sd)
        log.print(f"tree: fitting on {cfg.clustering.fit_sample:,} of {len(emb):,} chunks (stratified by "
                  f"{'source and ' if len(groups) == 2 else ''}document), assigning the rest "
                  f"({cfg.clustering.engine} engine)")
    t0 = time.perf_counter()
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=log) as progress:
        tree = build_tree(emb, cfg.clustering, progress, groups, timings := {})
    if timings:
        log.print("tree: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    if not sd.begin():  # a concurrent run of this config finished it meanwhile
        return sd
    tree.save(sd.path, chunk_ids)
    sd.finish({"clustering": to_dict(cfg.clustering)}, {"embed": embed.key, "chunks": chunks_sd.key},
              {"seconds": round(time.perf_counter() - t0, 2), "n_nodes": len(tree.nodes) - 1,
               "n_depths": tree.n_depths, "experiment": cfg.name})
    return sd


def strata(chunks_sd: StageDir) -> list[np.ndarray]:
    """[source, doc_id] per chunk where every chunk's metadata names a source, else [doc_id]."""
    table = chunking.read_chunks(chunks_sd, ["doc_id", "metadata"])
    docs = np.asarray(table.column("doc_id").to_pylist(), dtype=object)
    sources = [json.loads(m or "{}").get("source") for m in table.column("metadata").to_pylist()]
    if all(isinstance(s, str) for s in sources) and len(set(sources)) > 1:
        return [np.asarray(sources, dtype=object), docs]
    return [docs]


def publish(cfg: ExperimentConfig, sd: StageDir, labels_path: Path | None) -> tuple[ClusterTree, Path]:
    """Copy the tree (tree.json, its arrays, its config as tree_config.json) to the experiment's
    output folder and write labels.csv.

    The folder also holds other stages' outputs, so it cannot be swapped whole: every file is
    first written complete into a private folder, then ``tree_config.json`` is removed, the others
    renamed in and ``tree_config.json`` (with the checksums of tree.json and its arrays) renamed in
    last. A publish killed half-way leaves a folder that readers refuse with a one-line error (no
    tree_config.json, or checksums that differ) and that the next publish completes."""
    tree = ClusterTree.load(sd.path)
    out = mkdir(cfg.outputs)
    table = chunking.read_chunks(chunking.stage_dir(cfg), ["chunk_id", "doc_id"])
    chunk_ids, doc_ids = table.column("chunk_id").to_pylist(), table.column("doc_id").to_pylist()
    if labels_path is not None:
        tree.export_labels(labels_path, chunk_ids, doc_ids)

    with staging_dir(out / ".tree-publish") as tmp:
        for src, dst in (("tree.json", "tree.json"), ("tree_arrays.npz", "tree_arrays.npz"),
                         ("config.json", "tree_config.json")):
            shutil.copyfile(sd.file(src), tmp / dst)
        if labels_path is None:
            tree.export_labels(tmp / "labels.csv", chunk_ids, doc_ids)
        (out / "tree_config.json").unlink(missing_ok=True)
        for f in sorted(tmp.iterdir(), key=lambda f: (f.name == "tree_config.json", f.name)):
            os.replace(f, out / f.name)
            if f.name == "tree.json":
                faults.pause("publish")  # tests kill here: the new tree.json beside the old arrays
    return tree, labels_path or out / "labels.csv"
