"""numba kernels of the soft clustering's statistics kept across chunks: a chunk's exemplar
candidates with their contexts (run by the worker that ran the chunk), and what the main thread
does as each chunk lands (the inserts into the exemplar lists, the LDA reservoir's max-heap, the
(token, cluster) table merges, the chunk's dense sums into the totals), plus phase 1's
stepwise-EM step. The per-tile kernels are in ``kernels.rows``, with the hash table both
modules fill (:func:`soft_cluster_kernels.pair_add`).

Each is tested against a plain numpy or Python version of itself; each replaced a chain of numpy
temporaries, or a Python loop per candidate, that the workers waited on.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from corpus_proximity.soft.kernels.rows import AHEAD, pair_add, prefetch, put_row, slot_of


@njit(cache=True, nogil=True, inline="always")
def _entry_at(e_seq, e_pos, e_cl, seq_len, k, want):
    """The first of a chunk's entries (sorted by (sequence, position, cluster)) whose key
    (sequence * seq_len + position) * k + cluster is >= ``want``: a binary search that computes
    the keys it looks at, so no key table is made per chunk."""
    lo, hi = 0, len(e_seq)
    while lo < hi:
        mid = (lo + hi) >> 1
        if (np.int64(e_seq[mid]) * seq_len + e_pos[mid]) * k + e_cl[mid] < want:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True, nogil=True)
def exemplar_context(token_ids, valid, e_seq, e_pos, e_cl, e_val, seq, pos, cl, k, tokens, values, others_c, others_v):
    """Contexts of exemplars at (``seq``, ``pos``) of one chunk, for clusters ``cl``: ``tokens`` /
    ``values`` [n, 2 window + 1] = the tokens around them (-1 outside the sequence or on unassigned
    positions) and cluster cl's stored membership there (0 if none); ``others_c`` / ``others_v``
    [n, top_m] = every stored (cluster, membership) at the exemplar's own position (-1 / 0 pad).
    The chunk's entries: ``e_seq``, ``e_pos``, ``e_cl``, ``e_val``, sorted by (sequence, position, cluster)."""
    n, width = tokens.shape
    window = width // 2
    seq_len = np.int64(token_ids.shape[1])
    nnz = len(e_seq)
    for e in range(n):
        s, p0 = np.int64(seq[e]), np.int64(pos[e])
        for o in range(width):
            p = p0 - window + o
            if p < 0 or p >= seq_len or not valid[s, p]:
                tokens[e, o] = -1
                values[e, o] = 0.0
                continue
            tokens[e, o] = token_ids[s, p]
            a = _entry_at(e_seq, e_pos, e_cl, seq_len, k, (s * seq_len + p) * k + cl[e])
            hit = a < nnz and e_seq[a] == s and e_pos[a] == p and e_cl[a] == cl[e]
            values[e, o] = e_val[a] if hit else np.float32(0.0)
        a = _entry_at(e_seq, e_pos, e_cl, seq_len, k, (s * seq_len + p0) * k)
        for j in range(others_c.shape[1]):
            if a + j < nnz and e_seq[a + j] == s and e_pos[a + j] == p0:
                others_c[e, j] = e_cl[a + j]
                others_v[e, j] = e_val[a + j]
            else:
                others_c[e, j] = -1
                others_v[e, j] = 0.0


@njit(cache=True, nogil=True, inline="always")
def _slot(row, v):
    """Where key v enters a row of keys sorted descending: after every key >= v (ties: the earlier
    first), or -1 if it does not beat the last."""
    n = len(row)
    if not v > row[n - 1]:
        return -1
    s = n - 1
    while s > 0 and row[s - 1] < v:
        s -= 1
    return s


@njit(cache=True, nogil=True, inline="always")
def _make_room(a, c, s):
    """Shift row c of a per-cluster list (a [k, n, ...]) down by one from slot s; the last drops out."""
    for t in range(a.shape[1] - 1, s, -1):
        a[c, t] = a[c, t - 1]


@njit(cache=True, nogil=True)
def best_per_cluster(cluster, key, k, n):
    """Indices, ascending, of the candidates (``cluster``, ``key``, in order of arrival) that are among
    their cluster's ``n`` largest keys (ties: the earlier first): the only ones that can still be
    among the n largest once more candidates are added after them."""
    top_key = np.full((k, n), -np.inf)
    top_idx = np.full((k, n), -1, dtype=np.int64)
    for i in range(len(key)):
        c = cluster[i]
        s = _slot(top_key[c], key[i])
        if s < 0:
            continue
        _make_room(top_key, c, s)
        _make_room(top_idx, c, s)
        top_key[c, s] = key[i]
        top_idx[c, s] = i
    out = top_idx.ravel()
    out = out[out >= 0]
    out.sort()
    return out


@njit(cache=True, nogil=True)
def exemplar_candidates(chunk, seq, pos, cluster, key, value, n, k, token_ids, valid, e_seq, e_pos, e_cl, e_val, width,
                        top_m):
    """A chunk's exemplar candidates for lists of ``n`` per cluster, in one call: of the candidates
    (``seq``, ``pos``, ``cluster``, ``key``, membership ``value``, in order of arrival) those among
    their cluster's n largest keys (:func:`best_per_cluster`), with their location (``chunk``,
    sequence, position) and context (:func:`exemplar_context`, windows of ``width`` tokens).
    Returns (cluster, key, loc, value, ctx_tokens, ctx_values, others_c, others_v)."""
    keep = best_per_cluster(cluster, key, k, n) if n > 0 and len(key) > 0 else np.zeros(0, dtype=np.int64)
    c = len(keep)
    cl, ky, va = np.empty(c, dtype=np.int32), np.empty(c), np.empty(c, dtype=np.float32)
    loc = np.empty((c, 3), dtype=np.int64)
    for a in range(c):
        i = keep[a]
        cl[a], ky[a], va[a] = cluster[i], key[i], value[i]
        loc[a, 0], loc[a, 1], loc[a, 2] = chunk, seq[i], pos[i]
    tokens, values = np.empty((c, width), dtype=np.int32), np.empty((c, width), dtype=np.float32)
    others_c, others_v = np.empty((c, top_m), dtype=np.int32), np.empty((c, top_m), dtype=np.float32)
    exemplar_context(token_ids, valid, e_seq, e_pos, e_cl, e_val, loc[:, 1], loc[:, 2], cl, k, tokens, values,
                     others_c, others_v)
    return cl, ky, loc, va, tokens, values, others_c, others_v


@njit(cache=True, nogil=True)
def insert_exemplars(key, loc, value, ctx_tokens, ctx_values, others_c, others_v, c_cluster, c_key, c_loc, c_value,
                     c_ctx_tokens, c_ctx_values, c_others_c, c_others_v):
    """Offer candidates (``c_*``, in order of arrival) to per-cluster lists kept sorted by ``key``,
    descending (every table [k, n, ...]): each one that beats its cluster's last key goes in after the
    keys >= its own, with its location, membership and context, and the last one drops out. The
    lists then hold the n largest keys ever offered (ties: the earlier first), whatever the batches."""
    for i in range(len(c_key)):
        c = c_cluster[i]
        s = _slot(key[c], c_key[i])
        if s < 0:
            continue
        _make_room(key, c, s)
        _make_room(value, c, s)
        _make_room(loc, c, s)
        _make_room(ctx_tokens, c, s)
        _make_room(ctx_values, c, s)
        _make_room(others_c, c, s)
        _make_room(others_v, c, s)
        key[c, s] = c_key[i]
        value[c, s] = c_value[i]
        loc[c, s] = c_loc[i]
        ctx_tokens[c, s] = c_ctx_tokens[i]
        ctx_values[c, s] = c_ctx_values[i]
        others_c[c, s] = c_others_c[i]
        others_v[c, s] = c_others_v[i]


@njit(cache=True, nogil=True)
def stepwise_em_step(s, n, centres, rx_parts, r, count, eta, shift):
    """One stepwise-EM step in place, in one pass over [k, d] (:meth:`vmf.StepwiseEM.update`): with
    the chunk's mean statistics r / count and (sum over workers of the float32 ``rx_parts``) /
    count, s <- (1 - eta) s + eta r̄x, n <- (1 - eta) n + eta r̄, each centre with |s| > 1e-12 <-
    s / |s| (float32; the others keep their place), shift[c] = 1 - cos(old, new) in float64;
    ``rx_parts`` zeroed for the next chunk."""
    k, d = s.shape
    a = 1.0 - eta
    for c in range(k):
        n[c] = a * n[c] + eta * (r[c] / count)
        ss = 0.0
        for j in range(d):
            t = 0.0
            for w in range(rx_parts.shape[0]):
                t += np.float64(rx_parts[w, c, j])
                rx_parts[w, c, j] = 0.0
            v = a * s[c, j] + eta * (t / count)
            s[c, j] = v
            ss += v * v
        norm = np.sqrt(ss)
        dot = 0.0
        for j in range(d):
            old = np.float64(centres[c, j])
            if norm > 1e-12:
                centres[c, j] = np.float32(s[c, j] / norm)
            dot += np.float64(centres[c, j]) * old
        shift[c] = 1.0 - dot


@njit(cache=True, nogil=True)
def sift_down(heap, key, i):
    """Restore the max-heap ``heap`` (slots ordered by ``key[slot]``, the largest first) below node i."""
    n = len(heap)
    s = heap[i]
    v = key[s]
    while True:
        c = 2 * i + 1
        if c >= n:
            break
        if c + 1 < n and key[heap[c + 1]] > key[heap[c]]:
            c += 1
        if not key[heap[c]] > v:
            break
        heap[i] = heap[c]
        i = c
    heap[i] = s


@njit(cache=True, nogil=True)
def heapify(heap, key):
    """``heap`` = every slot of ``key``, as a max-heap by key."""
    for i in range(len(heap)):
        heap[i] = i
    for i in range(len(heap) // 2 - 1, -1, -1):
        sift_down(heap, key, i)


@njit(cache=True, nogil=True)
def reservoir_offer(res_key, res_x, res_c, res_w, heap, key, raw, cluster, weight):
    """Offer candidates, in order, to a reservoir that keeps the smallest keys: each one whose key is
    below the reservoir's largest (``heap``: its slots as a max-heap by key) takes that slot, with its
    vector (``raw``: float32, or float16 as uint16 bits), cluster and weight. The reservoir then holds the smallest of all the keys ever offered,
    whatever the batches. Returns how many were taken."""
    taken = 0
    if len(heap) == 0:
        return taken
    for i in range(len(key)):
        s = heap[0]
        if not key[i] < res_key[s]:
            continue
        res_key[s] = key[i]
        put_row(res_x, s, raw, i)
        res_c[s] = cluster[i]
        res_w[s] = weight[i]
        sift_down(heap, res_key, 0)
        taken += 1
    return taken


@njit(cache=True, nogil=True)
def add_counts(counts, ids):
    """counts[ids[i]] += 1 for every i (ids >= 0, < len(counts))."""
    for i in range(len(ids)):
        counts[ids[i]] += 1


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def add_chunk_sums(soft, hard, stored, pos_hist, xsum, wsum, acc, p_hard, p_stored, p_pos_hist, p_xsum, p_wsum):
    """A chunk's dense sums (:class:`soft_cluster_stats.ChunkParts`) into the statistics, each
    element added as numpy's ``+=`` would, and zeroed for reuse: memberships acc[:k] into soft (all
    of acc zeroed: the caller takes acc[k] first), counts, the position histogram (over the
    chunk's seq_len columns) and the LDA sums."""
    k, L = p_pos_hist.shape
    for c in range(k):
        soft[c] += acc[c]
        hard[c] += p_hard[c]
        stored[c] += p_stored[c]
        wsum[c] += p_wsum[c]
        acc[c] = 0.0
        p_hard[c] = 0
        p_stored[c] = 0
        p_wsum[c] = 0.0
        for j in range(L):
            pos_hist[c, j] += p_pos_hist[c, j]
            p_pos_hist[c, j] = 0.0
        for j in range(xsum.shape[1]):
            xsum[c, j] += p_xsum[c, j]
            p_xsum[c, j] = 0.0
    acc[k] = 0.0


@njit(cache=True, nogil=True)
def merge_table(keys, weights, p_keys, p_w, used, n_used):
    """A chunk's pair table (its first ``n_used`` used slots ``used``, in the order they were taken)
    into the table ``keys`` / ``weights`` (as :func:`merge_pairs`; the caller keeps it at most half
    full), emptying the chunk's table as it goes. Returns how many keys were new."""
    added = 0
    mask = len(keys) - 1
    for u in range(n_used):
        if u + AHEAD < n_used:
            h = slot_of(p_keys[used[u + AHEAD]], mask)
            prefetch(keys, h)
            prefetch(weights, h)
        s = used[u]
        if pair_add(keys, weights, p_keys[s], p_w[s]) >= 0:
            added += 1
        p_keys[s] = -1
    return added


@njit(cache=True, nogil=True)
def merge_pairs(keys, weights, new_keys, new_weights):
    """Add (key, weight) pairs, in order, into the hash table ``keys`` / ``weights`` (as
    :func:`soft_cluster_kernels.pair_add`; the caller keeps it at most half full), skipping keys
    < 0 (so another table's arrays, empty slots and all, can be poured in); returns how many keys
    were new."""
    added = 0
    mask = len(keys) - 1
    for i in range(len(new_keys)):
        if i + AHEAD < len(new_keys):
            h = slot_of(new_keys[i + AHEAD], mask)
            prefetch(keys, h)
            prefetch(weights, h)
        if new_keys[i] >= 0 and pair_add(keys, weights, new_keys[i], new_weights[i]) >= 0:
            added += 1
    return added
