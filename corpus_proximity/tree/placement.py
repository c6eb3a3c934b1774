"""Placement by the corpus itself: an output's cluster path from its nearest chunks, and "outside".

:func:`vote_placement` decides an output's path depth by depth from its k nearest corpus chunks
(``search_k`` of :mod:`corpus_proximity.tree.index`): each neighbour votes with its cosine
similarity for its own node at that depth, and only the neighbours whose path passes through the
node chosen so far keep voting, so the path is always one that some of the nearest chunks share. A
noise chunk votes for its deepest clustered ancestor: below it, its vote is "stop here", so an
output whose neighbours are mostly noise of a node stays in that node. At the top level "stop" is
not an answer (every output gets a region); where all k neighbours are top-level noise the
nearest top-level centroid decides.

Greedy nearest-centroid descent (:func:`~corpus_proximity.tree.index.assign_to_clusters`, the
``annotation.placement = "centroid"`` option) instead prefers the children whose members are
tightest once a query is far from all of them; the vote cannot, since it never looks at centroids.

:func:`calibrate_outside` measures how close corpus chunks are to the rest of the corpus: for a
seeded sample of chunks, the similarity of the nearest chunk of *another document* (leave one
document out, since an output never has its own document in the corpus). An output whose nearest
chunk is less similar than the corpus's ``outside_percentile`` of that distribution is "outside the
corpus": no region of it is near the output, whatever path the vote gives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from corpus_proximity.tree.index import Assignment, NearestChunkSearch, assign_to_clusters
from corpus_proximity.tree.tree import ROOT, ClusterTree


def chunk_paths(tree: ClusterTree) -> tuple[np.ndarray, np.ndarray]:
    """(ids, P): node ids with "" appended, and P (n_points, n_depths) int32 index into ids of
    every chunk's node at each depth, -1 below its leaf (or below the node it was noise of)."""
    ids = [nid for nid in tree.nodes if nid != ROOT]
    depths = max(tree.n_depths, 1)
    P = np.full((tree.n_points, depths), -1, dtype=np.int32)
    for k, nid in enumerate(ids):
        node = tree.nodes[nid]
        P[node.members, node.depth] = k
    return np.array(ids + [""], dtype=object), P


def vote_placement(embeddings: np.ndarray, nb_idx: np.ndarray, nb_sims: np.ndarray, tree: ClusterTree,
                   block: int = 4096, paths: tuple[np.ndarray, np.ndarray] | None = None) -> Assignment:
    """Paths by the similarity-weighted vote of each row's neighbours (see the module doc).

    ``nb_idx`` / ``nb_sims``: (n, k) corpus rows and cosine similarities of the k nearest chunks,
    nearest first (-1 where missing). Ties go to the nearer neighbour. Distances are to the chosen
    node's centroid, as in the descent, so both placements fill the same columns. ``paths``:
    :func:`chunk_paths` of ``tree``, for a caller placing many batches in one tree."""
    ids, P = paths if paths is not None else chunk_paths(tree)
    n, depths = len(embeddings), P.shape[1]
    if len(ids) == 1:
        return Assignment(np.full((n, depths), -1, dtype=np.int32), ids,
                          np.full((n, depths), np.nan, dtype=np.float32))
    node_index, dist = vote_paths(embeddings, nb_idx, nb_sims, VoteIndex.of(tree, ids, P), block)
    node_index[node_index < 0] = len(ids) - 1  # the "" entry
    return Assignment(node_index, ids, dist)


@dataclass
class VoteIndex:
    """What the vote reads of a tree, as arrays (shippable to worker processes and Ray tasks)."""

    P: np.ndarray
    """(n_points, n_depths) int32 node of every corpus chunk at each depth (:func:`chunk_paths`)."""
    centroids: np.ndarray
    """(n_nodes, dim) float32 centroid of every node of ``ids[:-1]``."""
    top: np.ndarray
    """Indices of the top-level nodes."""

    @classmethod
    def of(cls, tree: ClusterTree, ids: np.ndarray, P: np.ndarray) -> "VoteIndex":
        cents = np.stack([tree.nodes[i].centroid for i in ids[:-1]]).astype(np.float32)
        top = np.array([k for k, i in enumerate(ids[:-1]) if tree.nodes[i].depth == 0], dtype=np.int32)
        return cls(P, cents, top)


def vote_paths(embeddings: np.ndarray, nb_idx: np.ndarray, nb_sims: np.ndarray, vi: VoteIndex,
               block: int = 4096, top_noise: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The vote on arrays: (node_index (n, n_depths) int32 into the tree's ids, -1 below the path's
    end; distances to the chosen centroids). ``top_noise``: neighbours that are top-level noise
    vote for "top-level noise" like any other (corpus chunks assigned to a tree fitted on a sample,
    :mod:`corpus_proximity.tree.scale`); else they do not vote at the top level (outputs)."""
    P, cents, top = vi.P, vi.centroids, vi.top
    n, depths = len(embeddings), P.shape[1]
    node_index = np.full((n, depths), -1, dtype=np.int32)
    dist = np.full((n, depths), np.nan, dtype=np.float32)
    for lo in range(0, n, block):
        X = np.ascontiguousarray(embeddings[lo:lo + block], dtype=np.float32)
        idx = np.asarray(nb_idx[lo:lo + block])
        W = np.where(idx >= 0, np.maximum(np.asarray(nb_sims[lo:lo + block], dtype=np.float32), 0) + 1e-6, 0)
        NB = P[np.maximum(idx, 0)]  # (b, k, depths)
        NB[idx < 0] = -2  # never equal to a node nor to "stop"
        rows = np.arange(len(X))
        alive = idx >= 0
        for d in range(depths):
            cand = NB[:, :, d]
            w = np.where(alive, W, 0)
            if d == 0 and not top_noise:
                w = np.where(cand >= 0, w, 0)
            score = ((cand[:, :, None] == cand[:, None, :]) * w[:, None, :]).sum(axis=2)
            score = np.where(w > 0, score, -1)
            best = np.argmax(score, axis=1)
            chosen = np.where(score[rows, best] > 0, cand[rows, best], -1)
            if d == 0 and not top_noise:  # all neighbours top-level noise: the nearest top-level centroid
                lost = chosen < 0
                if lost.any():
                    chosen[lost] = top[np.argmax(X[lost] @ cents[top].T, axis=1)]
                alive &= (cand == chosen[:, None]) | lost[:, None]
            else:
                alive &= (cand == chosen[:, None]) & (chosen[:, None] >= 0)
            placed = chosen >= 0
            node_index[lo:lo + len(X), d] = chosen
            dist[lo + np.flatnonzero(placed), d] = 1.0 - np.einsum("ij,ij->i", X[placed], cents[chosen[placed]])
            if not placed.any():
                break
    return node_index, dist


class Placed(NamedTuple):
    """Where outputs sit: their tree paths and the similarity of their nearest corpus chunk."""

    assignment: Assignment
    nearest: np.ndarray
    """(n,) corpus row of each output's nearest chunk."""
    nn_sim: np.ndarray
    """(n,) cosine similarity of that chunk."""


def place_outputs(embeddings: np.ndarray, search: NearestChunkSearch, tree: ClusterTree, placement: str, k: int,
                  paths: tuple[np.ndarray, np.ndarray] | None = None) -> Placed:
    """The annotation's placement of a batch of outputs: their ``k`` nearest chunks, then the vote
    (``placement = "knn"``) or the centroid descent ("centroid"). Row-wise, so batches of outputs
    placed apart (the Ray engine) give what one call over all of them gives."""
    nb_idx, nb_sims = search.search_k(embeddings, k)
    a = (vote_placement(embeddings, nb_idx, nb_sims, tree, paths=paths) if placement == "knn"
         else assign_to_clusters(embeddings, tree))
    return Placed(a, nb_idx[:, 0], nb_sims[:, 0])


def calibrate_outside(corpus: np.ndarray, doc_ids, n_sample: int, seed: int, block: int = 8192) -> np.ndarray:
    """Leave-one-document-out nearest-chunk similarity of a seeded sample of corpus chunks (sorted).

    Exact: the sample is compared with every chunk, ``block`` corpus rows at a time (a memory-mapped
    corpus is read once; 5,000 samples x 8,192 rows = 160 MB of similarities at a time). A chunk
    whose document holds the whole corpus gets -1."""
    n = len(corpus)
    _, codes = np.unique(np.asarray(doc_ids, dtype=object).astype(str), return_inverse=True)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, min(n_sample, n), replace=False))
    Q = np.ascontiguousarray(corpus[sample], dtype=np.float32)
    best = np.full(len(sample), -1.0, dtype=np.float32)
    for lo in range(0, n, block):
        C = np.asarray(corpus[lo:lo + block], dtype=np.float32)
        sims = Q @ C.T
        sims[codes[sample][:, None] == codes[lo:lo + len(C)][None, :]] = -1.0
        best = np.maximum(best, sims.max(axis=1))
    return np.sort(best)


def nn_percentile(nn_sim: np.ndarray, calibration: np.ndarray) -> np.ndarray:
    """Percent of the corpus's own nearest-chunk similarities at or below each ``nn_sim`` (0-100;
    NaN against an empty calibration)."""
    cal = np.sort(np.asarray(calibration, dtype=np.float32))
    if len(cal) == 0:
        return np.full(len(nn_sim), np.nan, dtype=np.float32)
    return (100.0 * np.searchsorted(cal, nn_sim, side="right") / len(cal)).astype(np.float32)


def outside_flags(nn_sim: np.ndarray, calibration: np.ndarray, percentile: float) -> tuple[np.ndarray, np.ndarray]:
    """(percentile of each nn_sim in the corpus's own distribution, 0-100; outside flag)."""
    return nn_percentile(nn_sim, calibration), np.asarray(nn_sim) < np.percentile(calibration, percentile)
