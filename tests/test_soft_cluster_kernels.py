"""The per-tile kernels of the soft clustering against plain numpy/float64 references."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

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
    from soft_cluster_stats import ChunkParts
    from soft_cluster_stream import TileBuffers, phase2_block

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


def test_stepwise_em_step_matches_the_numpy_formulas():
    from vmf import StepwiseEM

    rng = np.random.default_rng(10)
    k, d, workers, count, decay = 7, 33, 2, 500, 0.6
    c = rng.standard_normal((k, d)).astype(np.float32)
    em = StepwiseEM.start(c / np.linalg.norm(c, axis=1, keepdims=True))
    em.s[:] = rng.standard_normal((k, d))
    em.s[3] = 0.0  # a centre no point has reached yet
    em.n[:] = rng.random(k)
    em.t = 4
    rx_parts = rng.standard_normal((workers, k, d)).astype(np.float32)
    rx_parts[:, 3] = 0.0
    r = rng.random(k) * count
    s0, n0, c0 = em.s.copy(), em.n.copy(), em.centres.copy()
    eta = (4 + 2.0) ** -decay
    want_s = (1 - eta) * s0 + eta * (rx_parts.astype(np.float64).sum(axis=0) / count)
    want_n = (1 - eta) * n0 + eta * (r / count)
    norms = np.linalg.norm(want_s, axis=1)
    want_c = c0.copy()
    want_c[norms > 1e-12] = (want_s / np.maximum(norms, 1e-300)[:, None])[norms > 1e-12].astype(np.float32)
    got_eta, shift = em.update(r, rx_parts, count, decay)
    assert got_eta == eta and em.t == 5
    np.testing.assert_array_equal(em.s, want_s)  # the same operations, element by element
    np.testing.assert_array_equal(em.n, want_n)
    np.testing.assert_allclose(em.centres, want_c, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(em.centres[3], c0[3])
    want_shift = 1.0 - np.einsum("ij,ij->i", em.centres.astype(np.float64), c0.astype(np.float64))
    np.testing.assert_allclose(shift, want_shift, atol=1e-12)
    assert abs(shift[3]) < 1e-6 and shift.max() > 0.01
    assert not rx_parts.any()  # zeroed for the next chunk


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


def test_reservoir_keeps_the_smallest_keys_slot_by_slot_whatever_the_batches():
    from soft_cluster_stats import LdaStats

    rng = np.random.default_rng(8)
    n, d, total = 50, 3, 2000
    key = rng.random(total)
    raw = rng.standard_normal((total, d)).astype(np.float32)
    cluster, weight = rng.integers(0, 9, total).astype(np.int32), rng.random(total).astype(np.float32)
    one, many = LdaStats(9, d, n), LdaStats(9, d, n)
    one.add_sample(key, raw, cluster, weight)
    cuts = np.sort(rng.choice(np.arange(1, total), 40, replace=False))
    for a, b in zip([0, *cuts], [*cuts, total]):
        many.add_sample(key[a:b], raw[a:b], cluster[a:b], weight[a:b])
    for name in LdaStats.ARRAYS:
        np.testing.assert_array_equal(getattr(one, name), getattr(many, name), err_msg=name)
    kept = np.argsort(key)[:n]  # the n smallest keys, each with its own vector, cluster and weight
    order = np.argsort(one.res_key)
    np.testing.assert_array_equal(one.res_key[order], key[kept])
    np.testing.assert_array_equal(one.res_x[order], raw[kept])
    np.testing.assert_array_equal(one.res_c[order], cluster[kept])
    np.testing.assert_array_equal(one.res_w[order], weight[kept])
    assert one.threshold() == key[kept[-1]]
    heap, keys = one.res_heap, one.res_key  # a max-heap: no child above its parent
    assert all(keys[heap[i]] >= keys[heap[c]] for i in range(n) for c in (2 * i + 1, 2 * i + 2) if c < n)
    again = LdaStats(9, d, n)
    again.load_state({f"p.{a}": getattr(one, a).copy() for a in LdaStats.ARRAYS if a != "res_heap"}, "p.")  # no heap
    assert again.threshold() == one.threshold()
    more = rng.random(300) * key[kept[-1]]
    for s in (one, again):
        s.add_sample(more, raw[:300], cluster[:300], weight[:300])
    np.testing.assert_array_equal(np.sort(one.res_key), np.sort(again.res_key))


def test_pair_tables_spill_when_half_full_and_lose_nothing():
    from soft_cluster_stats import ChunkParts
    from soft_cluster_stream import TileBuffers, phase2_block

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


def test_exemplar_context_matches_a_plain_loop():
    from soft_cluster_stats import ChunkMemberships

    rng = np.random.default_rng(7)
    n_seq, L, k, window, top_m = 6, 10, 5, 2, 3
    valid = rng.random((n_seq, L)) < 0.8
    token_ids = rng.integers(0, 1000, size=(n_seq, L)).astype(np.int32)
    stored = {}  # (seq, pos) -> {cluster: membership}, up to top_m per position, some with none
    for s, p in zip(*np.nonzero(valid)):
        for c in np.sort(rng.choice(k, size=rng.integers(0, top_m + 1), replace=False)):
            stored.setdefault((int(s), int(p)), {})[int(c)] = float(rng.random())
    entries = sorted((s, p, c, v) for (s, p), cv in stored.items() for c, v in cv.items())
    seq, pos, cl, val = (np.array([e[j] for e in entries]) for j in range(4))
    cm = ChunkMemberships(0, seq.astype(np.int32), pos.astype(np.int32), cl.astype(np.int32), val.astype(np.float32),
                          token_ids, valid)
    ex = [(s, p, int(rng.integers(k))) for s, p in zip(*np.nonzero(valid))][::3] + [(0, 0, 1), (n_seq - 1, L - 1, 2)]
    es, ep, ec = (np.array([e[j] for e in ex]) for j in range(3))
    tokens, values, others_c, others_v = cm.context(es, ep, ec, window, top_m, k)
    for i, (s, p, c) in enumerate(ex):
        for o in range(2 * window + 1):
            q = p - window + o
            inside = 0 <= q < L and valid[s, q]
            assert tokens[i, o] == (token_ids[s, q] if inside else -1)
            assert values[i, o] == pytest.approx(stored.get((s, q), {}).get(c, 0.0) if inside else 0.0, abs=1e-6)
        here = sorted(stored.get((s, p), {}).items())
        assert others_c[i].tolist() == [a for a, _ in here] + [-1] * (top_m - len(here))
        np.testing.assert_allclose(others_v[i], [b for _, b in here] + [0.0] * (top_m - len(here)), rtol=1e-6)


def test_blas_runs_on_one_thread_in_the_workers_context_and_is_restored_after():
    from threadpoolctl import threadpool_info

    from soft_cluster_tiles import blas_single_threaded

    before = {lib["filepath"]: lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}
    assert before  # numpy's OpenBLAS at least; scipy's too, which the kernels load
    for _ in range(2):  # the second time with the controller made by the first
        with blas_single_threaded():
            inside = {lib["filepath"]: lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}
            assert inside == {path: 1 for path in before}
        assert {lib["filepath"]: lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"} == before


def test_exemplar_lists_keep_the_largest_keys_earlier_first_whatever_the_batches():
    from soft_cluster_stats import ExemplarCandidates, Exemplars

    rng = np.random.default_rng(3)
    k, n, w, m, total = 4, 5, 1, 2, 300
    cl = rng.integers(k, size=total).astype(np.int32)
    key = rng.integers(40, size=total).astype(np.float64)  # ties among the best too
    idx = np.arange(total)

    def cands(sel):  # every payload carries the candidate's index, to check it moves with its key
        return ExemplarCandidates(cl[sel], key[sel], np.stack([sel, sel, sel], axis=1).astype(np.int64),
                                  sel.astype(np.float32), np.repeat(sel[:, None], 2 * w + 1, 1).astype(np.int32),
                                  np.repeat(sel[:, None], 2 * w + 1, 1).astype(np.float32),
                                  np.repeat(sel[:, None], m, 1).astype(np.int32),
                                  np.repeat(sel[:, None], m, 1).astype(np.float32))

    cuts = np.sort(rng.choice(np.arange(1, total), 7, replace=False))
    for local_best in (False, True):
        ex = Exemplars(k, n, w, m)
        for sel in np.split(idx, cuts):
            if local_best:  # what a chunk passes on: each cluster's best of its own
                sel = sel[kernels.best_per_cluster(cl[sel], key[sel], k, n)]
            ex.offer(cands(sel))
        for c in range(k):
            want = sorted(idx[cl == c], key=lambda i: (-key[i], i))[:n]
            assert ex.loc[c, :, 0].tolist() == want + [-1] * (n - len(want))
            filled = ex.loc[c, :, 0] >= 0
            np.testing.assert_array_equal(ex.key[c, filled], key[want])
            for a in (ex.value, ex.ctx_tokens, ex.ctx_values, ex.others_c, ex.others_v):
                assert (a[c][filled].reshape(filled.sum(), -1) == np.array(want)[:, None]).all()


def test_a_chunks_sums_add_as_numpy_and_leave_its_parts_zeroed():
    from soft_cluster_stats import ChunkParts, Exemplars, LdaStats, UsageStats
    from soft_cluster_stream import Phase2Stats

    rng = np.random.default_rng(9)
    k, d, L = 6, 5, 7
    stats = Phase2Stats(UsageStats(k), Exemplars(k, 1, 1, 1), Exemplars(k, 1, 1, 1), LdaStats(k, d, 10))
    stats.usage.pos_hist = rng.random((k, L + 2))  # wider: an earlier chunk's sequences were longer
    for a in (stats.usage.soft, stats.lda.xsum, stats.lda.wsum):
        a[...] = rng.random(a.shape)
    stats.usage.hard[:], stats.usage.stored[:] = rng.integers(0, 9, k), rng.integers(0, 9, k)
    parts = ChunkParts.zeros(k, L, d)
    for a in (parts.acc, parts.pos_hist, parts.xsum, parts.wsum):
        a[...] = rng.random(a.shape)
    parts.hard[:], parts.stored[:] = rng.integers(0, 9, k), rng.integers(0, 9, k)
    tokens = rng.integers(0, 20, 30).astype(np.int32)
    before = {n: np.array(getattr(o, n)) for o in (stats.usage, stats.lda) for n in ("soft", "hard", "stored",
                                                                                     "pos_hist", "xsum", "wsum")
              if hasattr(o, n)}
    want = {"soft": before["soft"] + parts.acc[:k], "hard": before["hard"] + parts.hard,
            "stored": before["stored"] + parts.stored, "xsum": before["xsum"] + parts.xsum,
            "wsum": before["wsum"] + parts.wsum, "pos_hist": before["pos_hist"].copy()}
    want["pos_hist"][:, :L] += parts.pos_hist
    loglik = parts.acc[k] - len(tokens) * np.log(k)
    stats.add_chunk(parts, tokens)
    for name, w in want.items():
        got = getattr(stats.lda if name in ("xsum", "wsum") else stats.usage, name)
        np.testing.assert_array_equal(got, w, err_msg=name)  # the same additions: equal to the bit
    assert stats.usage.loglik == loglik and stats.usage.n_positions == len(tokens)
    np.testing.assert_array_equal(stats.usage.token_counts, np.bincount(tokens))
    for a in (parts.acc, parts.pos_hist, parts.xsum, parts.wsum, parts.hard, parts.stored):
        assert not a.any()


def test_add_counts_is_a_bincount_in_place():
    ids = np.random.default_rng(0).integers(50, size=1000).astype(np.int32)
    counts = np.arange(60, dtype=np.int64)
    kernels.add_counts(counts, ids)
    np.testing.assert_array_equal(counts, np.arange(60) + np.bincount(ids, minlength=60))


def test_token_pairs_sum_as_one_bincount_across_growth_and_checkpoints():
    """The statistics' (token, cluster) table against plain sums of every chunk's pairs in order (the
    same additions in the same order: equal to the bit), both those a chunk spilled and those left in
    its own table, through several doublings of the table, a checkpoint taken over as it is and one
    in the sorted layout of earlier versions."""
    from soft_cluster_stats import ChunkParts, UsageStats

    rng = np.random.default_rng(5)
    chunks = [(rng.integers(0, 40_000 * (i + 1), size=30_000), rng.random(30_000)) for i in range(6)]
    for keys, _ in chunks:  # repeats within the chunk's own table too (it holds up to 2^13 distinct keys)
        keys[15_000:] = keys[15_000:] % 6000 + 20_000 * np.arange(15_000) % 3
    usage = UsageStats(64)
    sizes = []
    for i, (keys, w) in enumerate(chunks):
        if i == 3:  # resume from a checkpoint as this version saves it
            state = {name: np.array(v) for name, v in usage.state("u.").items()}
            usage = UsageStats(64)
            usage.load_state(state, "u.")
        if i == 4:  # and as earlier versions saved it: sorted unique pairs
            old = UsageStats(64)
            state = {name: np.array(v) for name, v in usage.state("u.").items()}
            state["u.pair_keys"], state["u.pair_weights"] = usage.pairs()
            old.load_state(state, "u.")
            usage = old
        parts = ChunkParts.zeros(64, 1, 1, 2 ** 14)  # the sums are not under test here
        half = len(keys) // 2  # spilled, then the rest still in the chunk's own table
        parts.spilled = [(keys[:half], w[:half])]
        for key, v in zip(keys[half:].tolist(), w[half:].tolist()):
            h = kernels._pair_add(parts.pair_keys, parts.pair_w, key, v)
            if h >= 0:
                parts.used[parts.fill[0]] = h
                parts.fill[0] += 1
        usage.take_pairs(parts)
        assert parts.fill[0] == 0 and (parts.pair_keys == -1).all() and not parts.spilled  # emptied
        sizes.append(len(usage.pair_keys))
    assert len(set(sizes)) >= 3  # it grew
    want = {}  # the same additions in the same order: each spilled pair, then each of the chunk's table's sums
    for keys, w in chunks:
        half = len(keys) // 2
        for key, v in zip(keys[:half].tolist(), w[:half].tolist()):
            want[key] = want.get(key, 0.0) + v
        table = {}
        for key, v in zip(keys[half:].tolist(), w[half:].tolist()):
            table[key] = table.get(key, 0.0) + v
        for key, v in table.items():  # in the order the keys took their slots
            want[key] = want.get(key, 0.0) + v
    want_keys = np.array(sorted(want))
    keys, w = usage.pairs()
    np.testing.assert_array_equal(keys, want_keys)
    np.testing.assert_array_equal(w, [want[q] for q in want_keys.tolist()])
    assert usage._n_pairs == len(want_keys) and 2 * len(want_keys) <= len(usage.pair_keys)
