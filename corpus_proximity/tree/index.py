"""Where does a vector sit in the corpus? Its cluster path in the tree, and its nearest chunk.

:func:`assign_to_clusters` descends the tree: at each depth every item takes the nearest child
centroid (cosine) of the node it reached, computed as one matrix product per tree node over the
items grouped at that node (a sort per depth, never a Python loop per item). Items always reach
a leaf: noise is a property of corpus points, not of a nearest-centroid query.

Corpus proximity — the cosine distance to the nearest corpus chunk — is exact (blocked matrix
products) for moderate corpora and uses an inverted-file index (faiss IVF-Flat, inner product on
the unit sphere) beyond a configurable size; ``bench/bench_annotate.py`` reports its recall against exact search.
Both also return the k nearest chunks (``search_k``), which the nearest-chunk vote of
:mod:`corpus_proximity.tree.placement` places outputs by.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from corpus_proximity.tree.tree import ROOT, ClusterTree


@dataclass
class Assignment:
    node_index: np.ndarray
    """(n, n_depths) int32 index into ``ids``; -1 below the item's leaf."""
    ids: np.ndarray
    """Node ids (object array) with "" appended, so ``ids[-1]`` is the empty path entry."""
    distances: np.ndarray
    """(n, n_depths) float32 cosine distance to the chosen centroid; NaN below the leaf."""

    @property
    def paths(self) -> np.ndarray:
        """(n, n_depths) node ids; "" below the item's leaf."""
        return self.ids[self.node_index]


def assign_to_clusters(embeddings: np.ndarray, tree: ClusterTree, block: int = 65_536) -> Assignment:
    """Nearest child centroid at each depth, descending from the root (see the module doc).

    Items are taken ``block`` at a time (bounded memory, cache-friendly gathers; a memory-mapped
    input is read block by block); within a block, one matrix product per reached tree node."""
    n, depths = len(embeddings), max(tree.n_depths, 1)
    ids = list(tree.nodes)
    pos = {nid: k for k, nid in enumerate(ids)}
    children = [np.array([pos[c] for c in tree.nodes[nid].children], dtype=np.int32) for nid in ids]
    cents = [np.ascontiguousarray(np.stack([tree.nodes[c].centroid for c in tree.nodes[nid].children]).T,
                                  dtype=np.float32) if tree.nodes[nid].children else None for nid in ids]
    node_index = np.full((n, depths), -1, dtype=np.int32)
    dist = np.full((n, depths), np.nan, dtype=np.float32)
    for lo in range(0, n, block):
        X = np.ascontiguousarray(embeddings[lo:lo + block], dtype=np.float32)
        _descend(X, pos[ROOT], tree.n_depths, children, cents, node_index[lo:lo + block], dist[lo:lo + block])
    return Assignment(node_index, np.array(ids + [""], dtype=object), dist)


def _descend(X, root: int, n_depths: int, children, cents, node_index, dist) -> None:
    n = len(X)
    current = np.full(n, root, dtype=np.int32)
    for d in range(n_depths):
        order = np.argsort(current, kind="stable")
        sorted_nodes = current[order]
        starts = np.flatnonzero(np.r_[True, sorted_nodes[1:] != sorted_nodes[:-1]])
        ends = np.r_[starts[1:], n]
        nxt = np.full(n, -1, dtype=np.int32)
        for lo, hi in zip(starts, ends):
            node = sorted_nodes[lo]
            if node < 0 or cents[node] is None:
                continue
            rows = order[lo:hi]
            sims = (X if hi - lo == n else X[rows]) @ cents[node]
            best = np.argmax(sims, axis=1)
            chosen = children[node][best]
            node_index[rows, d] = chosen
            dist[rows, d] = 1.0 - sims[np.arange(hi - lo), best]
            nxt[rows] = chosen
        current = nxt


def nearest_centroid_flat(embeddings: np.ndarray, centroids: np.ndarray, block: int = 8192) -> np.ndarray:
    """Brute-force baseline: the nearest of all ``centroids`` for every row (blocked)."""
    X = np.asarray(embeddings, dtype=np.float32)
    C = np.asarray(centroids, dtype=np.float32)
    out = np.empty(len(X), dtype=np.int64)
    for lo in range(0, len(X), block):
        out[lo:lo + block] = np.argmax(X[lo:lo + block] @ C.T, axis=1)
    return out


class NearestChunkSearch(Protocol):
    kind: str

    def search(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(index of the nearest corpus row, its cosine distance) per query."""
        ...

    def search_k(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(n, k) indices of the k nearest corpus rows, nearest first, and their cosine similarities
        (-1 index and -inf similarity where the corpus has fewer than k rows)."""
        ...


class ExactSearch:
    """Blocked exact search: ``block`` queries × the whole corpus per matrix product."""

    kind = "exact"

    def __init__(self, corpus: np.ndarray, block: int = 1024):
        self.corpus = np.ascontiguousarray(corpus, dtype=np.float32)
        self.block = block

    def search(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        Q = np.asarray(queries, dtype=np.float32)
        idx = np.empty(len(Q), dtype=np.int64)
        dist = np.empty(len(Q), dtype=np.float32)
        for lo in range(0, len(Q), self.block):
            sims = Q[lo:lo + self.block] @ self.corpus.T
            best = np.argmax(sims, axis=1)
            idx[lo:lo + self.block] = best
            dist[lo:lo + self.block] = 1.0 - sims[np.arange(len(best)), best]
        return idx, dist

    def search_k(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        Q = np.asarray(queries, dtype=np.float32)
        kk = min(k, len(self.corpus))
        idx = np.full((len(Q), k), -1, dtype=np.int64)
        out = np.full((len(Q), k), -np.inf, dtype=np.float32)
        for lo in range(0, len(Q), self.block):
            sims = Q[lo:lo + self.block] @ self.corpus.T
            top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk] if kk < sims.shape[1] else \
                np.broadcast_to(np.arange(kk), (len(sims), kk))
            top_s = np.take_along_axis(sims, top, axis=1)
            order = np.argsort(-top_s, axis=1, kind="stable")
            idx[lo:lo + len(sims), :kk] = np.take_along_axis(top, order, axis=1)
            out[lo:lo + len(sims), :kk] = np.take_along_axis(top_s, order, axis=1)
        return idx, out


class IVFSearch:
    """Approximate search: a faiss inverted-file index (IVF-Flat) over inner products of unit
    vectors (= cosine). The corpus is split into ``nlist`` k-means cells (trained on a seeded
    sample of 40 points per cell); a query scans the ``nprobe`` nearest cells exactly."""

    kind = "ivf"

    def __init__(self, index, nprobe: int):
        self.index = index
        self.index.nprobe = int(nprobe)

    def __reduce__(self):
        # a faiss index does not pickle: ship its serialized bytes (Ray's object store, processes)
        import faiss

        return _ivf_from_bytes, (faiss.serialize_index(self.index), int(self.index.nprobe))

    @staticmethod
    def auto_nlist(n: int) -> int:
        return int(max(1, min(n // 39, round(4 * np.sqrt(n)))))

    @classmethod
    def build(cls, corpus: np.ndarray, nlist: int = 0, nprobe: int = 16, seed: int = 0) -> "IVFSearch":
        import faiss

        X = np.ascontiguousarray(corpus, dtype=np.float32)
        nlist = nlist or cls.auto_nlist(len(X))
        quantizer = faiss.IndexFlatIP(X.shape[1])
        index = faiss.IndexIVFFlat(quantizer, X.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        rng = np.random.default_rng(seed)
        sample = X if len(X) <= 40 * nlist else X[np.sort(rng.choice(len(X), 40 * nlist, replace=False))]
        index.train(sample)
        index.add(X)
        return cls(index, nprobe)

    def save(self, path: Path) -> None:
        import faiss

        faiss.write_index(self.index, str(path))

    @classmethod
    def load(cls, path: Path, nprobe: int) -> "IVFSearch":
        import faiss

        return cls(faiss.read_index(str(path)), nprobe)

    def search(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        Q = np.ascontiguousarray(queries, dtype=np.float32)
        sims, idx = self.index.search(Q, 1)
        return idx[:, 0].astype(np.int64), (1.0 - sims[:, 0]).astype(np.float32)

    def search_k(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        sims, idx = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        sims = np.where(idx < 0, -np.inf, sims).astype(np.float32)
        return idx.astype(np.int64), sims


def _ivf_from_bytes(data: np.ndarray, nprobe: int) -> IVFSearch:
    import faiss

    return IVFSearch(faiss.deserialize_index(data), nprobe)


def nearest_chunks(queries: np.ndarray, corpus: np.ndarray, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Exact nearest corpus chunk (cosine) for each query."""
    return ExactSearch(corpus, block).search(queries)
