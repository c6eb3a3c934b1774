"""The 2-D map stage: every chunk's coordinates for the report and the dashboard, cached as
``<cache_dir>/map2d-<key>/coords.npy`` (+ ``fitted.npy``, the rows the UMAP was fitted on).

Keyed on the embeddings and ``visualization``'s map fields: UMAP (cosine, 2-D) fitted on at most
``visualization.map_max_points`` chunks (a deterministic sample above it), the rest transformed.
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from corpus_proximity import cli
from corpus_proximity.cache import StageDir, atomic_save_npy, stage_key, writable
from corpus_proximity.config import ExperimentConfig
from corpus_proximity.text import embedding

STAGE = "map2d"
STAGE_VERSION = 1
MAP_FIELDS = ("map_max_points", "umap_n_neighbors", "umap_min_dist", "seed")


def stage_dir(cfg: ExperimentConfig, embed: StageDir | None = None) -> StageDir:
    embed = embed or embedding.stage_dir(cfg)
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
    embed = embedding.stage_dir(cfg)
    sd = stage_dir(cfg, embed)
    if sd.complete:
        log.print(f"[green]map2d: cache hit[/green] {sd.path}")
        return sd
    emb = embedding.load_embeddings(embed)
    v = cfg.visualization
    note = f" (fitted on a sample of {v.map_max_points})" if len(emb) > v.map_max_points else ""
    log.print(f"map2d: UMAP of {len(emb)} × {emb.shape[1]} to 2-D{note} → {sd.path}")
    t0 = time.perf_counter()
    coords, fitted = fit_map(emb, v.map_max_points, v.umap_n_neighbors, v.umap_min_dist, v.seed)
    if not sd.begin():  # a concurrent run of this config finished it meanwhile
        return sd
    atomic_save_npy(sd.file("coords.npy"), coords)
    atomic_save_npy(sd.file("fitted.npy"), fitted.astype(np.int64))
    sd.finish({"visualization": {k: getattr(v, k) for k in MAP_FIELDS}}, {"embed": embed.key},
              {"n": len(emb), "n_fitted": len(fitted), "seconds": round(time.perf_counter() - t0, 2)})
    return sd


def load_map(cfg: ExperimentConfig, log=cli.console) -> tuple[np.ndarray, np.ndarray, bool]:
    """(coordinates of every chunk, the rows drawn, whether they were computed in memory): the cached
    map, computed and cached on first use; on a read-only cache without one it is computed in memory
    and stderr says so (a stage that only reads never fails for want of a place to write)."""
    sd = stage_dir(cfg)
    if sd.complete or writable(sd.path):
        sd = run_map(cfg, log)
        return np.load(sd.file("coords.npy")), np.load(sd.file("fitted.npy")), False
    emb = embedding.load_embeddings(embedding.stage_dir(cfg))
    cli.console.print(f"[yellow]map2d: {sd.path.parent} is not writable; the 2-D map computed in memory, "
                      f"not cached[/yellow]")
    v = cfg.visualization
    coords, fitted = fit_map(emb, v.map_max_points, v.umap_n_neighbors, v.umap_min_dist, v.seed)
    return coords, fitted.astype(np.int64), True
