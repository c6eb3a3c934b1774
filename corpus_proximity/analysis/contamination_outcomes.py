"""Contamination joined with outcomes, and corpus stages in the tree.

* :func:`accuracy_by_level`: per model (correctness field), accuracy on verbatim / near / far items
  with Wilson intervals, and a test of accuracy × contamination level (chi-squared over the
  levels present; Fisher's exact for a 2×2 table with an expected count < 5).
* :func:`node_mass`: per tree node (every depth), the items placed there, how many are verbatim /
  near, and each model's error rate there.
* :func:`stage_by_node`: per depth, every node's chunk mass per corpus stage and a chi-squared test
  (with the bias-corrected Cramér's V) of stage × node, with the node whose stage mix departs most
  (largest standardised residual).
* :func:`stage_shares`: per tree node, each stage's share of the node's chunks (what the report
  and the dashboard colour the tree by).
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from corpus_proximity.analysis.stats import NOISE, cramers_v_corrected, wilson_interval

LEVELS = ("verbatim", "near", "far")


def accuracy_by_level(levels, correct, alpha: float = 0.05) -> dict:
    """Accuracy per contamination level and a test of accuracy × level (ungraded items, None, dropped)."""
    levels = np.asarray(levels).astype(str)
    graded = np.array([c is not None for c in correct])
    ok = np.array([bool(c) for c in np.asarray(correct, dtype=object)[graded]], dtype=bool)
    levels = levels[graded]
    rows, table = [], []
    for lv in LEVELS:
        m = levels == lv
        n, k = int(m.sum()), int(ok[m].sum())
        lo, hi = wilson_interval(k, n)
        rows.append({"level": lv, "n": n, "correct": k, "accuracy": k / n if n else None, "ci_low": lo, "ci_high": hi})
        if n:
            table.append([k, n - k])
    test = {"test": "none", "p": None, "statistic": None, "dof": None, "cramers_v": None,
            "levels": [r["level"] for r in rows if r["n"]]}
    t = np.array(table).reshape(-1, 2)
    if len(t) < 2 or (t.sum(axis=0) == 0).any():
        test["note"] = "fewer than two levels with items, or all items right / all wrong: nothing to test"
    elif len(t) == 2 and stats.contingency.expected_freq(t).min() < 5:
        odds, p = stats.fisher_exact(t)
        test.update(test="fisher", p=float(p), statistic=float(odds), cramers_v=cramers_v_corrected(t))
    else:
        chi2, p, dof, _ = stats.chi2_contingency(t, correction=False)
        test.update(test="chi2", p=float(p), statistic=float(chi2), dof=int(dof), cramers_v=cramers_v_corrected(t))
    test["significant"] = test["p"] is not None and test["p"] <= alpha
    return {"n_graded": int(graded.sum()), "levels": rows, "test": test}


def carried_paths(paths: np.ndarray) -> np.ndarray:
    """Tree paths with an item whose leaf is shallower than a depth kept in that leaf there."""
    out = paths.copy()
    for d in range(1, out.shape[1]):
        out[:, d] = np.where(out[:, d] == "", out[:, d - 1], out[:, d])
    return out


def node_mass(paths: np.ndarray, levels, correct: dict[str, np.ndarray], names: dict[str, str] | None = None) -> list[dict]:
    """One row per (depth, node): items, verbatim / near counts and share, each model's error rate."""
    paths = carried_paths(np.asarray(paths, dtype=object))
    levels = np.asarray(levels).astype(str)
    names = names or {}
    out = []
    for d in range(paths.shape[1]):
        for node in sorted(set(paths[:, d].tolist()) - {""}):
            m = paths[:, d] == node
            n = int(m.sum())
            row = {"depth": d, "node": node, "name": names.get(node, ""), "n_items": n,
                   "verbatim": int((levels[m] == "verbatim").sum()), "near": int((levels[m] == "near").sum())}
            row["contaminated_share"] = (row["verbatim"] + row["near"]) / n
            for field, vals in correct.items():
                g = [v for v in np.asarray(vals, dtype=object)[m] if v is not None]
                row[f"error_rate.{field}"] = (sum(not bool(v) for v in g) / len(g)) if g else None
            out.append(row)
    return out


def stage_by_node(labels_by_depth: list[np.ndarray], stages, alpha: float = 0.05) -> dict:
    """Stage × node at each depth (labels per chunk per depth, "" below a leaf, "-1" noise left out)."""
    stages = np.asarray(stages).astype(str)
    names = sorted(set(stages.tolist()))
    out = {"stages": names, "totals": {s: int((stages == s).sum()) for s in names}, "depths": {}}
    for d, labels in enumerate(labels_by_depth):
        labels = np.asarray(labels).astype(str)
        keep = (labels != "") & (labels != NOISE)
        nodes = sorted(set(labels[keep].tolist()))
        table = np.array([[int(((labels == nd) & (stages == s)).sum()) for s in names] for nd in nodes], dtype=int)
        entry = {"nodes": [{"node": nd, **{f"n.{s}": int(c) for s, c in zip(names, row)},
                            **{f"share.{s}": float(c / row.sum()) for s, c in zip(names, row)}}
                           for nd, row in zip(nodes, table)],
                 "chi2": None, "dof": None, "p": None, "cramers_v": None, "most_different": None}
        present = [s for s, k in zip(names, table.sum(axis=0) > 0) if k] if len(table) else []
        table = table[:, table.sum(axis=0) > 0] if len(table) else table
        if table.ndim == 2 and min(table.shape) >= 2:
            chi2, p, dof, expected = stats.chi2_contingency(table, correction=False)
            resid = (table - expected) / np.sqrt(expected)
            i, j = np.unravel_index(np.argmax(np.abs(resid)), resid.shape)
            entry.update(chi2=float(chi2), dof=int(dof), p=float(p), cramers_v=cramers_v_corrected(table),
                         significant=bool(p <= alpha),
                         most_different={"node": nodes[i], "stage": present[j], "residual": float(resid[i, j])})
        out["depths"][f"depth_{d}"] = entry
    return out


def stage_shares(members: dict[str, np.ndarray], stages) -> dict[str, dict[str, float]]:
    """Per stage, per node: the share of the node's chunks (``members[node]``, rows) that carry it."""
    stages = np.asarray(stages).astype(str)
    names = sorted(set(stages.tolist()))
    out = {s: {} for s in names}
    for node, rows in members.items():
        got = stages[np.asarray(rows, dtype=np.int64)]
        for s in names:
            out[s][node] = float((got == s).mean()) if len(got) else float("nan")
    return out
