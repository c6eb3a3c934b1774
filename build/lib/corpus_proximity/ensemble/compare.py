"""Comparing partitions and cluster trees: permutation-invariant distances, clusterboot stability.

Pure functions shared by ``cluster_ensemble.py`` (runs of the tree on redrawn corpora and seeds)
and ``merge_features.py`` (runs of greedy feature merging): nothing here reads or writes files.

* :func:`perm_hamming` — the share of points whose label differs after the best one-to-one
  matching of the two label sets (Hungarian algorithm on the confusion matrix);
* :func:`matching_distance` — the share of point pairs on which the two partitions disagree
  (together in one, apart in the other) = 1 − Rand index, from the confusion matrix;
* ARI and NMI (scikit-learn), turned into distances as 1 − score;
* :func:`node_stability` — per reference node, the mean over runs of the best Jaccard overlap with
  a node of that run at the same depth, both restricted to the points the run saw (Hennig 2007).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from corpus_proximity.tree.tree import ROOT, ClusterTree

METHODS = ("hamming", "matching", "ari", "nmi")
"""Distance methods: each gives a value in [0, 1] (0 = identical partitions up to relabelling)."""
METHOD_TITLES = {"hamming": "perm-invariant Hamming", "matching": "matching (1 − Rand)",
                 "ari": "1 − ARI", "nmi": "1 − NMI"}


def _codes(labels: np.ndarray) -> np.ndarray:
    return np.unique(np.asarray(labels), return_inverse=True)[1].ravel()


def confusion(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Counts of points with label i in ``a`` and j in ``b`` (labels of any type, factorised)."""
    ca, cb = _codes(a), _codes(b)
    m = np.zeros((ca.max(initial=-1) + 1, cb.max(initial=-1) + 1), dtype=np.int64)
    np.add.at(m, (ca, cb), 1)
    return m


def perm_hamming(a: np.ndarray, b: np.ndarray) -> float:
    """Share of points labelled differently under the best one-to-one matching of labels.

    Labels left unmatched (the two sides have different numbers) count as mismatches."""
    n = len(a)
    if n == 0:
        return 0.0
    m = confusion(a, b)
    rows, cols = linear_sum_assignment(m, maximize=True)
    return 1.0 - float(m[rows, cols].sum()) / n


def matching_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Share of the n(n-1)/2 point pairs that one partition puts together and the other apart."""
    n = len(a)
    if n < 2:
        return 0.0
    m = confusion(a, b).astype(np.float64)
    same_both = (m * (m - 1)).sum() / 2
    same_a = (m.sum(1) * (m.sum(1) - 1)).sum() / 2
    same_b = (m.sum(0) * (m.sum(0) - 1)).sum() / 2
    return float((same_a + same_b - 2 * same_both) / (n * (n - 1) / 2))


def distance(a: np.ndarray, b: np.ndarray, method: str) -> float:
    if method == "hamming":
        return perm_hamming(a, b)
    if method == "matching":
        return matching_distance(a, b)
    ca, cb = _codes(a), _codes(b)
    if method == "ari":
        return 1.0 - float(adjusted_rand_score(ca, cb))
    if method == "nmi":
        return 1.0 - float(normalized_mutual_info_score(ca, cb))
    raise ValueError(f"unknown distance method {method!r} (one of {', '.join(METHODS)})")


def pairwise(labels: list[np.ndarray], method: str, masks: list[np.ndarray] | None = None) -> np.ndarray:
    """Symmetric [r, r] matrix of ``method`` between label vectors; with ``masks`` (which points
    each run saw) every pair is compared on the points both saw. The diagonal is 0."""
    r = len(labels)
    out = np.zeros((r, r), dtype=np.float64)
    for i in range(r):
        for j in range(i + 1, r):
            both = slice(None) if masks is None else masks[i] & masks[j]
            out[i, j] = out[j, i] = distance(labels[i][both], labels[j][both], method)
    return out


def upper(d: np.ndarray) -> np.ndarray:
    """The values above the diagonal (each pair once)."""
    return d[np.triu_indices(d.shape[-1], 1)]


# --- trees ---------------------------------------------------------------------------------------

def partition_at_depth(tree: ClusterTree, depth: int) -> np.ndarray:
    """Per point, the deepest node holding it at depth <= ``depth``: a point below its leaf keeps
    the leaf, a point left as noise when a node was split keeps that node ("root" for noise at the
    root); points the tree never saw are "". A partition at every depth, comparable across trees."""
    out = np.full(tree.n_points, "", dtype=object)
    out[tree.root.members] = ROOT
    for d in range(depth + 1):
        for nd in tree.at_depth(d):
            out[nd.members] = nd.id
    return out


def seen_mask(tree: ClusterTree) -> np.ndarray:
    m = np.zeros(tree.n_points, dtype=bool)
    m[tree.root.members] = True
    return m


def _indicator(tree: ClusterTree, ids: list[str]) -> sparse.csr_matrix:
    rows = np.concatenate([np.full(tree.nodes[i].size, k) for k, i in enumerate(ids)]) if ids else np.empty(0, int)
    cols = np.concatenate([tree.nodes[i].members for i in ids]) if ids else np.empty(0, int)
    m = sparse.csr_matrix((np.ones(len(rows), dtype=np.float64), (rows, cols)), shape=(len(ids), tree.n_points))
    m.data[:] = 1.0  # a bootstrap tree may list a point twice: membership is a set
    return m


def best_jaccard(ref: ClusterTree, run: ClusterTree) -> dict[str, float]:
    """For every node of ``ref``: the highest Jaccard overlap with a node of ``run`` at the same
    depth, both restricted to the points ``run`` saw. NaN where ``run`` saw none of the node."""
    seen = seen_mask(run).astype(np.float64)
    out = {}
    for d in range(ref.n_depths):
        ids_a = [n.id for n in ref.at_depth(d)]
        ids_b = [n.id for n in run.at_depth(d)]
        a = _indicator(ref, ids_a).multiply(seen[None, :]).tocsr()
        size_a = np.asarray(a.sum(axis=1)).ravel()
        if ids_b:
            b = _indicator(run, ids_b)
            inter = np.asarray((a @ b.T).todense())
            size_b = np.asarray(b.sum(axis=1)).ravel()
            jac = inter / np.maximum(size_a[:, None] + size_b[None, :] - inter, 1)
            best = jac.max(axis=1)
        else:
            best = np.zeros(len(ids_a))
        for k, nid in enumerate(ids_a):
            out[nid] = float(best[k]) if size_a[k] > 0 else float("nan")
    return out


@dataclass(frozen=True)
class Stability:
    """Per node of a reference tree: mean and spread of its best Jaccard over runs."""

    mean: dict[str, float]
    std: dict[str, float]
    per_run: dict[str, list[float]]
    threshold: float

    def unstable(self) -> list[str]:
        return [n for n, v in self.mean.items() if np.isfinite(v) and v < self.threshold]

    def to_json(self) -> dict:
        r = lambda v: None if not np.isfinite(v) else round(float(v), 4)  # noqa: E731
        return {"threshold": self.threshold, "unstable": self.unstable(),
                "nodes": {n: {"stability": r(self.mean[n]), "std": r(self.std[n]),
                              "per_run": [r(v) for v in self.per_run[n]]} for n in self.mean}}

    @classmethod
    def from_json(cls, d: dict) -> "Stability":
        f = lambda v: float("nan") if v is None else float(v)  # noqa: E731
        nodes = d["nodes"]
        return cls({n: f(v["stability"]) for n, v in nodes.items()}, {n: f(v["std"]) for n, v in nodes.items()},
                   {n: [f(x) for x in v["per_run"]] for n, v in nodes.items()}, float(d["threshold"]))


def node_stability(ref: ClusterTree, runs: list[ClusterTree], threshold: float = 0.6) -> Stability:
    """Hennig's clusterboot: mean over runs of each reference node's best Jaccard (runs that saw
    none of the node's points are left out of its mean)."""
    per = [best_jaccard(ref, r) for r in runs]
    ids = [n for n in ref.nodes if n != ROOT]
    per_run = {n: [p.get(n, float("nan")) for p in per] for n in ids}
    mean, std = {}, {}
    for n, vals in per_run.items():
        v = np.array(vals, dtype=np.float64)
        v = v[np.isfinite(v)]
        mean[n] = float(v.mean()) if len(v) else float("nan")
        std[n] = float(v.std()) if len(v) else float("nan")
    return Stability(mean, std, per_run, threshold)


# --- run plans -----------------------------------------------------------------------------------

def derived_seed(seed: int, *parts: object) -> int:
    """A 31-bit seed derived from ``seed`` and labels, stable across machines and reruns."""
    text = ":".join([str(seed), *map(str, parts)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") & 0x7FFFFFFF


def draw_indices(n: int, resample: str, frac: float, seed: int) -> np.ndarray:
    """Sorted distinct row indices of one draw: a ``frac`` subsample without replacement, or the
    distinct rows of an n-draw bootstrap (about 63% of them)."""
    rng = np.random.default_rng(seed)
    if resample == "bootstrap":
        return np.unique(rng.integers(0, n, size=n))
    if resample == "subsample":
        return np.sort(rng.choice(n, size=max(2, int(round(frac * n))), replace=False))
    raise ValueError(f"unknown resample {resample!r}")
