"""The tree at scale: fit on a capped sample, then assign every other chunk its path.

:func:`build_tree` is what the tree stage calls. With ``clustering.fit_sample`` off (the default),
or a corpus no larger than it, it is :func:`~corpus_proximity.tree.build.recursive_cluster`.
Otherwise:

1. **Sample** (:func:`fit_sample_indices`): ``fit_sample`` chunks, seeded, stratified by the
   groups given (the stage passes source, then document): the chunks are ordered by group, randomly
   within a group, and taken at evenly spaced positions from a random offset, so every group gets
   its proportional share (rounded down or up) and nothing else is favoured.
2. **Fit**: ``recursive_cluster`` on the sample, unchanged.
3. **Assign**: every other chunk takes its path by the nearest-chunk vote of placement
   (:func:`~corpus_proximity.tree.placement.vote_paths`) over its ``assign_k`` nearest fitted
   chunks: exact search up to ``assign_exact_max`` fitted chunks, a faiss IVF index above.
   Fitted noise votes like a node ("stop here"), at the top level too, so a chunk whose
   neighbours are noise of a node is noise of that node, as they are; fitted chunks keep their
   paths, noise included. A chunk whose nearest fitted chunk is less similar than the
   ``assign_outside_percentile`` of the sample's own leave-one-out nearest-neighbour similarities
   (:func:`~corpus_proximity.tree.placement.calibrate_outside` on the sample) keeps only its
   top-level node and is that node's noise: nothing fitted is near it, so no sub-cluster claims it.
   Shards of ``assign_shard_size`` chunks run on joblib threads (``n_jobs``) or as Ray tasks
   (``engine="ray"``; the index is put in the object store once); a chunk's path depends only
   on the chunk and the index, so both engines give the same paths.
4. **Assemble**: a normal :class:`~corpus_proximity.tree.tree.ClusterTree` over all chunks: the
   fitted nodes' ids, splits and statistics (coherence, ``min_cluster_size``, leaf reasons:
   measured on the sample), members and noise over the whole corpus, centroids and nearest
   samples recomputed on all members. Child ids keep the fitted size order.
"""

from __future__ import annotations

import time

import numpy as np
from joblib import Parallel, delayed
from rich.progress import Progress

from corpus_proximity.config import ClusteringConfig
from corpus_proximity.errors import InputError
from corpus_proximity.tree.build import recursive_cluster
from corpus_proximity.tree.index import ExactSearch, IVFSearch, NearestChunkSearch
from corpus_proximity.tree.placement import VoteIndex, calibrate_outside, chunk_paths, vote_paths
from corpus_proximity.tree.tree import ROOT, ClusterTree, Node

IVF_NPROBE = 16
"""Cells an IVF query scans (the annotation's default too)."""
CALIBRATION_SAMPLE = 5000
"""Fitted chunks whose leave-one-out nearest-neighbour similarity calibrates "far"."""


def fitting_on_sample(n: int, cfg: ClusteringConfig) -> bool:
    return bool(cfg.fit_sample) and n > cfg.fit_sample


def build_tree(embeddings: np.ndarray, cfg: ClusteringConfig, progress: Progress | None = None,
               groups: list[np.ndarray] | None = None, timings: dict | None = None) -> ClusterTree:
    """The tree of ``embeddings``: a full fit, or fit on a sample + assign (see the module doc).

    ``groups``: per-chunk labels to stratify the sample by, outermost first (e.g. [source, doc_id]);
    None = a uniform sample. ``timings``, if given, receives the seconds of each step."""
    if not fitting_on_sample(len(embeddings), cfg):
        return recursive_cluster(embeddings, cfg, progress)
    return fit_and_assign(embeddings, cfg, groups, progress, timings)


def fit_sample_indices(n: int, size: int, seed: int, groups: list[np.ndarray] | None = None) -> np.ndarray:
    """Sorted indices of a seeded sample of ``size`` of ``n`` rows, stratified by ``groups``
    (outermost first): systematic sampling over the rows ordered by group, randomly within one."""
    if size >= n:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    keys = [rng.random(n)]
    for g in reversed(groups or []):
        g = np.asarray(g)
        if len(g) != n:
            raise InputError(f"fit_sample groups: {len(g)} labels for {n} chunks; pass one label per chunk")
        keys.append(np.unique(g, return_inverse=True)[1])
    order = np.lexsort(keys)  # the last key sorts first
    positions = ((np.arange(size) + rng.random()) * (n / size)).astype(np.int64)
    return np.sort(order[np.minimum(positions, n - 1)])


def fit_and_assign(X: np.ndarray, cfg: ClusteringConfig, groups: list[np.ndarray] | None = None,
                   progress: Progress | None = None, timings: dict | None = None) -> ClusterTree:
    """Fit the tree on ``cfg.fit_sample`` chunks of ``X`` and assign the others (see the module doc)."""
    timings = {} if timings is None else timings
    clock = [time.perf_counter()]

    def lap(step: str) -> None:
        now = time.perf_counter()
        timings[step] = round(now - clock[0], 3)
        clock[0] = now

    n = len(X)
    for lo in range(0, n, 65536):  # the sample is checked by recursive_cluster, the rest here
        if not np.isfinite(X[lo:lo + 65536]).all():
            raise InputError("embeddings: contain NaN/inf; recompute them (delete the embed cache directory)")
    sample = fit_sample_indices(n, cfg.fit_sample, cfg.seed, groups)
    S = np.ascontiguousarray(X[sample], dtype=np.float32)
    lap("sample")
    fitted = recursive_cluster(S, cfg, progress)
    lap("fit")
    ids, P = chunk_paths(fitted)
    rest = np.setdiff1d(np.arange(n, dtype=np.int64), sample, assume_unique=True)
    node_index = np.full((n, P.shape[1]), -1, dtype=np.int32)
    node_index[sample] = P
    if len(ids) > 1 and len(rest):
        task = AssignTask(build_search(S, cfg), VoteIndex.of(fitted, ids, P), cfg.assign_k,
                          far_threshold(S, cfg))
        lap("index")
        node_index[rest] = assign(X, rest, task, cfg, progress)
        lap("assign")
    tree = assemble(X, fitted, ids, node_index, cfg.n_samples_per_node)
    lap("assemble")
    return tree


def build_search(S: np.ndarray, cfg: ClusteringConfig) -> NearestChunkSearch:
    if len(S) <= cfg.assign_exact_max:
        return ExactSearch(S)
    return IVFSearch.build(S, 0, IVF_NPROBE, cfg.seed)


def far_threshold(S: np.ndarray, cfg: ClusteringConfig) -> float:
    """Nearest-fitted-chunk similarity below which an assigned chunk is "far" (-inf: off)."""
    if cfg.assign_outside_percentile <= 0:
        return -np.inf
    cal = calibrate_outside(S, np.arange(len(S)), CALIBRATION_SAMPLE, cfg.seed)
    return float(np.percentile(cal, cfg.assign_outside_percentile))


class AssignTask:
    """Everything a shard's assignment reads: the search over the fitted chunks, their paths and
    the tree's centroids, k and the far threshold. Pickles (Ray's object store, processes)."""

    def __init__(self, search: NearestChunkSearch, vote: VoteIndex, k: int, far: float):
        self.search, self.vote, self.k, self.far = search, vote, k, far

    def __call__(self, Xs: np.ndarray) -> np.ndarray:
        Xs = np.ascontiguousarray(Xs, dtype=np.float32)
        nb_idx, nb_sims = self.search.search_k(Xs, self.k)
        node_index, _ = vote_paths(Xs, nb_idx, nb_sims, self.vote, top_noise=True)
        node_index[nb_sims[:, 0] < self.far, 1:] = -1  # far: its top-level node's noise
        return node_index


def _shards(rest: np.ndarray, size: int) -> list[np.ndarray]:
    return [rest[lo:lo + size] for lo in range(0, len(rest), size)]


def assign(X: np.ndarray, rest: np.ndarray, task: AssignTask, cfg: ClusteringConfig,
           progress: Progress | None = None) -> np.ndarray:
    """(len(rest), n_depths) node indices of the rows ``rest`` of ``X``, shard by shard."""
    shards = _shards(rest, cfg.assign_shard_size)
    bar = progress.add_task("assigning", total=len(shards)) if progress else None
    if cfg.engine == "ray":
        parts = _assign_ray(X, shards, task, cfg.ray_address, progress, bar)
    elif cfg.n_jobs == 1 or len(shards) == 1:
        parts = []
        for rows in shards:
            parts.append(task(X[rows]))
            if progress:
                progress.advance(bar)
    else:  # threads: the search and the vote are BLAS / faiss work that releases the GIL
        parts = Parallel(n_jobs=cfg.n_jobs, prefer="threads")(delayed(task)(X[rows]) for rows in shards)
        if progress:
            progress.update(bar, completed=len(shards))
    return np.concatenate(parts) if parts else np.empty((0, task.vote.P.shape[1]), dtype=np.int32)


def _run_task(task: AssignTask, Xs: np.ndarray) -> np.ndarray:
    return task(Xs)


def _assign_ray(X: np.ndarray, shards: list[np.ndarray], task: AssignTask, address: str | None,
                progress: Progress | None, bar) -> list[np.ndarray]:
    from corpus_proximity.distributed import init_ray

    init_ray(address, field="clustering.ray_address")
    import ray

    remote = ray.remote(num_cpus=1)(_run_task)
    task_ref = ray.put(task)  # the index, once
    window = max(2, 2 * int(ray.available_resources().get("CPU", 1)))  # shards in flight (memory)
    out: dict[int, np.ndarray] = {}
    pending: dict = {}
    for k, rows in enumerate(shards):
        pending[remote.remote(task_ref, np.ascontiguousarray(X[rows], dtype=np.float32))] = k
        while len(pending) >= window or (k == len(shards) - 1 and pending):
            done, _ = ray.wait(list(pending), num_returns=1)
            out[pending.pop(done[0])] = ray.get(done[0])
            if progress:
                progress.advance(bar)
    return [out[k] for k in range(len(shards))]


def assemble(X: np.ndarray, fitted: ClusterTree, ids: np.ndarray, node_index: np.ndarray,
             n_samples: int, block: int = 65536) -> ClusterTree:
    """The whole-corpus tree from the fitted one and every chunk's path (``node_index`` into ``ids``)."""
    n, depths = node_index.shape
    names = list(ids[:-1])
    members = _group(node_index, len(names))
    root_src = fitted.root
    root = Node(id=ROOT, parent=None, depth=-1, members=np.arange(n, dtype=np.int64),
                noise=np.flatnonzero(node_index[:, 0] < 0) if root_src.children else np.empty(0, np.int64),
                children=list(root_src.children), min_cluster_size=root_src.min_cluster_size,
                method=root_src.method, leaf_reason=root_src.leaf_reason,
                split_consistency=root_src.split_consistency)
    nodes = {ROOT: root}
    for k, nid in enumerate(names):
        src = fitted.nodes[nid]
        m = members[k]
        noise = m[node_index[m, src.depth + 1] < 0] if src.children and src.depth + 1 < depths else np.empty(0, np.int64)
        nodes[nid] = Node(id=nid, parent=src.parent, depth=src.depth, members=m, noise=noise,
                          children=list(src.children), coherence=src.coherence,
                          min_cluster_size=src.min_cluster_size, method=src.method,
                          leaf_reason=src.leaf_reason, split_consistency=src.split_consistency)
    cents, nearest = _centroids_and_nearest(X, node_index, len(names), n_samples, block)
    for k, nid in enumerate(names):
        nodes[nid].centroid, nodes[nid].sample_indices = cents[k], nearest[k]
    root.centroid, root.sample_indices = cents[-1], nearest[-1]
    ordered = {nid: nodes[nid] for nid in fitted.nodes}  # the fitted tree's order (breadth first)
    return ClusterTree(nodes=ordered, n_points=n, dim=int(X.shape[1]), params=fitted.params)


def _group(node_index: np.ndarray, n_nodes: int) -> list[np.ndarray]:
    """Sorted member rows of every node (index into ids)."""
    out: list[np.ndarray] = [np.empty(0, np.int64)] * n_nodes
    for d in range(node_index.shape[1]):
        col = node_index[:, d]
        order = np.argsort(col, kind="stable")
        bounds = np.searchsorted(col[order], np.arange(n_nodes + 1))
        for k in range(n_nodes):
            if bounds[k + 1] > bounds[k]:
                out[k] = order[bounds[k]:bounds[k + 1]].astype(np.int64)
    return out


def _centroids_and_nearest(X: np.ndarray, node_index: np.ndarray, n_nodes: int, n_samples: int,
                           block: int) -> tuple[np.ndarray, list[list[int]]]:
    """Unit mean of every node's members (float64 sums, block by block; the root last) and the
    ``n_samples`` members nearest it, nearest first, ties to the lower row."""
    n, depths = node_index.shape
    dim = X.shape[1]
    cols = np.concatenate([node_index, np.full((n, 1), n_nodes, dtype=np.int32)], axis=1)  # root = n_nodes
    sums = np.zeros((n_nodes + 1, dim), dtype=np.float64)
    for lo in range(0, n, block):
        Xb = np.asarray(X[lo:lo + block], dtype=np.float64)
        for d in range(depths + 1):
            c = cols[lo:lo + block, d]
            ok = c >= 0
            _add_grouped(sums, c[ok], Xb[ok])
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    cents = np.where(norms > 0, sums / np.maximum(norms, 1e-300), sums).astype(np.float32)
    nearest: list[list[int]] = [[] for _ in range(n_nodes + 1)]
    if n_samples == 0:
        return cents, nearest
    for d in range(depths + 1):
        c = cols[:, d]
        sims = np.empty(n, dtype=np.float32)
        for lo in range(0, n, block):
            cb = np.maximum(c[lo:lo + block], 0)
            sims[lo:lo + block] = np.einsum("ij,ij->i", np.asarray(X[lo:lo + block], dtype=np.float32), cents[cb])
        rows = np.flatnonzero(c >= 0)
        order = rows[np.lexsort((rows, -sims[rows], c[rows]))]
        grouped = c[order]
        starts = np.flatnonzero(np.r_[True, grouped[1:] != grouped[:-1]]) if len(order) else []
        for s in starts:
            node = int(grouped[s])
            take = order[s:s + n_samples]
            nearest[node] = [int(i) for i in take[grouped[s:s + n_samples] == node]]
    return cents, nearest


def _add_grouped(sums: np.ndarray, codes: np.ndarray, rows: np.ndarray) -> None:
    """sums[codes] += rows, grouped (a sparse one-hot product: far faster than np.add.at)."""
    from scipy.sparse import csr_matrix

    k = sums.shape[0]
    onehot = csr_matrix((np.ones(len(codes)), (codes, np.arange(len(codes)))), shape=(k, len(codes)))
    sums += onehot @ rows
