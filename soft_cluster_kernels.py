"""numba kernels of the soft clustering's per-row passes over one tile.

numpy needs several full passes over a block (gather, float16 -> float32 cast, squared norms,
divide; argmax, subtract, scale, sum, compare, nonzero, sort) where one loop over a tile that
stays in cache does. numpy's float16 cast alone (~2 ns per element) cost more than the matrix
products at k = 64, and ``nonzero`` more than the product at k = 512. The kernels are
single-threaded and release the GIL: ``soft_cluster_tiles`` runs one per worker thread.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_F16_MAGIC = np.float32(2.0 ** 112)


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def load_rows_f16(bits, rows, out, out_bits, sq):
    """out[i] = float32(x[rows[i]]) and sq[i] = |out[i]|^2, from float16 rows given as their uint16
    ``bits``; ``out_bits`` is ``out`` viewed as uint32.

    numba has no float16, so the cast is the exact bit construction: the half's exponent and
    mantissa shifted into a float32 (exponent bits 31 -> 255 for inf/NaN, which then propagate into
    sq) and multiplied by 2^112, which rebiases normals and turns subnormals into exact values."""
    m = len(rows)
    d = bits.shape[1]
    for i in range(m):
        r = rows[i]
        for j in range(d):
            h = np.uint32(bits[r, j])
            a = h & np.uint32(0x7FFF)
            b = (a << np.uint32(13)) | ((h & np.uint32(0x8000)) << np.uint32(16))
            if a >= np.uint32(0x7C00):
                b |= np.uint32(0x7F800000)
            out_bits[i, j] = b
        s = np.float32(0.0)
        for j in range(d):
            v = out[i, j] * _F16_MAGIC
            out[i, j] = v
            s += v * v
        sq[i] = s


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def load_rows_f32(x, rows, out, sq):
    """As :func:`load_rows_f16` for float32 rows."""
    m = len(rows)
    d = x.shape[1]
    for i in range(m):
        r = rows[i]
        s = np.float32(0.0)
        for j in range(d):
            v = x[r, j]
            out[i, j] = v
            s += v * v
        sq[i] = s


def load_rows(x: np.ndarray, rows: np.ndarray, out: np.ndarray, sq: np.ndarray) -> None:
    """Gather rows ``rows`` of the float16/float32 matrix ``x`` into ``out`` as float32, their
    squared norms into ``sq`` (NaN/inf there if a row holds any). Rows are not normalised here:
    the scores divide the [rows, k] products by the norms instead, a pass over k, not d, values."""
    if x.dtype == np.float16:
        load_rows_f16(x.view(np.uint16), rows, out, out.view(np.uint32), sq)
    else:
        load_rows_f32(x, rows, out, sq)


_LOG2E = np.float32(1.4426950408889634)
_LN2_HI, _LN2_LO = np.float32(0.693359375), np.float32(-2.12194440e-4)
_EXP_P = tuple(np.float32(v) for v in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
                                         1.6666665459e-1, 5.0000001201e-1))
_EXP_LO = np.float32(-87.33654)  # exp of anything below is under float32's smallest normal: 0 here
_EXP_HI = np.float32(88.37626)  # 127.5 ln 2: above, 2^m would need exponent bits 255 (float32 ends at 88.72)


@njit(cache=True, nogil=True, fastmath={"contract"})
def exp_rows(e, row_scale, bits):
    """In place: e[i, j] = exp(e[i, j] * row_scale[i]) in float32 (0 below e^-87.34, inf above e^88.37);
    ``bits``: int32 scratch of length k.

    numpy's exp is a pass of its own after the scaling pass, and numba's calls libm once per value
    (there is no SVML here). This is Cephes' expf, which vectorises: x = m ln 2 + r with
    |r| <= ln 2 / 2, a degree-7 polynomial for e^r (within 1e-7 relative of float64's exp), and
    2^m built from its exponent bits."""
    n, k = e.shape
    p0, p1, p2, p3, p4, p5 = _EXP_P
    scale = bits.view(np.float32)
    for i in range(n):
        f = row_scale[i]
        for j in range(k):
            y = e[i, j] * f
            x = min(max(y, _EXP_LO), _EXP_HI)
            m = np.floor(x * _LOG2E + np.float32(0.5))
            r = x - m * _LN2_HI - m * _LN2_LO
            p = ((((p0 * r + p1) * r + p2) * r + p3) * r + p4) * r + p5
            v = p * r * r + r + np.float32(1.0)
            e[i, j] = v if y >= _EXP_LO else np.float32(0.0)
            if y > _EXP_HI:
                e[i, j] = np.inf
            bits[j] = (np.int32(m) + np.int32(127)) << np.int32(23)
        for j in range(k):
            e[i, j] *= scale[j]


@njit(cache=True, nogil=True)
def shift_rows(e, inv_t, smax):
    """In place: e[i] = (e[i] - max_j e[i, j]) * inv_t; smax[i] = the max."""
    n, k = e.shape
    for i in range(n):
        m = e[i, 0]
        for j in range(1, k):
            m = max(m, e[i, j])
        smax[i] = m
        for j in range(k):
            e[i, j] = (e[i, j] - m) * inv_t


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"}, inline="always")
def _normalise_row(e, i, col_sum):
    """z = sum_j e[i, j] (float64) and col_sum += e[i] / z; returns z."""
    k = e.shape[1]
    s = 0.0
    for j in range(k):
        s += e[i, j]
    inv = np.float32(1.0 / s)
    for j in range(k):
        col_sum[j] += e[i, j] * inv
    return s


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def normalise_rows(e, z, row_scale, col_sum):
    """In place, rows of e = exp(scaled similarities): z[i] = sum_j e[i, j] (float64), memberships
    m[i, j] = e[i, j] / z[i] added to col_sum[j], e[i, j] = m[i, j] * row_scale[i]."""
    for i in range(e.shape[0]):
        s = _normalise_row(e, i, col_sum)
        z[i] = s
        f = np.float32(1.0 / s) * row_scale[i]
        for j in range(e.shape[1]):
            e[i, j] *= f


@njit(cache=True, nogil=True, inline="always")
def _select_row(e, i, thr, top_m, buf_c, buf_v):
    """Row i of e: the (at most ``top_m``) largest values >= thr into buf_c / buf_v ordered by
    cluster; returns (count, argmax, max)."""
    k = e.shape[1]
    cnt = 0
    best = e[i, 0]
    arg = 0
    for j in range(k):
        v = e[i, j]
        if v > best:
            best = v
            arg = j
        if v >= thr:
            if cnt < top_m:
                pos = cnt
                cnt += 1
            elif v > buf_v[cnt - 1]:
                pos = cnt - 1
            else:
                continue
            while pos > 0 and buf_v[pos - 1] < v:  # keep the buffer sorted by value, descending
                buf_v[pos] = buf_v[pos - 1]
                buf_c[pos] = buf_c[pos - 1]
                pos -= 1
            buf_v[pos] = v
            buf_c[pos] = j
    for a in range(1, cnt):  # then by cluster, as the files store them
        c, v = buf_c[a], buf_v[a]
        b = a
        while b > 0 and buf_c[b - 1] > c:
            buf_c[b] = buf_c[b - 1]
            buf_v[b] = buf_v[b - 1]
            b -= 1
        buf_c[b] = c
        buf_v[b] = v
    return cnt, arg, best


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@njit(cache=True, nogil=True, inline="always")
def _pair_add(keys, weights, key, w):
    """Open-addressing hash table (linear probing, -1 = empty slot, size a power of two): adds w
    to key's weight; returns 1 if key took a new slot, else 0."""
    mask = len(keys) - 1
    h = np.int64((np.uint64(key) * _GOLDEN) >> np.uint64(40)) & mask
    while keys[h] != key:
        if keys[h] == -1:
            keys[h] = key
            weights[h] = w
            return 1
        h = (h + 1) & mask
    weights[h] += w
    return 0


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def phase2_rows(e, x, sel, tokens, threshold, top_m, seq_len, lda_min, key_lda, below, key_rand, top_floor,
                rand_floor, rows, clusters, values, top, top_v, acc, pos_hist, stored, hard, xsum, wsum, pair_keys,
                pair_w, fill, lda_idx, top_idx, rand_idx, buf_c, buf_v):
    """Phase 2 on one tile after the product, one pass per row of e = exp(scaled similarities)
    (unnormalised; raw vectors ``x``, flat positions ``sel``, ``tokens`` the chunk's flat ids):

    * z = sum_j e[i, j]; memberships e / z; the (at most ``top_m``) largest >= threshold into rows /
      clusters / values, ordered by (row, cluster); top / top_v: the largest one's cluster and value;
    * acc[0:k] += memberships (float64), acc[k] += sum of log z (the caller adds the offsets);
    * stored entries: membership mass per position in the sequence into pos_hist [k, seq_len],
      counts into stored [k], (token * k + cluster) mass into the hash table pair_keys / pair_w
      (``fill[0]`` counts its used slots), entries above their cluster's exemplar floor -> top_idx;
    * positions: top-cluster counts into hard [k]; keys above the cluster's reservoir floor ->
      rand_idx; confident positions (top_v >= lda_min) add top_v * x to xsum [k, d] and top_v to
      wsum [k], and those with an LDA key below ``below`` -> lda_idx.

    Returns (nnz, n_lda, n_top, n_rand): how much of each output was written."""
    n, k = e.shape
    d = x.shape[1]
    nnz = n_lda = n_top = n_rand = 0
    logz = 0.0
    for i in range(n):
        s = _normalise_row(e, i, acc)
        logz += np.log(s)
        inv = 1.0 / s
        cnt, c, best = _select_row(e, i, threshold * s, top_m, buf_c, buf_v)
        p = sel[i] % seq_len
        tk = np.int64(tokens[sel[i]]) * k
        for a in range(cnt):
            ca = buf_c[a]
            v = np.float32(buf_v[a] * inv)
            rows[nnz] = i
            clusters[nnz] = ca
            values[nnz] = v
            pos_hist[ca, p] += v
            stored[ca] += 1
            fill[0] += _pair_add(pair_keys, pair_w, tk + ca, np.float64(v))
            if v > top_floor[ca]:
                top_idx[n_top] = nnz
                n_top += 1
            nnz += 1
        w = np.float32(best * inv)
        top[i] = c
        top_v[i] = w
        hard[c] += 1
        if key_rand[i] > rand_floor[c]:
            rand_idx[n_rand] = i
            n_rand += 1
        if w >= lda_min:
            wsum[c] += w
            for j in range(d):
                xsum[c, j] += w * x[i, j]
            if key_lda[i] < below:
                lda_idx[n_lda] = i
                n_lda += 1
    acc[k] += logz
    return nnz, n_lda, n_top, n_rand
