"""Placement on Ray (``annotation.engine = "ray"``): batches of outputs placed by a pool of actors
that share one copy of the corpus index.

The corpus index goes into Ray's object store once: the exact search's float32 matrix, which every
actor on a node reads zero-copy from shared memory, or the IVF index serialised to bytes (each
actor deserialises its own copy: IVF-Flat holds every vector). The tree goes in once too. Each
actor builds its search and the tree's per-chunk paths once, then places batches of
``annotation.ray_batch`` outputs with :func:`~corpus_proximity.tree.placement.place_outputs`, the
local engine's own function (row-wise, so the batches give what one call gives); the driver joins
the batches in order. On a multi-node cluster the index is shipped once per node.
"""

from __future__ import annotations

import os
import resource

import numpy as np

from corpus_proximity.config import AnnotationConfig
from corpus_proximity.distributed import init_ray
from corpus_proximity.tree.index import Assignment, ExactSearch, IVFSearch, NearestChunkSearch
from corpus_proximity.tree.placement import Placed, chunk_paths, place_outputs
from corpus_proximity.tree.tree import ClusterTree


def search_payload(search: NearestChunkSearch) -> tuple:
    """What rebuilds ``search`` in another process: ("exact", corpus matrix) or ("ivf", bytes, nprobe)."""
    if isinstance(search, ExactSearch):
        return ("exact", search.corpus, search.block)
    import faiss

    return ("ivf", faiss.serialize_index(search.index), int(search.index.nprobe))


def search_from_payload(payload: tuple) -> NearestChunkSearch:
    if payload[0] == "exact":
        return ExactSearch(payload[1], payload[2])  # float32 and contiguous already: no copy
    import faiss

    return IVFSearch(faiss.deserialize_index(np.asarray(payload[1])), payload[2])


class _Placer:
    """A Ray actor: the corpus index and the tree, built once; one batch of outputs per call."""

    def __init__(self, payload: tuple, tree: ClusterTree, placement: str, k: int):
        self.search = search_from_payload(payload)
        self.tree, self.placement, self.k = tree, placement, k
        self.paths = chunk_paths(tree) if placement == "knn" else None

    def place(self, X: np.ndarray) -> tuple:
        p = place_outputs(X, self.search, self.tree, self.placement, self.k, self.paths)
        return p.assignment.node_index, p.assignment.ids, p.assignment.distances, p.nearest, p.nn_sim

    def memory(self) -> dict:
        """This worker's pid and peak resident set (bytes; shared pages of the object store count)."""
        return {"pid": os.getpid(), "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


class RayPlacer:
    """A pool of ``cfg.ray_actors`` placement actors over one index and tree (see the module doc)."""

    def __init__(self, search: NearestChunkSearch, tree: ClusterTree, cfg: AnnotationConfig,
                 ray_address: str | None = None):
        init_ray(ray_address, num_cpus=cfg.ray_actors, field="embedding.ray_address")  # one line where Ray is absent
        import ray

        payload, tree_ref = ray.put(search_payload(search)), ray.put(tree)
        actor = ray.remote(num_cpus=1)(_Placer)
        self.actors = [actor.remote(payload, tree_ref, cfg.placement, cfg.knn_k) for _ in range(cfg.ray_actors)]
        self.batch = cfg.ray_batch

    def place(self, embeddings: np.ndarray) -> Placed:
        """What :func:`place_outputs` gives for ``embeddings``, computed batch by batch on the pool."""
        from ray.util import ActorPool

        X = np.ascontiguousarray(embeddings, dtype=np.float32)
        batches = [X[lo:lo + self.batch] for lo in range(0, len(X), self.batch)] or [X]
        parts = list(ActorPool(self.actors).map(lambda a, b: a.place.remote(b), batches))
        ids = parts[0][1]
        a = Assignment(np.concatenate([p[0] for p in parts]), ids, np.concatenate([p[2] for p in parts]))
        return Placed(a, np.concatenate([p[3] for p in parts]), np.concatenate([p[4] for p in parts]))

    def memory(self) -> list[dict]:
        import ray

        return ray.get([a.memory.remote() for a in self.actors])

    def close(self) -> None:
        import ray

        for a in self.actors:
            ray.kill(a)
        self.actors = []
