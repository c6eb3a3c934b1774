"""The per-tile kernels of the soft clustering against plain numpy/float64 references."""

from __future__ import annotations

import numpy as np
import pytest

import soft_cluster_kernels as kernels
from vmf import EXP_SAFE_INV_T, Scorer, estep_sums, inverse_norms


def test_float16_rows_convert_exactly_for_every_bit_pattern():
    bits = np.arange(2 ** 16, dtype=np.uint16)
    halves = bits.view(np.float16).reshape(-1, 8)  # 8 halves a row
    rows = np.arange(len(halves))[::-1].copy()  # gathered in another order
    out = np.empty(halves.shape, dtype=np.float32)
    sq = np.empty(len(rows), dtype=np.float32)
    kernels.load_rows(halves, rows, out, sq)
    want = halves[rows].astype(np.float32)
    finite = np.isfinite(want).all(axis=1)
    assert finite.sum() == len(rows) - 2 * 128  # exponent 31: inf and NaN, both signs
    np.testing.assert_array_equal(out[finite].view(np.uint32), want[finite].view(np.uint32))  # -0, subnormals too
    np.testing.assert_allclose(sq[finite], (want[finite].astype(np.float64) ** 2).sum(axis=1), rtol=1e-6)
    assert not np.isfinite(sq[~finite]).any()  # NaN/inf reach the squared norm, which readers check


def test_float32_rows_gather_and_norms():
    x = np.random.default_rng(0).standard_normal((50, 33)).astype(np.float32)
    rows = np.array([3, 3, 49, 0])
    out, sq = np.empty((4, 33), dtype=np.float32), np.empty(4, dtype=np.float32)
    kernels.load_rows(x, rows, out, sq)
    np.testing.assert_array_equal(out, x[rows])
    np.testing.assert_allclose(sq, (x[rows].astype(np.float64) ** 2).sum(1), rtol=1e-6)


@pytest.mark.parametrize("inv_t", [1 / 0.05, 2 * EXP_SAFE_INV_T])  # without and with the row-max shift
def test_scores_and_estep_match_float64(inv_t):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((200, 24)) * rng.uniform(0.1, 5, (200, 1))).astype(np.float32)
    x[7] = 0.0  # a zero row: cos = 0 with every centre
    c = rng.standard_normal((10, 24))
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    inv = inverse_norms(np.linalg.norm(x, axis=1))
    norms = np.linalg.norm(x.astype(np.float64), axis=1)
    unit = x / np.where(norms > 0, norms, 1)[:, None]
    cos = unit @ c.T
    logits = cos * inv_t
    r = np.exp(logits - logits.max(1, keepdims=True))
    r /= r.sum(1, keepdims=True)
    lse = np.log(np.exp(logits - logits.max(1, keepdims=True)).mean(1)) + logits.max(1)
    scorer = Scorer(c.astype(np.float32), inv_t)
    assert scorer.shift == (inv_t > EXP_SAFE_INV_T)
    rx = np.full((10, 24), 0.5, dtype=np.float32)
    rsum, ll = estep_sums(x, inv, scorer, rx)
    np.testing.assert_allclose(rsum, r.sum(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(rx - 0.5, r.T @ unit, atol=2e-4)
    np.testing.assert_allclose(ll, lse.sum(), rtol=1e-5)


def test_tile_stats_match_numpy():
    rng = np.random.default_rng(2)
    n, k, d, L, m = 60, 5, 7, 12, 2
    x = rng.standard_normal((n, d)).astype(np.float32)
    sel = np.sort(rng.choice(10 * L, size=n, replace=False))  # flat positions, L per sequence
    rows = np.repeat(np.arange(n), m)
    clusters = rng.integers(k, size=n * m).astype(np.int32)
    values = rng.random(n * m).astype(np.float32)
    top, top_v = rng.integers(k, size=n).astype(np.int32), rng.random(n).astype(np.float32)
    key_lda, key_rand = rng.random(n), rng.random(n)
    top_floor, rand_floor = rng.random(k), rng.random(k)
    pos_hist, stored, hard = np.ones((k, L)), np.ones(k, dtype=np.int64), np.ones(k, dtype=np.int64)
    xsum, wsum = np.ones((k, d), dtype=np.float32), np.ones(k)
    li, ti, ri = (np.empty(s, dtype=np.int64) for s in (n, n * m, n))
    n_lda, n_top, n_rand = kernels.tile_stats(x, sel, rows, clusters, values, top, top_v, L, 0.5, key_lda, 0.3,
                                              key_rand, top_floor, rand_floor, pos_hist, stored, hard, xsum, wsum,
                                              li, ti, ri)
    want_hist = np.ones((k, L))
    np.add.at(want_hist, (clusters, sel[rows] % L), values)
    np.testing.assert_allclose(pos_hist, want_hist)
    np.testing.assert_array_equal(stored, 1 + np.bincount(clusters, minlength=k))
    np.testing.assert_array_equal(hard, 1 + np.bincount(top, minlength=k))
    conf = top_v >= 0.5
    want_x = np.ones((k, d))
    np.add.at(want_x, top[conf], top_v[conf, None] * x[conf])
    np.testing.assert_allclose(xsum, want_x, rtol=1e-5)
    np.testing.assert_allclose(wsum, 1 + np.bincount(top[conf], weights=top_v[conf], minlength=k))
    np.testing.assert_array_equal(li[:n_lda], np.flatnonzero(conf & (key_lda < 0.3)))
    np.testing.assert_array_equal(ti[:n_top], np.flatnonzero(values > top_floor[clusters]))
    np.testing.assert_array_equal(ri[:n_rand], np.flatnonzero(key_rand > rand_floor[top]))
