"""The soft clustering's statistics kernels (exemplar lists, reservoir, pair tables, chunk sums,
stepwise EM) against plain numpy/Python references."""

from __future__ import annotations

import numpy as np
import pytest

from corpus_proximity.soft.kernels import rows as kernels
from corpus_proximity.soft.kernels import stats as stats_kernels


def test_stepwise_em_step_matches_the_numpy_formulas():
    from corpus_proximity.soft.vmf import StepwiseEM

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


def test_reservoir_keeps_the_smallest_keys_slot_by_slot_whatever_the_batches():
    from corpus_proximity.soft.stats import LdaStats

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
    half = LdaStats(9, d, n)  # float16 vectors, offered as their bits: kept as their exact float32
    half.add_sample(key, raw.astype(np.float16).view(np.uint16), cluster, weight)
    for name in LdaStats.ARRAYS:
        np.testing.assert_array_equal(getattr(one, name), getattr(many, name), err_msg=name)
        if name != "res_x":
            np.testing.assert_array_equal(getattr(one, name), getattr(half, name), err_msg=name)
    np.testing.assert_array_equal(half.res_x, one.res_x.astype(np.float16).astype(np.float32))
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


def test_exemplar_context_matches_a_plain_loop():
    from corpus_proximity.soft.stats import ChunkMemberships

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


def test_exemplar_lists_keep_the_largest_keys_earlier_first_whatever_the_batches():
    from corpus_proximity.soft.stats import ExemplarCandidates, Exemplars

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
                sel = sel[stats_kernels.best_per_cluster(cl[sel], key[sel], k, n)]
            ex.offer(cands(sel))
        for c in range(k):
            want = sorted(idx[cl == c], key=lambda i: (-key[i], i))[:n]
            assert ex.loc[c, :, 0].tolist() == want + [-1] * (n - len(want))
            filled = ex.loc[c, :, 0] >= 0
            np.testing.assert_array_equal(ex.key[c, filled], key[want])
            for a in (ex.value, ex.ctx_tokens, ex.ctx_values, ex.others_c, ex.others_v):
                assert (a[c][filled].reshape(filled.sum(), -1) == np.array(want)[:, None]).all()


def test_a_chunks_sums_add_as_numpy_and_leave_its_parts_zeroed():
    from corpus_proximity.soft.stats import ChunkParts, Exemplars, LdaStats, UsageStats
    from corpus_proximity.soft.stream import Phase2Stats

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
    stats_kernels.add_counts(counts, ids)
    np.testing.assert_array_equal(counts, np.arange(60) + np.bincount(ids, minlength=60))


def test_token_pairs_sum_as_one_bincount_across_growth_and_checkpoints():
    """The statistics' (token, cluster) table against plain sums of every chunk's pairs in order (the
    same additions in the same order: equal to the bit), both those a chunk spilled and those left in
    its own table, through several doublings of the table, a checkpoint taken over as it is and one
    in the sorted layout of earlier versions."""
    from corpus_proximity.soft.stats import ChunkParts, UsageStats

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
            h = kernels.pair_add(parts.pair_keys, parts.pair_w, key, v)
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
