"""Scores of a 2-level clustering against a 2-level truth (``bench/quality.py`` reports them).

Predicted labels are int arrays with -1 for noise. Every score is computed twice: on all points
with noise as one label of its own (what a user who keeps every point sees), and on the clustered
points only (how right the clusters that were found are).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score


def as_int_labels(labels) -> np.ndarray:
    """Any labels (ints or strings) -> ints 0..k-1, noise (-1, "-1" or "") -> -1."""
    arr = np.asarray(labels)
    noise = np.isin(arr.astype(str), ["-1", ""])
    out = np.full(len(arr), -1, dtype=np.int64)
    if (~noise).any():
        _, inv = np.unique(arr[~noise].astype(str), return_inverse=True)
        out[~noise] = inv
    return out


def level_scores(truth: np.ndarray, pred: np.ndarray) -> dict:
    """NMI and ARI on all points (noise one label) and on clustered points; share clustered; count."""
    pred = as_int_labels(pred)
    kept = pred >= 0
    out = {"nmi": float(normalized_mutual_info_score(truth, pred)),
           "ari": float(adjusted_rand_score(truth, pred)),
           "clustered": float(kept.mean()), "n_clusters": int(len(np.unique(pred[kept])))}
    if kept.sum() >= 2:
        out["nmi_clustered"] = float(normalized_mutual_info_score(truth[kept], pred[kept]))
        out["ari_clustered"] = float(adjusted_rand_score(truth[kept], pred[kept]))
    else:
        out["nmi_clustered"] = out["ari_clustered"] = 0.0
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}


def _majority(values: np.ndarray) -> int | None:
    values = values[values >= 0]
    if len(values) == 0:
        return None
    u, c = np.unique(values, return_counts=True)
    return int(u[np.argmax(c)])


def hierarchy_consistency(true_coarse: np.ndarray, pred_coarse: np.ndarray, pred_fine: np.ndarray) -> float | None:
    """Share of fine clusters whose majority true coarse label equals their parent's.

    A fine cluster's parent is the predicted coarse cluster holding most of its (non-noise)
    members: for a strict tree that is its parent; for flat or loosely nested levels (k-means
    at two k, EVoC's layers) it is the nearest thing to one. A fine cluster whose members are
    all coarse noise has no parent and counts as inconsistent. None if there is no fine cluster.
    """
    true_coarse = np.unique(np.asarray(true_coarse).astype(str), return_inverse=True)[1]  # no noise in truth
    pc, pf = as_int_labels(pred_coarse), as_int_labels(pred_fine)
    parent_truth = {p: _majority(true_coarse[pc == p]) for p in np.unique(pc[pc >= 0])}
    fines = np.unique(pf[pf >= 0])
    if len(fines) == 0:
        return None
    ok = 0
    for f in fines:
        members = pf == f
        parent = _majority(pc[members])
        ok += parent is not None and parent_truth[parent] == _majority(true_coarse[members])
    return round(ok / len(fines), 4)


def cut_hierarchy(leaf_topics: np.ndarray, merges: list[tuple[float, list[int]]], k: int) -> np.ndarray:
    """Labels of ``leaf_topics`` (-1 = noise, kept) after applying the closest merges until ``k``
    groups remain. ``merges``: (distance, every leaf topic under the merged node), as in the
    ``Distance`` and ``Topics`` columns of BERTopic's ``hierarchical_topics``."""
    topics = sorted(int(t) for t in np.unique(leaf_topics) if t >= 0)
    parent = {t: t for t in topics}

    def find(t: int) -> int:
        while parent[t] != t:
            parent[t] = parent[parent[t]]
            t = parent[t]
        return t

    groups = len(topics)
    for _, under in sorted(merges, key=lambda m: m[0]):
        if groups <= k:
            break
        roots = {find(t) for t in under}
        first = roots.pop()
        for r in roots:
            parent[r] = first
            groups -= 1
    root_of = {t: find(t) for t in topics}
    return np.array([root_of[int(t)] if t >= 0 else -1 for t in leaf_topics], dtype=np.int64)
