"""Do a model's errors concentrate in some corpus regions? Statistics of cluster × correctness.

:func:`analyze_clusters` takes one cluster label and one correctness flag per item (at one depth
of the tree) and returns, per cluster, n, errors, the error rate with a Wilson interval, a 2×2
test of that cluster against the rest (Fisher's exact where an expected count is < 5, else
chi-squared) with Benjamini–Hochberg q-values (scipy), and an overall chi-squared test of the whole
contingency table with the bias-corrected Cramér's V. It says so when the data are too few
for the test to mean anything, instead of reporting noise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

NOISE = "-1"
OUTSIDE = "outside"
"""Label of items outside the corpus (annotation's calibration): counted in their own row, never tested."""


def wilson_interval(errors: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (sound for small n and rates near 0 or 1)."""
    if n == 0:
        return (0.0, 1.0)
    p = errors / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def cramers_v_corrected(table: np.ndarray) -> float:
    """Bergsma's (2013) bias-corrected Cramér's V of an r×c contingency table."""
    table = np.asarray(table, dtype=float)
    n = table.sum()
    r, c = table.shape
    if n <= 1 or min(r, c) < 2:
        return 0.0
    chi2 = stats.chi2_contingency(table, correction=False)[0]
    phi2 = chi2 / n
    phi2c = max(0.0, phi2 - (c - 1) * (r - 1) / (n - 1))
    rc = r - (r - 1) ** 2 / (n - 1)
    cc = c - (c - 1) ** 2 / (n - 1)
    denom = min(rc - 1, cc - 1)
    return float(np.sqrt(phi2c / denom)) if denom > 0 else 0.0


@dataclass(frozen=True)
class ClusterRow:
    cluster: str
    n: int
    errors: int
    error_rate: float
    ci_low: float
    ci_high: float
    rate_elsewhere: float
    test: str
    p: float
    q: float


def _two_by_two(err_in: int, n_in: int, err_out: int, n_out: int) -> tuple[str, float]:
    table = np.array([[err_in, n_in - err_in], [err_out, n_out - err_out]])
    if n_in == 0 or n_out == 0 or table.sum(axis=0).min() == 0:
        return "none", 1.0
    expected = stats.contingency.expected_freq(table)
    if expected.min() < 5:
        return "fisher", float(stats.fisher_exact(table)[1])
    return "chi2", float(stats.chi2_contingency(table, correction=False)[1])


def analyze_clusters(labels, correct, alpha: float = 0.05, min_n: int = 5,
                     include_noise: bool = False, names: dict[str, str] | None = None) -> dict:
    """Error concentration by cluster at one depth.

    Parameters
    ----------
    labels : cluster id per item (``"-1"`` = noise, ``""`` = not at this depth, ``"outside"`` = outside
        the corpus: reported as the result's ``outside`` row, kept out of every test).
    correct : bool per item.
    alpha : significance level for the summary (q-values are BH-adjusted).
    min_n : clusters with fewer items are pooled as ``"(small)"`` for the overall test.
    include_noise : keep noise items as their own group.
    names : cluster id → name, shown beside ids in the summary.
    """
    labels = np.asarray(labels).astype(str)
    correct = np.asarray(correct)
    if correct.dtype != bool:
        raise ValueError("correct must be boolean")
    out_m = labels == OUTSIDE
    n_out, e_out = int(out_m.sum()), int((~correct[out_m]).sum())
    outside = {"n": n_out, "errors": e_out, "error_rate": e_out / n_out if n_out else None,
               "share": n_out / max(int((labels != "").sum()), 1)}
    keep = (labels != "") & ~out_m
    if not include_noise:
        keep &= labels != NOISE
    labels, wrong = labels[keep], ~correct[keep]
    n_total, err_total = len(labels), int(wrong.sum())
    groups = sorted(set(labels.tolist()))
    rows = []
    for g in groups:
        m = labels == g
        n, e = int(m.sum()), int(wrong[m].sum())
        test, p = _two_by_two(e, n, err_total - e, n_total - n)
        lo, hi = wilson_interval(e, n)
        rest = n_total - n
        rows.append(dict(cluster=g, n=n, errors=e, error_rate=e / n if n else 0.0, ci_low=lo, ci_high=hi,
                         rate_elsewhere=(err_total - e) / rest if rest else float("nan"), test=test, p=p))
    q = stats.false_discovery_control([r["p"] for r in rows], method="bh") if rows else []
    rows = [ClusterRow(**r, q=float(qi)) for r, qi in zip(rows, q)]
    pooled = {}
    for r in rows:
        key = r.cluster if r.n >= min_n else "(small)"
        a = pooled.setdefault(key, [0, 0])
        a[0] += r.errors
        a[1] += r.n - r.errors
    table = np.array(list(pooled.values()), dtype=int).reshape(-1, 2)
    overall = {"table_rows": list(pooled), "table": table.tolist(), "chi2": None, "dof": None, "p": None,
               "cramers_v": None}
    underpowered = []
    if len(table) < 2 or (table.sum(axis=0) == 0).any():
        underpowered.append("fewer than two clusters, or no errors / no correct answers: nothing to test")
    else:
        chi2, p, dof, expected = stats.chi2_contingency(table, correction=False)
        overall.update(chi2=float(chi2), dof=int(dof), p=float(p), cramers_v=cramers_v_corrected(table))
        if (expected < 5).mean() > 0.2:
            underpowered.append(f"{(expected < 5).mean():.0%} of expected counts are < 5: the chi-squared "
                                f"p-value is approximate")
    significant = sorted((r for r in rows if r.q <= alpha), key=lambda r: r.q)
    by_rate = sorted((r for r in rows if r.n >= min_n), key=lambda r: (-r.error_rate, r.cluster))
    return {"n": n_total, "errors": err_total, "error_rate": err_total / n_total if n_total else None,
            "overall": overall, "clusters": [asdict(r) for r in rows],
            "highest_error": [r.cluster for r in by_rate[:3]],
            "lowest_error": [r.cluster for r in by_rate[::-1][:3]],
            "warnings": underpowered, "outside": outside,
            "summary": _summary(significant, overall, underpowered, alpha, names or {}) + _outside_note(outside)}


def _outside_note(outside: dict) -> str:
    if not outside["n"]:
        return ""
    return (f" {outside['n']} outputs ({outside['share']:.0%}) are outside the corpus (error rate "
            f"{outside['error_rate']:.0%}), not in these tests.")


def _summary(significant: list[ClusterRow], overall: dict, warnings: list[str], alpha: float,
             names: dict[str, str]) -> str:
    if overall["p"] is None:
        return "Not testable: " + "; ".join(warnings)
    head = (f"cluster × correctness: chi2 = {overall['chi2']:.2f}, dof = {overall['dof']}, "
            f"p = {overall['p']:.3g}, Cramér's V = {overall['cramers_v']:.2f}.")
    if not significant:
        return head + f" No cluster's error rate differs from the rest at q ≤ {alpha}."
    parts = [f"{'errors concentrate in' if r.error_rate > r.rate_elsewhere else 'fewer errors in'} "
             f"{r.cluster}{f' ({names[r.cluster]})' if names.get(r.cluster) else ''}: "
             f"{r.error_rate:.0%} vs {r.rate_elsewhere:.0%} elsewhere, q = {r.q:.2g}" for r in significant[:3]]
    return head + " " + "; ".join(parts) + "."
