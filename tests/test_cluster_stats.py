import numpy as np
import pytest
from scipy import stats
from scipy.stats import false_discovery_control

from corpus_proximity.analysis.stats import analyze_clusters, cramers_v_corrected, wilson_interval


def test_overall_chi2_equals_scipy_on_random_tables():
    rng = np.random.default_rng(0)
    for _ in range(20):
        k = rng.integers(2, 8)
        labels = rng.integers(0, k, 400).astype(str)
        correct = rng.random(400) < rng.uniform(0.3, 0.9)
        res = analyze_clusters(labels, correct, min_n=1)
        table = np.array(res["overall"]["table"])
        chi2, p, dof, _ = stats.chi2_contingency(table, correction=False)
        assert res["overall"]["chi2"] == pytest.approx(chi2, abs=1e-9)
        assert res["overall"]["p"] == pytest.approx(p, abs=1e-9)
        assert res["overall"]["dof"] == dof
        # the table is errors / correct per cluster, as reported
        for row, cl in zip(table, res["overall"]["table_rows"]):
            m = labels == cl
            assert row.tolist() == [int((~correct[m]).sum()), int(correct[m].sum())]


def test_cramers_v_on_known_tables():
    assert cramers_v_corrected(np.array([[50, 0], [0, 50]])) == pytest.approx(1.0, abs=0.03)
    assert cramers_v_corrected(np.array([[25, 25], [25, 25]])) == 0.0
    # agrees with scipy's (uncorrected) association as n grows
    big = np.array([[3000, 1000], [1500, 2500]])
    assert cramers_v_corrected(big) == pytest.approx(stats.contingency.association(big, method="cramer"), abs=1e-3)


def test_q_values_are_bh_of_the_clusters_own_p_values_and_wilson_is_sane():
    rng = np.random.default_rng(1)
    labels = rng.choice([f"c{i}" for i in range(12)], 600)
    correct = rng.random(600) > np.where(labels == "c3", 0.6, 0.2)
    rows = analyze_clusters(labels, correct)["clusters"]
    p = np.array([r["p"] for r in rows])
    assert len(rows) == 12 and np.allclose([r["q"] for r in rows], false_discovery_control(p, method="bh"))
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and 0.2 < hi < 0.35
    lo, hi = wilson_interval(50, 100)
    assert lo == pytest.approx(1 - hi) and lo < 0.5 < hi


def test_planted_error_cluster_is_found_with_power():
    hits = 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        labels = rng.integers(0, 6, 600).astype(str)
        p_err = np.where(labels == "2", 0.45, 0.2)
        correct = rng.random(600) >= p_err
        res = analyze_clusters(labels, correct)
        row = next(r for r in res["clusters"] if r["cluster"] == "2")
        hits += row["q"] <= 0.05 and row["error_rate"] > row["rate_elsewhere"]
    assert hits / 200 >= 0.9


def test_false_positive_rate_under_null():
    false = 0
    for seed in range(200):
        rng = np.random.default_rng(1000 + seed)
        labels = rng.integers(0, 6, 600).astype(str)
        correct = rng.random(600) >= 0.25
        res = analyze_clusters(labels, correct)
        false += any(r["q"] <= 0.05 for r in res["clusters"])
    assert false / 200 <= 0.05 + 0.02


def test_fisher_for_small_clusters_noise_excluded_and_honest_summary():
    labels = np.array(["0"] * 40 + ["1"] * 40 + ["2"] * 4 + ["-1"] * 10)
    correct = np.array([True] * 30 + [False] * 10 + [True] * 38 + [False] * 2 + [False] * 4 + [False] * 10)
    res = analyze_clusters(labels, correct)
    by = {r["cluster"]: r for r in res["clusters"]}
    assert "-1" not in by and res["n"] == 84
    assert by["2"]["test"] == "fisher"
    assert by["2"]["p"] == pytest.approx(stats.fisher_exact([[4, 0], [12, 68]])[1])
    assert "(small)" in res["overall"]["table_rows"]
    none = analyze_clusters(["0"] * 5 + ["1"] * 5, [True] * 10)
    assert none["overall"]["p"] is None and none["summary"].startswith("Not testable")
    with pytest.raises(ValueError):
        analyze_clusters(["0", "1"], [1, 0])
