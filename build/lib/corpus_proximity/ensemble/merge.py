"""Greedy hierarchical merging of components (features, soft clusters) by coactivation, MDL cost.

Pure functions: ``merge_features.py`` reads inputs and writes results around them.

Activations (samples × components) are thresholded to a binary mask M; the coactivation of
groups is C = MᵀM (C_ii = s_i, the samples on which group i fires; C_ij those on which both fire).
Each iteration merges the pair with the lowest cost (bits, log base 2; k groups now,
s_Σ = Σ s_g, s_ij = s_i + s_j − C_ij the samples on which the merged group fires, r = group size):

    (s_Σ − s_i − s_j)·log((k−1)/k) + s_ij·log(k−1) − (s_i + s_j)·log k
        + α·(s_ij·r(P_ij) − s_i·r(P_i) − s_j·r(P_j))

The first terms are the change in the description length of *which* groups fire (fewer groups,
but a merged group fires wherever either did); the α term charges for describing larger groups.
Components that fire together merge first. After a merge only the merged group's row and column
of C are recomputed (from the samples where it fires), not the whole product.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from corpus_proximity.config import MergeConfig
from corpus_proximity.ensemble import compare as ens


def binary_mask(activations: np.ndarray, threshold: float) -> np.ndarray:
    """[samples, components] bool: activation >= threshold."""
    return np.asarray(activations) >= threshold


def coactivation(mask: np.ndarray) -> np.ndarray:
    """C = MᵀM as int64 counts."""
    m = mask.astype(np.float64)
    return np.rint(m.T @ m).astype(np.int64)


def merge_costs(C: np.ndarray, sizes: np.ndarray, alpha: float) -> np.ndarray:
    """[k, k] cost of merging each pair of the k current groups (the diagonal is +inf)."""
    k = len(C)
    s = np.diag(C).astype(np.float64)
    s_or = s[:, None] + s[None, :] - C  # samples on which i or j fires
    r = sizes.astype(np.float64)
    log = np.log2
    bits = ((s.sum() - s[:, None] - s[None, :]) * log((k - 1) / k) + s_or * (log(k - 1) if k > 1 else 0.0)
            - (s[:, None] + s[None, :]) * log(k))
    penalty = s_or * (r[:, None] + r[None, :]) - (s * r)[:, None] - (s * r)[None, :]
    cost = bits + alpha * penalty
    np.fill_diagonal(cost, np.inf)
    return cost


def merge_update(C: np.ndarray, mask: np.ndarray, i: int, j: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge group j into group i (i < j): the merged group's mask is the OR of both; its row and
    column of C are recomputed from the samples where it fires; j's row, column and mask column
    are removed. Returns the new (C, mask)."""
    merged = mask[:, i] | mask[:, j]
    rows = np.flatnonzero(merged)
    counts = mask[rows].sum(axis=0).astype(np.int64)  # per group: samples where it and the merged group fire
    C = C.copy()
    C[i, :] = counts
    C[:, i] = counts
    C[i, i] = len(rows)
    mask = mask.copy()
    mask[:, i] = merged
    keep = np.ones(len(C), dtype=bool)
    keep[j] = False
    return C[keep][:, keep], mask[:, keep]


@dataclass
class MergeHistory:
    """One greedy merge run over ``n_components`` components."""

    groups: np.ndarray
    """[n_iters + 1, n_components]: the group of every component after each iteration (row 0: no
    merge yet); a group is named by its lowest component index, so runs compare directly."""
    pairs: np.ndarray
    """[n_iters, 2]: the groups merged at each iteration (their names before the merge)."""
    costs: np.ndarray
    """[n_iters]: the cost of each merge."""
    k_groups: np.ndarray
    """[n_iters + 1]: number of groups after each iteration."""

    @property
    def n_iters(self) -> int:
        return len(self.costs)

    def at(self, iteration: int) -> np.ndarray:
        return self.groups[iteration]


def select_pair(cost: np.ndarray, cfg: MergeConfig, rng: np.random.Generator) -> tuple[int, int]:
    """The lowest-cost pair (i < j, ties to the first in row order), or with ``temperature > 0``
    a draw among the ``pool`` lowest with p ~ exp(-(cost - min) / (temperature * max(|min|, 1)))."""
    iu, ju = np.triu_indices(len(cost), 1)
    flat = cost[iu, ju]
    if cfg.temperature <= 0 or cfg.pool == 1:
        b = int(np.argmin(flat))
        return int(iu[b]), int(ju[b])
    take = min(cfg.pool, len(flat))
    cand = np.argpartition(flat, take - 1)[:take]
    cand = cand[np.lexsort((cand, flat[cand]))]
    c = flat[cand]
    w = np.exp(-(c - c[0]) / (cfg.temperature * max(abs(float(c[0])), 1.0)))
    b = int(cand[rng.choice(len(cand), p=w / w.sum())])
    return int(iu[b]), int(ju[b])


def merge_run(mask: np.ndarray, cfg: MergeConfig, seed: int = 0) -> MergeHistory:
    """Greedy MDL merging of the columns of ``mask`` (bool [samples, components])."""
    n_comp = mask.shape[1]
    if n_comp < 2:
        raise ValueError("merging needs at least 2 components")
    n_iters = n_comp - 1 if cfg.max_iters is None else min(cfg.max_iters, n_comp - 1)
    rng = np.random.default_rng(seed)
    mask = np.ascontiguousarray(mask, dtype=bool)
    C = coactivation(mask)
    members = [[c] for c in range(n_comp)]  # group slot → its components (slots stay sorted by lowest component)
    groups = np.empty((n_iters + 1, n_comp), dtype=np.int32)
    groups[0] = np.arange(n_comp)
    pairs = np.empty((n_iters, 2), dtype=np.int32)
    costs = np.empty(n_iters, dtype=np.float64)
    for t in range(n_iters):
        sizes = np.array([len(m) for m in members])
        cost = merge_costs(C, sizes, cfg.alpha)
        i, j = select_pair(cost, cfg, rng)
        pairs[t] = (members[i][0], members[j][0])
        costs[t] = cost[i, j]
        C, mask = merge_update(C, mask, i, j)
        members[i] = sorted(members[i] + members.pop(j))
        g = groups[t].copy()
        g[members[i]] = members[i][0]
        groups[t + 1] = g
    return MergeHistory(groups, pairs, costs, n_comp - np.arange(n_iters + 1))


def history_distances(histories: list[MergeHistory]) -> np.ndarray:
    """[n_iters + 1, runs, runs] permutation-invariant Hamming distance between the runs' group
    assignments after each iteration (over the iterations all runs reached)."""
    n = min(h.n_iters for h in histories) + 1
    return np.stack([ens.pairwise([h.groups[t] for h in histories], "hamming") for t in range(n)])


def ensemble_array(histories: list[MergeHistory]) -> dict[str, np.ndarray]:
    """What ``ensemble_merge_array.npz`` holds: merges [runs, n_iters + 1, components], costs and pairs."""
    n = min(h.n_iters for h in histories)
    return {"merges": np.stack([h.groups[:n + 1] for h in histories]),
            "costs": np.stack([h.costs[:n] for h in histories]),
            "pairs": np.stack([h.pairs[:n] for h in histories]),
            "k_groups": histories[0].k_groups[:n + 1]}
