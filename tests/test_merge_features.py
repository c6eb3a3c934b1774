"""MDL feature merging: planted co-firing groups merge first, the incremental coactivation update
equals recomputation, costs match the formula, stochastic selection, ensembles, and the CLI on
soft-cluster memberships and on a user array."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import merge_features
from corpus_proximity.config import MergeConfig
from corpus_proximity.ensemble import compare as ens
from corpus_proximity.ensemble import merge_stage as mf
from corpus_proximity.ensemble.merge import (
    binary_mask,
    coactivation,
    history_distances,
    merge_costs,
    merge_run,
    merge_update,
)


def planted_cofiring(n_samples=600, groups=((0, 3, 7, 10), (1, 4, 8, 11), (2, 5, 6, 9)), p_on=0.9,
                     p_noise=0.02, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """Activations in [0, 1]: each sample turns on one planted group (each member w.p. p_on),
    plus independent background firing. Returns (activations [n, 12], group of each component)."""
    rng = np.random.default_rng(seed)
    n_comp = sum(len(g) for g in groups)
    truth = np.empty(n_comp, dtype=int)
    for k, g in enumerate(groups):
        truth[list(g)] = k
    on = rng.random((n_samples, n_comp)) < p_noise
    pick = rng.integers(0, len(groups), n_samples)
    on |= (truth[None, :] == pick[:, None]) & (rng.random((n_samples, n_comp)) < p_on)
    return np.where(on, rng.uniform(0.5, 1.0, on.shape), rng.uniform(0, 0.05, on.shape)), truth


def test_planted_cofiring_groups_are_merged_first():
    acts, truth = planted_cofiring()
    h = merge_run(binary_mask(acts, 0.3), MergeConfig())
    n_within = len(truth) - len(set(truth))       # merges that stay inside planted groups: 12 - 3
    for t in range(n_within):
        a, b = h.pairs[t]
        assert truth[a] == truth[b], f"merge {t} joined {a} and {b} across planted groups"
    assert ens.perm_hamming(h.groups[n_within], truth) == 0.0
    assert h.k_groups[n_within] == 3 and h.n_iters == 11 and len(np.unique(h.groups[-1])) == 1
    # group names are the lowest component of each group
    assert set(np.unique(h.groups[n_within])) == {0, 1, 2}


def test_incremental_coactivation_update_equals_recomputation():
    rng = np.random.default_rng(3)
    mask0 = rng.random((300, 9)) < 0.3
    C, mask = coactivation(mask0), mask0.copy()
    members = [[c] for c in range(9)]
    for _ in range(8):
        k = len(members)
        i, j = sorted(rng.choice(k, 2, replace=False).tolist())
        C, mask = merge_update(C, mask, i, j)
        members[i] = members[i] + members.pop(j)
        assert np.array_equal(C, coactivation(mask))
        expect = np.stack([mask0[:, m].any(axis=1) for m in members], axis=1)
        assert np.array_equal(mask, expect)


def test_costs_follow_the_mdl_formula():
    rng = np.random.default_rng(4)
    mask = rng.random((200, 5)) < 0.25
    C = coactivation(mask)
    sizes = np.array([1, 2, 1, 3, 1])
    alpha, k = 0.7, 5
    cost = merge_costs(C, sizes, alpha)
    s = np.diag(C).astype(float)
    for i in range(k):
        for j in range(k):
            if i == j:
                assert cost[i, j] == np.inf
                continue
            s_ij = s[i] + s[j] - C[i, j]
            want = ((s.sum() - s[i] - s[j]) * math.log2((k - 1) / k) + s_ij * math.log2(k - 1)
                    - (s[i] + s[j]) * math.log2(k)
                    + alpha * (s_ij * (sizes[i] + sizes[j]) - s[i] * sizes[i] - s[j] * sizes[j]))
            assert cost[i, j] == pytest.approx(want)


def test_stochastic_selection_varies_with_the_seed_and_zero_temperature_does_not():
    acts, _ = planted_cofiring(n_samples=300, p_on=0.6, p_noise=0.1, seed=5)
    m = binary_mask(acts, 0.3)
    det = [merge_run(m, MergeConfig(), seed=s).groups for s in range(3)]
    assert all(np.array_equal(det[0], g) for g in det)
    hot = [merge_run(m, MergeConfig(temperature=2.0, pool=6), seed=s) for s in range(6)]
    assert len({h.pairs.tobytes() for h in hot}) > 1
    d = history_distances(hot)
    assert d.shape == (12, 6, 6) and np.allclose(d[0], 0) and np.allclose(d[-1], 0) and d.max() > 0


def test_ensemble_runs_on_draws_and_agree_on_clear_structure():
    acts, truth = planted_cofiring(n_samples=800)
    ref, runs, plans = mf.run_ensemble(binary_mask(acts, 0.3), MergeConfig(runs=4, sample_frac=0.7))
    assert len(runs) == 4 and len({p["draw_seed"] for p in plans}) == 4 and plans[0]["n_samples"] == 560
    d = history_distances(runs)
    assert np.allclose(d[9], 0)            # every draw recovers the same three planted groups
    assert ens.perm_hamming(ref.groups[9], truth) == 0


def _write_memberships(path, k=4):
    """Two sequences × 3 positions; cluster 0 and 1 co-fire at every position, 2 and 3 alone."""
    (path / "memberships").mkdir(parents=True)
    idx = [(0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1), (0, 2, 2), (1, 0, 3), (1, 1, 0), (1, 1, 1), (1, 2, 2)]
    val = [0.6, 0.4, 0.5, 0.5, 1.0, 0.9, 0.55, 0.02, 0.97]   # (1, 1, 1) is below any sensible threshold
    meta = {"source": "x", "n_seq": 2, "seq_len": 3, "n_clusters": k, "threshold": 0.01, "top_m": 4}
    np.savez(path / "memberships" / "chunk-00000.npz", indices=np.array(idx, dtype=np.int32),
             values=np.array(val, dtype=np.float32), meta=np.array(json.dumps(meta)))


def test_soft_cluster_memberships_become_a_position_mask(tmp_path):
    _write_memberships(tmp_path)
    m = mf.soft_cluster_mask(tmp_path, threshold=0.1)
    assert m.shape == (6, 4)
    # rows in (sequence, position) order
    assert m.tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [1, 0, 0, 0], [0, 0, 1, 0]]


def _cfg_file(tmp_path):
    cfg = tmp_path / "merge_cfg.py"
    cfg.write_text("from corpus_proximity.config import *\n"
                   f"config = ExperimentConfig(name='m', cache_dir={str(tmp_path / 'cache')!r}, "
                   f"output_dir={str(tmp_path / 'out')!r}, merge=MergeConfig(runs=3, activation_threshold=0.3))\n")
    return cfg


def test_cli_on_a_user_array_writes_history_ensemble_and_distances(tmp_path, capsys):
    acts, truth = planted_cofiring()
    np.savez(tmp_path / "acts.npz", activations=acts.reshape(20, 30, 12))   # leading axes are samples
    cfg = _cfg_file(tmp_path)
    assert merge_features.main([str(cfg), "--input", str(tmp_path / "acts.npz"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "first merges" in err and "groups at k = 4" in err
    sd = next((tmp_path / "cache").glob("merge-*"))
    h = np.load(sd / "merge_history.npz")
    assert h["groups"].shape == (12, 12) and ens.perm_hamming(h["groups"][9], truth) == 0
    arr = np.load(sd / "ensemble_merge_array.npz")
    assert arr["merges"].shape == (3, 12, 12) and arr["costs"].shape == (3, 11)
    assert np.load(sd / "distances_hamming.npz")["distances"].shape == (12, 3, 3)
    assert (sd / "distances_hamming.png").is_file() and (tmp_path / "out" / "m" / "merge" / "ensemble_meta.json").is_file()
    assert merge_features.main([str(cfg), "--input", str(tmp_path / "acts.npz"), "--quiet"]) == 0
    assert "merge: cache hit" in capsys.readouterr().err


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    cfg = _cfg_file(tmp_path)
    np.savez(tmp_path / "two.npz", a=np.ones((4, 3)), b=np.ones((4, 3)))
    assert merge_features.main([str(cfg), "--input", str(tmp_path / "two.npz"), "--quiet"]) == 2
    assert "pass --key, one of a, b" in capsys.readouterr().err
    assert merge_features.main([str(cfg), "--input", str(tmp_path / "missing.npz"), "--quiet"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert merge_features.main([str(cfg), "--quiet"]) == 2       # no soft clusters for this config
    assert "run `python soft_cluster.py CONFIG` first" in capsys.readouterr().err
