"""The swappable parts of a node split: a reducer (UMAP or identity) and a clusterer
(HDBSCAN, k-means with k chosen by silhouette, hybrid: that k-means with k at most
HDBSCAN's cluster count, or layers: the most persistent of EVoC's cluster layers), each behind
one small protocol and chosen by name in
:class:`config.ClusteringConfig`."""

from __future__ import annotations

import warnings
from typing import Protocol

import numpy as np

from corpus_proximity.config import ClusteringConfig


class Reducer(Protocol):
    def fit_transform(self, X: np.ndarray, seed: int) -> np.ndarray: ...


class Clusterer(Protocol):
    name: str

    def fit_predict(self, X: np.ndarray, min_cluster_size: int, seed: int) -> np.ndarray:
        """Labels 0..k-1, and -1 for noise."""
        ...


class IdentityReducer:
    def fit_transform(self, X: np.ndarray, seed: int) -> np.ndarray:
        return np.asarray(X, dtype=np.float32)


SMALL_DATA = 4096
"""umap-learn's cut-over from exact all-pairs neighbours to NN-descent."""


def cosine_distances(X: np.ndarray) -> np.ndarray:
    """Exact all-pairs cosine distances (float64, zero diagonal, in [0, 2]); zero vectors are at 1."""
    Y = np.asarray(X, dtype=np.float64)
    norms = np.linalg.norm(Y, axis=1, keepdims=True)
    Y = np.divide(Y, norms, out=np.zeros_like(Y), where=norms > 0)
    D = 1.0 - Y @ Y.T
    np.clip(D, 0.0, 2.0, out=D)
    np.fill_diagonal(D, 0.0)
    return D


class UMAPReducer:
    """UMAP re-fitted on one node's members (local re-projection), clamped for small nodes.

    Above ``fit_sample`` members it is fitted on a deterministic sample and the rest are
    transformed, which bounds its cost on large nodes."""

    def __init__(self, n_components: int, n_neighbors: int, min_dist: float, fit_sample: int | None,
                 n_epochs: int | None = None):
        self.n_epochs = n_epochs
        self.n_components = n_components
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist
        self.fit_sample = fit_sample

    def fit_transform(self, X: np.ndarray, seed: int) -> np.ndarray:
        import umap

        n, d = X.shape
        n_components = max(2, min(self.n_components, d, n - 2))
        n_neighbors = max(2, min(self.n_neighbors, n - 1))
        fit_n = n if self.fit_sample is None else min(n, self.fit_sample)
        # Below SMALL_DATA points UMAP finds exact neighbours with sklearn's pairwise_distances
        # over its numba cosine *as a Python callable*: one interpreted call per pair (~10 s at
        # 4,000 points, most of a tree's time, as nodes below the root are mostly this small).
        # The same exact cosine distances from one BLAS product, handed over as "precomputed".
        small = fit_n == n and n < SMALL_DATA  # "precomputed" cannot transform the rest of a sample
        model = umap.UMAP(n_components=n_components, n_neighbors=n_neighbors, min_dist=self.min_dist,
                          metric="precomputed" if small else "cosine", random_state=seed, n_jobs=1,
                          low_memory=True, init="spectral" if n > 4 * n_neighbors else "random",
                          n_epochs=self.n_epochs)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning)
            warnings.filterwarnings("ignore", category=RuntimeWarning)
            if small:
                return model.fit_transform(cosine_distances(X)).astype(np.float32)
            if fit_n == n:
                return model.fit_transform(X).astype(np.float32)
            rng = np.random.default_rng(seed)
            fit_idx = np.sort(rng.choice(n, self.fit_sample, replace=False))
            out = np.empty((n, n_components), dtype=np.float32)
            out[fit_idx] = model.fit_transform(X[fit_idx])
            rest = np.setdiff1d(np.arange(n), fit_idx)
            out[rest] = model.transform(X[rest])
            return out


class HDBSCANClusterer:
    """HDBSCAN (excess-of-mass selection) from ``fast_hdbscan`` (parallel Borůvka, numba; ~8×
    faster than ``hdbscan`` on 100k × 50-d here, see bench/) or the reference ``hdbscan``."""

    name = "hdbscan"

    def __init__(self, min_samples: int, backend: str = "fast_hdbscan"):
        self.min_samples = min_samples
        self.backend = backend

    def fit_predict(self, X: np.ndarray, min_cluster_size: int, seed: int) -> np.ndarray:
        if len(X) < min_cluster_size * 2:
            return np.full(len(X), -1, dtype=np.int64)
        min_samples = min(self.min_samples, min_cluster_size)
        X = np.ascontiguousarray(X, dtype=np.float64)
        if self.backend == "fast_hdbscan":
            import fast_hdbscan

            model = fast_hdbscan.HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min_samples,
                                         reproducible=True)
        else:
            import hdbscan

            model = hdbscan.HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min_samples,
                                    core_dist_n_jobs=1)
        return np.asarray(model.fit_predict(X), dtype=np.int64)


class KMeansSilhouetteClusterer:
    """k-means with k in 2..kmax chosen by the silhouette of a deterministic sample.

    k is also capped at n // min_cluster_size, so no cluster is expected below the size the
    node's depth asks for. No point is noise."""

    name = "kmeans"

    def __init__(self, kmax: int, sample: int = 2000):
        self.kmax = kmax
        self.sample = sample

    def fit_predict(self, X: np.ndarray, min_cluster_size: int, seed: int) -> np.ndarray:
        from sklearn.cluster import KMeans
        from sklearn.metrics import silhouette_score

        n = len(X)
        kmax = min(self.kmax, n // max(min_cluster_size, 1))
        if kmax < 2:
            return np.full(n, -1, dtype=np.int64)
        rng = np.random.default_rng(seed)
        sample = np.sort(rng.choice(n, min(n, self.sample), replace=False))
        best_score, best = -np.inf, None
        for k in range(2, kmax + 1):
            labels = KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(X)
            if len(np.unique(labels[sample])) < 2:
                continue
            score = silhouette_score(X[sample], labels[sample])
            if score > best_score:
                best_score, best = score, labels
        if best is None:
            return np.full(n, -1, dtype=np.int64)
        return best.astype(np.int64)


class HybridClusterer:
    """k-means by silhouette with k at most the number of clusters HDBSCAN finds on the same points.

    HDBSCAN's count bounds how many dense regions the projection holds; a coarse level has at
    most that many groups, and k-means by silhouette picks the best-separated grouping within
    the bound, with no noise. Unbounded, silhouette in a UMAP projection keeps rising with k
    when the projection shows fine-level blobs (k-means then cuts the blobs, not the regions);
    HDBSCAN alone over-splits real corpora into density pockets. Where HDBSCAN finds fewer than
    two clusters its labels are returned: no structure, and ``fallback`` decides as for HDBSCAN."""

    name = "hybrid"

    def __init__(self, min_samples: int, backend: str, kmax: int, noise: str = "assign", extent: float = 0.95):
        self.min_samples = min_samples
        self.backend = backend
        self.kmax = kmax
        self.noise = noise
        self.extent = extent

    def fit_predict(self, X: np.ndarray, min_cluster_size: int, seed: int) -> np.ndarray:
        density = HDBSCANClusterer(self.min_samples, self.backend).fit_predict(X, min_cluster_size, seed)
        k_density = len(np.unique(density[density >= 0]))
        if k_density < 2:
            return density
        kmeans = KMeansSilhouetteClusterer(min(self.kmax, k_density))
        if self.noise == "assign":
            return kmeans.fit_predict(X, min_cluster_size, seed)
        # "outliers": regions are fitted on the points HDBSCAN clustered; a point it left as noise
        # joins the nearest region only inside that region's extent (the ``extent`` quantile of its
        # members' distances to the centre), otherwise it stays noise: nothing is forced.
        dense = np.flatnonzero(density >= 0)
        labels = np.full(len(X), -1, dtype=np.int64)
        labels[dense] = kmeans.fit_predict(X[dense], min_cluster_size, seed)
        return attach_inside(X, labels, self.extent)


class LayersClusterer:
    """The breadth the data has: EVoC's cluster layers over the projection, the most persistent
    one with a child count in [min_children, max_children].

    ``evoc.clustering.build_cluster_layers`` condenses one HDBSCAN density tree (its base
    min_cluster_size small, ``base_size``) and sweeps the min_cluster_size: where clusters
    persist over a long range of sizes the total persistence peaks, and each peak is one
    layer (a flat clustering at one granularity). The layer whose peak is highest is the
    granularity the density supports best; the knobs only bound it. No cap on k from the
    root's min_cluster_size, which caps a 5%-of-n HDBSCAN at a few regions. Noise joins the
    nearest cluster in the projection (``noise="assign"``) or stays noise (``"keep"``)."""

    name = "layers"

    def __init__(self, min_samples: int, min_children: int, max_children: int, base_size: int,
                 noise: str = "assign"):
        self.min_samples = min_samples
        self.min_children = min_children
        self.max_children = max_children
        self.base_size = base_size
        self.noise = noise

    def fit_predict(self, X: np.ndarray, min_cluster_size: int, seed: int) -> np.ndarray:
        from evoc.clustering import build_cluster_layers

        n = len(X)
        base = max(2, min(self.base_size, n // max(2 * self.min_children, 2)))
        if n < 2 * base:
            return np.full(n, -1, dtype=np.int64)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=RuntimeWarning)
            layers, _, persistence = build_cluster_layers(
                np.ascontiguousarray(X, dtype=np.float32), min_samples=self.min_samples,
                base_min_cluster_size=base, reproducible_flag=True)
        labels = pick_layer([np.asarray(layer, dtype=np.int64) for layer in layers], list(persistence),
                            self.min_children, self.max_children)
        if self.noise == "assign":
            labels = attach_inside(X, labels, extent=np.inf)
        return labels


def pick_layer(layers: list[np.ndarray], persistence: list[float], min_children: int,
               max_children: int) -> np.ndarray:
    """The most persistent layer with a cluster count in [min_children, max_children]; where none
    is in range, the one nearest to it (ties: the more persistent, then the coarser)."""
    ks = [len(np.unique(layer[layer >= 0])) for layer in layers]

    def key(i):
        off = max(min_children - ks[i], 0, ks[i] - max_children)
        return (off, -persistence[i], ks[i])
    return layers[min(range(len(layers)), key=key)]


def attach_inside(X: np.ndarray, labels: np.ndarray, extent: float) -> np.ndarray:
    """Give each noise point (-1) the nearest cluster's label when it lies within that cluster's
    extent: the ``extent`` quantile of its members' Euclidean distances to their mean (``inf``:
    every noise point joins its nearest cluster). Others stay -1."""
    labels = labels.copy()
    ks = np.unique(labels[labels >= 0])
    noise = np.flatnonzero(labels < 0)
    if len(ks) == 0 or len(noise) == 0:
        return labels
    centres = np.stack([X[labels == k].mean(axis=0) for k in ks])
    radius = np.full(len(ks), np.inf) if np.isinf(extent) else np.array(
        [np.quantile(np.linalg.norm(X[labels == k] - c, axis=1), extent) for k, c in zip(ks, centres)])
    d = np.linalg.norm(X[noise, None, :] - centres[None], axis=2)
    near = d.argmin(axis=1)
    inside = d[np.arange(len(noise)), near] <= radius[near]
    labels[noise[inside]] = ks[near[inside]]
    return labels


def make_reducer(cfg: ClusteringConfig, is_root: bool = True) -> Reducer:
    """The node's reducer; below the root with ``umap_child_epochs`` epochs when that is set."""
    epochs = cfg.umap_n_epochs if is_root or cfg.umap_child_epochs is None else cfg.umap_child_epochs
    return UMAPReducer(cfg.umap_n_components, cfg.umap_n_neighbors, cfg.umap_min_dist, cfg.umap_fit_sample,
                       epochs)


def make_clusterer(name: str, cfg: ClusteringConfig) -> Clusterer:
    if name == "hdbscan":
        return HDBSCANClusterer(cfg.hdbscan_min_samples, cfg.hdbscan_backend)
    if name == "kmeans":
        return KMeansSilhouetteClusterer(cfg.kmeans_kmax)
    if name == "hybrid":
        return HybridClusterer(cfg.hdbscan_min_samples, cfg.hdbscan_backend, cfg.kmeans_kmax, cfg.hybrid_noise)
    if name == "layers":
        return LayersClusterer(cfg.hdbscan_min_samples, cfg.min_children, cfg.max_children, cfg.layers_base_size,
                               cfg.layers_noise)
    raise ValueError(f"unknown clusterer {name!r}")
