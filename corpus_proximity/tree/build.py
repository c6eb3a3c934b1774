"""The recursive cluster tree: embeddings → :class:`ClusterTree`, pure (no files, no cache).

At every node UMAP is re-fitted on that node's members only and the projection is
re-clustered: HDBSCAN below the root; at the root, by default, k-means by silhouette with k at
most HDBSCAN's cluster count (``ClusteringConfig.root_clusterer``). A child is split again only
if it is incoherent (mean silhouette below ``silhouette_threshold``), shallower than
``max_depth`` and large enough. ``min_cluster_size`` decays with depth; noise stays on its node,
never forced. :mod:`corpus_proximity.tree.stage` runs it as a cached stage.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from joblib import Parallel, delayed
from rich.progress import Progress

from corpus_proximity.children import watch_children
from corpus_proximity.config import ClusteringConfig, semantic_dict
from corpus_proximity.errors import InputError
from corpus_proximity.tree.clusterers import IdentityReducer, make_clusterer, make_reducer
from corpus_proximity.tree.tree import ROOT, ClusterTree, Node


def min_cluster_size(n: int, depth: int, cfg: ClusteringConfig) -> int:
    """max(floor, n * base_pct * decay**depth), floor = max(min_cluster_floor, floor_base / 2**depth)."""
    floor = max(cfg.min_cluster_floor, cfg.floor_base / 2 ** depth)
    return int(round(max(floor, n * cfg.base_pct * cfg.decay ** depth)))


def node_seed(seed: int, node_id: str) -> int:
    """A per-node seed derived from the config seed and the node's path: stable across reruns."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{node_id}".encode()).digest()[:4], "little")


@dataclass
class Split:
    labels: np.ndarray | None
    """Per member: child index 0..k-1 ordered by size, -1 for noise; None if no split."""
    min_cluster_size: int
    method: str | None
    reason: str | None
    consistency: float | None = None


SERIAL_BELOW = 50_000
"""Nodes with fewer members run numba's kernels (HDBSCAN's Borůvka, UMAP's graph) on one thread."""


@contextmanager
def numba_threads(n_threads: int):
    """numba's thread count for the calling thread, restored on exit. On a small node the parallel
    kernels' synchronisation outweighs the work, and on a busy machine threads that wait for a core
    spin: HDBSCAN of 300 points in 10-d took 0.28 s on 2 threads against 0.005 s on one with other
    work on the cores (the same labels: ``reproducible=True``)."""
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(n_threads, before)))
    try:
        yield
    finally:
        numba.set_num_threads(before)


def split_node(X: np.ndarray, depth: int, cfg: ClusteringConfig, seed: int, is_root: bool) -> Split:
    """Re-project one node's members and cluster them. Pure: depends only on its arguments."""
    import numba

    with numba_threads(1 if len(X) < SERIAL_BELOW else numba.config.NUMBA_NUM_THREADS):
        return _split_node(X, depth, cfg, seed, is_root)


def _split_node(X: np.ndarray, depth: int, cfg: ClusteringConfig, seed: int, is_root: bool) -> Split:
    n = len(X)
    mcs = min_cluster_size(n, depth, cfg)
    if n < 2 * mcs:
        return Split(None, mcs, None, "too_small")
    name = cfg.root_clusterer if is_root else cfg.clusterer
    raw_kmeans = name == "kmeans" and cfg.kmeans_space == "raw"
    reduced = (IdentityReducer() if raw_kmeans else make_reducer(cfg, is_root)).fit_transform(X, seed)
    labels = make_clusterer(name, cfg).fit_predict(reduced, mcs, seed)
    method = name
    if len(set(labels[labels >= 0].tolist())) < 2 and cfg.fallback == "kmeans" and name != "kmeans":
        space = X if cfg.kmeans_space == "raw" else reduced
        labels = make_clusterer("kmeans", cfg).fit_predict(space, mcs, seed)
        method = "kmeans-fallback"
    if len(set(labels[labels >= 0].tolist())) < 2:
        return Split(None, mcs, name, "no_structure")
    consistency = None
    if cfg.split_min_consistency > 0:
        consistency = knn_consistency(X, labels, cfg.split_knn, cfg.silhouette_sample, seed)
        if consistency < cfg.split_min_consistency:  # UMAP tore a blob the embeddings hold together
            return Split(None, mcs, method, "no_structure", consistency)
    return Split(_order_by_size(labels), mcs, method, None, consistency)


def _order_by_size(labels: np.ndarray) -> np.ndarray:
    """Relabel clusters 0..k-1 by size (descending), ties by first member: deterministic ids."""
    ks = [k for k in np.unique(labels) if k >= 0]
    first = {k: int(np.argmax(labels == k)) for k in ks}
    order = sorted(ks, key=lambda k: (-int((labels == k).sum()), first[k]))
    remap = np.full(int(labels.max()) + 2, -1, dtype=np.int64)
    for new, old in enumerate(order):
        remap[old] = new
    return remap[labels]


def coherence_per_cluster(X: np.ndarray, labels: np.ndarray, cap: int, seed: int) -> np.ndarray:
    """Mean cosine silhouette per cluster on a deterministic, stratified sample (noise excluded)."""
    from sklearn.metrics import silhouette_samples

    ks = np.unique(labels[labels >= 0])
    sample = _stratified_sample(labels, cap, np.random.default_rng(seed))
    # float64: float32 sums differ in the last bits between runs under load, which moved
    # coherence (and so gating) between otherwise identical runs.
    s = silhouette_samples(np.asarray(X[sample], dtype=np.float64), labels[sample], metric="cosine")
    return np.array([s[labels[sample] == k].mean() for k in ks])


def _stratified_sample(labels: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of clustered points: each cluster in proportion, at least min(size, 20)."""
    ks = np.unique(labels[labels >= 0])
    total = int((labels >= 0).sum())
    picked = []
    for k in ks:
        idx = np.flatnonzero(labels == k)
        take = min(len(idx), max(min(len(idx), 20), int(round(cap * len(idx) / total))))
        picked.append(np.sort(rng.choice(idx, take, replace=False)))
    return np.concatenate(picked)


def knn_consistency(X: np.ndarray, labels: np.ndarray, k: int, cap: int, seed: int) -> float:
    """How well a split holds in the original space: the share of each member's ``k`` nearest
    (cosine) neighbours that sit in its own cluster, as lift over chance — 0 = as mixed as random
    labels of the same sizes, 1 = as pure as the cluster sizes allow. Noise is left out; above
    ``cap`` points, on a deterministic stratified sample (neighbours within the sample)."""
    idx = _stratified_sample(labels, cap, np.random.default_rng(seed))
    lab = labels[idx]
    n = len(idx)
    k = min(k, n - 1)
    Y = np.asarray(X[idx], dtype=np.float64)
    Y /= np.maximum(np.linalg.norm(Y, axis=1, keepdims=True), 1e-12)
    S = Y @ Y.T
    np.fill_diagonal(S, -np.inf)
    nn = np.argpartition(-S, k - 1, axis=1)[:, :k]
    agree = float((lab[nn] == lab[:, None]).mean())
    sizes = np.bincount(lab)[lab]  # each point's cluster size
    chance = float(((sizes - 1) / (n - 1)).mean())
    best = float((np.minimum(k, sizes - 1) / k).mean())
    return (agree - chance) / (best - chance) if best > chance else 0.0


def _centroid(X: np.ndarray) -> np.ndarray:
    c = np.asarray(X, dtype=np.float64).mean(axis=0)
    norm = np.linalg.norm(c)
    return (c / norm if norm > 0 else c).astype(np.float32)


def _nearest(X: np.ndarray, members: np.ndarray, centroid: np.ndarray, k: int) -> list[int]:
    sims = np.asarray(X[members], dtype=np.float32) @ centroid
    order = np.argsort(-sims, kind="stable")[:k]
    return [int(members[i]) for i in order]


def _validate(embeddings: np.ndarray, cfg: ClusteringConfig) -> None:
    if embeddings.ndim != 2 or len(embeddings) == 0:
        raise InputError(f"embeddings: expected a 2-D (n, dim) array, got shape {embeddings.shape}")
    if not np.isfinite(embeddings).all():
        raise InputError("embeddings: contain NaN/inf; recompute them (delete the embed cache directory)")
    need = 2 * min_cluster_size(len(embeddings), 0, cfg)
    if len(embeddings) < need:
        raise InputError(f"corpus: {len(embeddings)} chunk(s), but splitting the root needs at least {need} "
                         f"(2 × min_cluster_size); add documents or lower clustering.min_cluster_floor/floor_base")
    if cfg.hdbscan_min_samples > len(embeddings):
        raise InputError(f"config field clustering.hdbscan_min_samples: {cfg.hdbscan_min_samples} is more than the "
                         f"corpus' {len(embeddings)} chunks; use a small value (the seed uses 10)")
    if float((embeddings.max(axis=0) - embeddings.min(axis=0)).max()) < 1e-5:
        raise InputError("corpus: all texts embed to the same vector (identical texts?); nothing to cluster")


def recursive_cluster(embeddings: np.ndarray, cfg: ClusteringConfig, progress: Progress | None = None) -> ClusterTree:
    """Build the cluster tree of L2-normalised ``embeddings`` (n × dim), breadth first.

    Deterministic for a given ``cfg.seed``: every node's split depends only on its members and
    a seed derived from its path id, so siblings may run in parallel (``cfg.n_jobs``).
    """
    X = embeddings
    _validate(X, cfg)
    n = len(X)
    root = Node(id=ROOT, parent=None, depth=-1, members=np.arange(n, dtype=np.int64), centroid=_centroid(X))
    root.sample_indices = _nearest(X, root.members, root.centroid, cfg.n_samples_per_node)
    nodes = {ROOT: root}
    task = progress.add_task("clustering", total=1) if progress else None
    frontier = [root]
    if cfg.n_jobs != 1:
        watch_children()  # loky keeps idle workers for minutes: they end with this process
    with Parallel(n_jobs=cfg.n_jobs, prefer="processes") as parallel:
        while frontier:
            args = ((np.asarray(X[nd.members]), nd.depth + 1, cfg, node_seed(cfg.seed, nd.id), nd is root)
                    for nd in frontier)
            level_points = sum(nd.size for nd in frontier)
            if cfg.n_jobs == 1 or len(frontier) == 1 or level_points < cfg.parallel_min_points:
                splits = [split_node(*a) for a in args]
            else:
                splits = parallel(delayed(split_node)(*a) for a in args)
            next_frontier = []
            for nd, sp in zip(frontier, splits):
                nd.min_cluster_size, nd.method, nd.split_consistency = sp.min_cluster_size, sp.method, sp.consistency
                if sp.labels is None:
                    nd.leaf_reason = sp.reason
                    continue
                next_frontier.extend(_add_children(X, nd, sp.labels, cfg, nodes))
            if progress:
                progress.update(task, total=progress.tasks[task].total + len(next_frontier),
                                advance=len(frontier))
            frontier = next_frontier
    if progress:
        progress.update(task, completed=progress.tasks[task].total)
    return ClusterTree(nodes=nodes, n_points=n, dim=int(X.shape[1]), params=semantic_dict(cfg))


def _add_children(X: np.ndarray, parent: Node, labels: np.ndarray, cfg: ClusteringConfig,
                  nodes: dict[str, Node]) -> list[Node]:
    """Create the children of a split node; return those to split further."""
    members = parent.members
    parent.noise = members[labels < 0]
    coh = coherence_per_cluster(X[members], labels, cfg.silhouette_sample, node_seed(cfg.seed, parent.id))
    depth = parent.depth + 1
    to_split = []
    for k in range(int(labels.max()) + 1):
        cid = str(k) if parent.id == ROOT else f"{parent.id}.{k}"
        child = Node(id=cid, parent=parent.id, depth=depth, members=members[labels == k],
                     coherence=float(coh[k]))
        child.centroid = _centroid(X[child.members])
        child.sample_indices = _nearest(X, child.members, child.centroid, cfg.n_samples_per_node)
        parent.children.append(cid)
        nodes[cid] = child
        if depth + 1 >= cfg.max_depth:
            child.leaf_reason = "max_depth"
        elif child.size < 2 * min_cluster_size(child.size, depth + 1, cfg):
            child.leaf_reason = "too_small"
        elif child.coherence >= cfg.silhouette_threshold:
            child.leaf_reason = "coherent"
        else:
            to_split.append(child)
    return to_split
