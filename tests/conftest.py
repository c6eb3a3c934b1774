"""Shared fixtures: planted hierarchies on the unit sphere, and small real configs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from config import ClusteringConfig, CorpusConfig, ExperimentConfig  # noqa: E402


def planted_hierarchy(n_coarse=4, n_fine=3, per_fine=50, dim=24, coarse_sep=1.0, fine_sep=0.35,
                      spread=0.05, seed=0):
    """Unit-sphere blobs: ``n_coarse`` regions, each holding ``n_fine`` tighter sub-blobs.

    Returns (X float32 n×dim, coarse labels, fine labels)."""
    rng = np.random.default_rng(seed)
    coarse_c = rng.normal(size=(n_coarse, dim))
    coarse_c /= np.linalg.norm(coarse_c, axis=1, keepdims=True)
    xs, yc, yf = [], [], []
    for c in range(n_coarse):
        for f in range(n_fine):
            off = rng.normal(size=dim)
            centre = coarse_sep * coarse_c[c] + fine_sep * off / np.linalg.norm(off)
            xs.append(centre + spread * rng.normal(size=(per_fine, dim)))
            yc += [c] * per_fine
            yf += [c * n_fine + f] * per_fine
    X = np.concatenate(xs)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X.astype(np.float32), np.array(yc), np.array(yf)


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
                            default_stdlib_per_package=20),
        clustering=ClusteringConfig(max_depth=2, umap_n_components=10, min_cluster_floor=8, floor_base=16,
                                    silhouette_threshold=0.5),
    )


@pytest.fixture(scope="session")
def built_default(tmp_path_factory) -> ExperimentConfig:
    """``small_default_cfg`` chunked, embedded and clustered once per session, for tests that only
    read its tree (annotation, rollouts, exploration). Do not modify its cache."""
    import io

    from rich.console import Console

    import cluster_corpus

    cfg = small_default_cfg.__wrapped__(tmp_path_factory.mktemp("built-default"))
    cluster_corpus.run_clustering(cfg, Console(file=io.StringIO()))
    return cfg
