"""Shared fixtures: planted hierarchies on the unit sphere, and small real configs."""

from __future__ import annotations

import dataclasses
import os
import shutil

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from corpus_proximity.config import ClusteringConfig, CorpusConfig, ExperimentConfig
from corpus_proximity.evals.labelled import planted_hierarchy  # noqa: F401 (the tests import it from here)


def small_clustering(**kw) -> ClusteringConfig:
    """Seed defaults scaled for a few hundred points (fast UMAP)."""
    base = dict(umap_n_components=5, umap_n_neighbors=15, min_cluster_floor=10, floor_base=20,
                base_pct=0.05, max_depth=2, seed=7)
    base.update(kw)
    return ClusteringConfig(**base)


@pytest.fixture
def small_default_cfg(tmp_path) -> ExperimentConfig:
    """A slice of the embedded default corpus, cached under tmp_path (real model, real text)."""
    return ExperimentConfig(
        name="test",
        cache_dir=str(tmp_path / "cache"),
        output_dir=str(tmp_path / "outputs"),
        corpus=CorpusConfig(default_bbc_per_topic=16,
                            default_stdlib_packages=("email", "tkinter", "asyncio"),
                            default_stdlib_per_package=20, default_maths_per_category=0),
        clustering=ClusteringConfig(max_depth=2, umap_n_components=10, min_cluster_floor=8, floor_base=16,
                                    silhouette_threshold=0.5),
    )


@pytest.fixture(scope="session")
def built_default(tmp_path_factory) -> ExperimentConfig:
    """``small_default_cfg`` chunked, embedded and clustered once per session, for tests that only
    read its tree (annotation, rollouts, exploration). Do not modify its cache."""
    import io

    from rich.console import Console

    from corpus_proximity.tree.stage import run_clustering
    cfg = small_default_cfg.__wrapped__(tmp_path_factory.mktemp("built-default"))
    run_clustering(cfg, Console(file=io.StringIO()))
    return cfg


def write_config(path, cfg):
    """A configs/*.py file rebuilding ``cfg`` (frozen dataclass reprs are valid constructors)."""
    path.write_text(f"from corpus_proximity.config import *\n\nconfig = {cfg!r}\n")
    return path


@pytest.fixture
def copied(built_default, tmp_path):
    """The session's small default pipeline with its own copy of its chunks, embeddings and tree (free
    to corrupt); other tests' stages in the shared cache (more trees, names) are left behind."""
    from corpus_proximity.text import chunking, embedding
    from corpus_proximity.tree import stage as tree_stage

    for sd in (chunking.stage_dir(built_default), embedding.stage_dir(built_default), tree_stage.stage_dir(built_default)):
        shutil.copytree(sd.path, tmp_path / "cache" / sd.path.name)
    cfg = dataclasses.replace(built_default, name="copy", cache_dir=str(tmp_path / "cache"),
                              output_dir=str(tmp_path / "outputs"))
    return cfg, write_config(tmp_path / "cfg.py", cfg)
