"""corpus_proximity.evals.quality: noise-aware scores, hierarchy consistency, cutting a topic hierarchy."""

from __future__ import annotations

import numpy as np
import pytest

from corpus_proximity.evals.quality import as_int_labels, cut_hierarchy, hierarchy_consistency, level_scores


def test_as_int_labels_maps_every_noise_spelling_to_minus_one():
    assert as_int_labels(["0.1", "-1", "", "0.1", "2"]).tolist() == [0, -1, -1, 0, 1]
    assert as_int_labels(np.array([5, -1, 5, 7])).tolist() == [0, -1, 0, 1]


def test_level_scores_noise_counts_as_one_label_on_all_points_only():
    truth = np.array([0, 0, 0, 1, 1, 1])
    pred = np.array([3, 3, -1, 4, 4, -1])
    s = level_scores(truth, pred)
    assert s["clustered"] == pytest.approx(4 / 6, abs=1e-4)
    assert s["n_clusters"] == 2
    assert s["ari_clustered"] == 1.0 and s["nmi_clustered"] == 1.0
    assert s["ari"] < 1.0 and s["nmi"] < 1.0
    assert level_scores(truth, np.full(6, -1))["clustered"] == 0.0


def test_hierarchy_consistency_counts_fine_clusters_under_the_wrong_parent():
    true_coarse = np.array(["news"] * 6 + ["docs"] * 6)
    pred_coarse = np.array([0] * 6 + [1] * 6)
    pred_fine = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    assert hierarchy_consistency(true_coarse, pred_coarse, pred_fine) == 1.0
    # fine cluster 3 is truly coarse 1 but its members sit in predicted coarse cluster 0
    moved = pred_coarse.copy()
    moved[9:] = 0
    assert hierarchy_consistency(true_coarse, moved, pred_fine) == 0.75
    # a fine cluster whose members are all coarse noise has no parent
    noisy = pred_coarse.copy()
    noisy[:3] = -1
    assert hierarchy_consistency(true_coarse, noisy, pred_fine) == 0.75
    assert hierarchy_consistency(true_coarse, pred_coarse, np.full(12, -1)) is None


def test_cut_hierarchy_applies_the_closest_merges_until_k_groups_remain():
    leaf = np.array([0, 1, 2, 3, -1, 0])
    merges = [(0.1, [0, 1]), (0.2, [2, 3]), (0.9, [0, 1, 2, 3])]
    two = cut_hierarchy(leaf, merges, 2)
    assert two[4] == -1
    assert two[0] == two[1] == two[5] and two[2] == two[3] and two[0] != two[2]
    assert len(set(cut_hierarchy(leaf, merges, 1).tolist()) - {-1}) == 1
    assert len(set(cut_hierarchy(leaf, merges, 4).tolist()) - {-1}) == 4
