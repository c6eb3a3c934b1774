"""The per-tile kernels of the soft clustering against plain numpy/float64 references."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from corpus_proximity.soft.kernels import rows as kernels
from corpus_proximity.soft.vmf import EXP_SAFE_INV_T, Scorer, estep_sums, inverse_norms


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


@njit
def _convert_all(bits, hardware):
    out = np.empty(len(bits), dtype=np.float32)
    for i in range(len(bits)):
        out[i] = kernels.f32_from_half_hw(bits[i]) if hardware else kernels.f32_from_half_sw(bits[i])
    return out


@pytest.mark.parametrize("hardware", [False, True])
def test_both_float16_conversions_are_exact(hardware):
    """The CPU's instruction where it has one, the bit construction elsewhere (also checked here,
    where the instruction is what load_rows uses)."""
    if hardware and not kernels.HARDWARE_HALF:
        pytest.skip("this CPU has no float16 conversion instruction")
    bits = np.arange(2 ** 16, dtype=np.uint16)
    got, want = _convert_all(bits, hardware), bits.view(np.float16).astype(np.float32)
    nan = np.isnan(want)
    assert nan.sum() == 2 * 1023 and np.isnan(got[nan]).all()
    np.testing.assert_array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))  # inf, -0, subnormals


def test_float32_rows_gather_and_norms():
    x = np.random.default_rng(0).standard_normal((50, 33)).astype(np.float32)
    rows = np.array([3, 3, 49, 0])
    out, sq = np.empty((4, 33), dtype=np.float32), np.empty(4, dtype=np.float32)
    kernels.load_rows(x, rows, out, sq)
    np.testing.assert_array_equal(out, x[rows])
    np.testing.assert_allclose(sq, (x[rows].astype(np.float64) ** 2).sum(1), rtol=1e-6)


def test_exp_rows_match_float64_exp():
    rng = np.random.default_rng(4)
    e = rng.uniform(-1.2, 1.2, (300, 37)).astype(np.float32)
    scale = rng.uniform(0.5, 75, 300).astype(np.float32)
    e[0, :6] = [-100.0, -1.0, 0.0, 1.0, 1.1, 1.2]  # scaled by 80: from below e^-87.34 (-> 0) to above e^88.37 (-> inf)
    scale[0] = 80.0
    x = (e * scale[:, None]).astype(np.float64)
    got = e.copy()
    kernels.exp_rows(got, scale, np.empty(37, dtype=np.int32))
    normal = (x >= -87.33654) & (x <= 88.37626)
    assert normal.mean() > 0.9 and (~normal).sum() >= 2
    np.testing.assert_allclose(got[normal], np.exp(x[normal]), rtol=2e-7)  # float32 rounding of e^x: 6e-8
    assert (got[x < -87.34] == 0).all() and np.isinf(got[x > 88.38]).all()
    np.testing.assert_allclose(got[0, 1:5], np.exp([-80.0, 0.0, 80.0, 88.0]), rtol=2e-7)


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


# rows with 1, 2..m, m + 1 and more memberships above the threshold: every path of the selection


@pytest.mark.parametrize("t, thr, m, dtype", [(0.2, 0.05, 3, np.float16), (0.05, 0.3, 2, np.float32),
                                              (1.0, 0.001, 40, np.float16),
                                              (1 / (2 * EXP_SAFE_INV_T), 0.05, 4, np.float32)])  # the row-max shift
def test_phase2_block_matches_numpy(t, thr, m, dtype):
    from corpus_proximity.soft.stats import ChunkParts
    from corpus_proximity.soft.stream import TileBuffers, phase2_block

    rng = np.random.default_rng(5)
    n, k, d, L, base = 300, 40, 12, 16, 32
    sel = np.sort(rng.choice(np.arange(base, 30 * L), size=n, replace=False))  # flat positions, L per sequence
    block = np.full((30 * L - base, d), np.nan, dtype=dtype)  # the block starts at flat position base
    block[sel - base] = rng.standard_normal((n, d)) * rng.uniform(0.5, 3, (n, 1))  # unread rows: NaN
    x = block[sel - base].astype(np.float32)
    c = rng.standard_normal((k, d)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    tokens = rng.integers(0, 7, size=30 * L).astype(np.int32)  # few token ids: (token, cluster) pairs recur
    top_floor, rand_floor = rng.random(k), rng.random(k)
    bases = (int(rng.integers(2 ** 63)), int(rng.integers(2 ** 63)))
    key_lda, key_rand = kernels.position_keys(bases[0], sel), kernels.position_keys(bases[1], sel)
    parts = ChunkParts.zeros(k, L, d)
    (seq, pos, cls, vals), top, top_v, (li, lk, ti, ri, rk) = phase2_block(  # sub-tiles of 64 rows: 5 of them
        block, sel, base, Scorer(c, 1 / t), tokens, L, thr, m, 0.5, bases, (0.3, top_floor, rand_floor),
        parts, TileBuffers(64, d, k, min(m, k)))
    flat = seq.astype(np.int64) * L + pos
    rows = np.searchsorted(sel, flat)
    np.testing.assert_array_equal(sel[rows], flat)  # every entry at a selected position

    unit = x.astype(np.float64) / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    logits = unit @ c.T.astype(np.float64) / t
    r = np.exp(logits - logits.max(1, keepdims=True))
    r /= r.sum(1, keepdims=True)
    want = [(i, j) for i in range(n) for j in np.sort(np.argsort(-r[i])[:m]) if r[i, j] >= thr]
    assert list(zip(rows.tolist(), cls.tolist())) == want  # top m above the threshold, by (row, cluster)
    assert np.bincount(rows, minlength=n).max() > 1  # rows with several entries were tested
    np.testing.assert_allclose(vals, [r[i, j] for i, j in want], rtol=1e-4)
    np.testing.assert_array_equal(top, r.argmax(1))
    np.testing.assert_allclose(top_v, r.max(1), rtol=1e-4)
    np.testing.assert_allclose(parts.acc[:k], r.sum(0), rtol=1e-4)
    lse = np.log(np.exp(logits - logits.max(1, keepdims=True)).mean(1)) + logits.max(1)
    np.testing.assert_allclose(parts.acc[k] - n * np.log(k), lse.sum(), rtol=1e-5)

    want_hist = np.zeros((k, L))
    np.add.at(want_hist, (cls, sel[rows] % L), vals)
    np.testing.assert_allclose(parts.pos_hist, want_hist, rtol=1e-6)
    np.testing.assert_array_equal(parts.stored, np.bincount(cls, minlength=k))
    np.testing.assert_array_equal(parts.hard, np.bincount(top, minlength=k))
    conf = top_v >= 0.5
    want_x = np.zeros((k, d))
    np.add.at(want_x, top[conf], top_v[conf, None] * x[conf])
    np.testing.assert_allclose(parts.xsum, want_x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(parts.wsum, np.bincount(top[conf], weights=top_v[conf], minlength=k), rtol=1e-6)
    np.testing.assert_array_equal(li, np.flatnonzero(conf & (key_lda < 0.3)))
    np.testing.assert_array_equal(lk, key_lda[li])
    np.testing.assert_array_equal(ti, np.flatnonzero(vals > top_floor[cls]))
    np.testing.assert_array_equal(ri, np.flatnonzero(key_rand > rand_floor[top]))
    np.testing.assert_array_equal(rk, key_rand[ri])
    keys, weights = (np.concatenate(a) for a in zip(*parts.pairs()))
    assert len(np.unique(keys)) == len(keys)  # one slot per pair
    want_k, inv = np.unique(tokens[sel[rows]].astype(np.int64) * k + cls, return_inverse=True)
    order = np.argsort(keys)
    np.testing.assert_array_equal(keys[order], want_k)
    np.testing.assert_allclose(weights[order], np.bincount(inv, weights=vals), rtol=1e-6)
    assert parts.fill[0] == 0 and (parts.pair_keys == -1).all()  # taken: the table is empty again


def test_position_keys_are_uniform_independent_and_depend_on_the_position_only():
    from scipy import stats

    flat = np.arange(200_000)
    a, b, c = (kernels.position_keys(kernels.key_base(0, s, i), flat) for s, i in ((2, 0), (3, 0), (2, 1)))
    d = kernels.position_keys(kernels.key_base(1, 2, 0), flat)  # another seed
    for keys in (a, b, c, d):
        assert keys.min() >= 0.0 and keys.max() < 1.0
        assert stats.kstest(keys, "uniform").pvalue > 1e-4
    for u, v in ((a, b), (a, c), (a, d), (a[:-1], a[1:])):  # streams, chunks, seeds, neighbours
        assert abs(np.corrcoef(u, v)[0, 1]) < 0.01
    some = np.sort(np.random.default_rng(0).choice(flat, 500, replace=False))
    np.testing.assert_array_equal(kernels.position_keys(kernels.key_base(0, 2, 0), some), a[some])


def test_pair_tables_spill_when_half_full_and_lose_nothing():
    from corpus_proximity.soft.stats import ChunkParts
    from corpus_proximity.soft.stream import TileBuffers, phase2_block

    rng = np.random.default_rng(6)
    k, d, L, m, n = 8, 4, 10, 3, 120
    parts = ChunkParts.zeros(k, L, d, slots=64)  # 32 pairs before a spill; a 10-row sub-tile adds up to 30
    c = np.eye(k, d, dtype=np.float32)
    c[d:] = -np.eye(k - d, d)
    tokens = rng.integers(0, 50, size=40 * L).astype(np.int32)
    sel = np.sort(rng.choice(40 * L, size=n, replace=False))
    block = rng.standard_normal((40 * L, d)).astype(np.float32)
    (seq, pos, cls, vals), *_ = phase2_block(block, sel, 0, Scorer(c, 2.0), tokens, L, 0.01, m, 0.5, (1, 2),
                                              (0.0, np.ones(k), np.ones(k)), parts, TileBuffers(10, d, k, m))
    rows = np.searchsorted(sel, seq.astype(np.int64) * L + pos)
    assert np.bincount(rows).max() == m  # sub-tiles of up to 30 pairs
    want = {}
    for key, v in zip(tokens[sel[rows]].astype(np.int64) * k + cls, vals):
        want[int(key)] = want.get(int(key), 0.0) + float(v)
    assert parts.fill[0] <= 32 and len(parts.spilled) >= 3
    with pytest.raises(ValueError, match="pair_slots"):  # a sub-tile that could overfill even an empty table
        phase2_block(block, sel, 0, Scorer(c, 2.0), tokens, L, 0.01, m, 0.5, (1, 2), (0.0, np.ones(k), np.ones(k)),
                     parts, TileBuffers(11, d, k, m))
    got = {}
    for keys, weights in parts.pairs():
        for key, v in zip(keys.tolist(), weights.tolist()):
            got[key] = got.get(key, 0.0) + v
    assert got.keys() == want.keys()
    np.testing.assert_allclose([got[q] for q in want], list(want.values()), rtol=1e-6)


def test_blas_runs_on_one_thread_in_the_workers_context_and_is_restored_after():
    from threadpoolctl import threadpool_info

    from corpus_proximity.soft.tiles import blas_single_threaded

    before = {lib["filepath"]: lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}
    assert before  # numpy's OpenBLAS at least; scipy's too, which the kernels load
    for _ in range(2):  # the second time with the controller made by the first
        with blas_single_threaded():
            inside = {lib["filepath"]: lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}
            assert inside == {path: 1 for path in before}
        assert {lib["filepath"]: lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"} == before
