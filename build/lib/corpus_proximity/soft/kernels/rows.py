"""numba kernels of the soft clustering's per-row passes over a tile, and phase 2's block kernel.

numpy needs several full passes over a block (gather, float16 -> float32 cast, squared norms,
divide; argmax, subtract, scale, sum, compare, nonzero, sort) where one loop over a tile that
stays in cache does. numpy's float16 cast alone (~2 ns per element) cost more than the matrix
products at k = 64, and ``nonzero`` more than the product at k = 512. The kernels are
single-threaded and release the GIL: one runs per worker thread. The statistics' own kernels
(exemplar lists and contexts, the LDA reservoir, pair-table merges) are in
``kernels.stats``.
"""

from __future__ import annotations

import platform

import llvmlite.binding
import numpy as np

# the BLAS numba's np.dot calls (scipy's OpenBLAS), loaded with the kernels so the workers' limit
# of one BLAS thread (soft_cluster_tiles.blas_single_threaded) reaches it too: loaded later, it
# kept 2 threads in each worker
import scipy.linalg.cython_blas  # noqa: F401
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

_F16_MAGIC = np.float32(2.0 ** 112)


def read_only(a: np.ndarray) -> np.ndarray:
    """A read-only view: the kernels then compile once, whether their arrays came from files (read
    only) or not."""
    v = a.view()
    v.flags.writeable = False
    return v


@intrinsic
def _f32_from_bits(typingctx, b):
    """The float32 whose bits are the uint32 ``b`` (a register bitcast, which LLVM vectorises)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float32))
    return types.float32(types.uint32), codegen


@intrinsic
def f32_from_half_hw(typingctx, h):
    """The float16 whose bits are the uint16 ``h``, as float32: LLVM's half -> float conversion,
    which compiles to the CPU's own instruction (x86's F16C ``vcvtph2ps``, 8 or 16 at once; ARM's
    ``fcvt``). Only where the CPU has one (``HARDWARE_HALF``): elsewhere LLVM would call a runtime
    routine numba does not link."""
    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())
    return types.float32(types.uint16), codegen


@njit(cache=True, nogil=True, inline="always")
def f32_from_half_sw(h):
    """As :func:`f32_from_half_hw` without the instruction: the exact bit construction, the half's
    exponent and mantissa shifted into a float32 (exponent bits 31 -> 255 for inf/NaN) and
    multiplied by 2^112, which rebiases normals and turns subnormals into exact values."""
    h = np.uint32(h)
    a = h & np.uint32(0x7FFF)
    b = (a << np.uint32(13)) | ((h & np.uint32(0x8000)) << np.uint32(16))
    if a >= np.uint32(0x7C00):
        b |= np.uint32(0x7F800000)
    return _f32_from_bits(b) * _F16_MAGIC


def _hardware_half() -> bool:
    if platform.machine().lower() in ("aarch64", "arm64"):
        return True
    try:
        return bool(llvmlite.binding.get_host_cpu_features().get("f16c", False))
    except RuntimeError:  # llvmlite cannot read this CPU's features
        return False


HARDWARE_HALF = _hardware_half()
"""Whether this CPU converts float16 itself (x86 with F16C, 64-bit ARM): the gather then takes
~35 instead of ~80 ns a row at d = 384."""
_f32_from_half = f32_from_half_hw if HARDWARE_HALF else f32_from_half_sw


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def load_rows_f16(bits, rows, base, out, sq):
    """out[i] = float32(x[rows[i] - base]) and sq[i] = |out[i]|^2, from float16 rows given as their
    uint16 ``bits`` (numba has no float16 type); inf/NaN propagate into sq."""
    m = len(rows)
    d = bits.shape[1]
    for i in range(m):
        r = rows[i] - base
        s = np.float32(0.0)
        for j in range(d):
            v = _f32_from_half(bits[r, j])
            out[i, j] = v
            s += v * v
        sq[i] = s


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def load_rows_f32(x, rows, base, out, sq):
    """As :func:`load_rows_f16` for float32 rows."""
    m = len(rows)
    d = x.shape[1]
    for i in range(m):
        r = rows[i] - base
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
        load_rows_f16(x.view(np.uint16), rows, 0, out, sq)
    else:
        load_rows_f32(x, rows, 0, out, sq)


def _load_sub(src, rows, base, out, sq):
    """Inside kernels: :func:`load_rows_f16` for uint16 ``src`` (float16 bits), else :func:`load_rows_f32`."""
    raise NotImplementedError


@overload(_load_sub, jit_options={"nogil": True})
def _load_sub_impl(src, rows, base, out, sq):
    if src.dtype == types.uint16:
        return lambda src, rows, base, out, sq: load_rows_f16(src, rows, base, out, sq)
    return lambda src, rows, base, out, sq: load_rows_f32(src, rows, base, out, sq)


def put_row(dst, s, raw, i):
    """Inside kernels: dst[s] = float32(raw[i]), ``raw`` float32 or uint16 (float16 bits)."""
    raise NotImplementedError


@overload(put_row, jit_options={"nogil": True})
def _put_row_impl(dst, s, raw, i):
    if raw.dtype == types.uint16:
        def put_half(dst, s, raw, i):
            for j in range(dst.shape[1]):
                dst[s, j] = _f32_from_half(raw[i, j])
        return put_half

    def put(dst, s, raw, i):
        for j in range(dst.shape[1]):
            dst[s, j] = raw[i, j]
    return put


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


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def normalise_rows(e, z, row_scale, col_sum):
    """In place, rows of e = exp(scaled similarities): z[i] = sum_j e[i, j] (float64), memberships
    m[i, j] = e[i, j] / z[i] added to col_sum[j], e[i, j] = m[i, j] * row_scale[i]."""
    k = e.shape[1]
    for i in range(e.shape[0]):
        s = 0.0
        for j in range(k):
            s += e[i, j]
        z[i] = s
        inv = np.float32(1.0 / s)
        for j in range(k):
            col_sum[j] += e[i, j] * inv
        f = inv * row_scale[i]
        for j in range(k):
            e[i, j] *= f


@njit(cache=True, nogil=True, inline="always")
def _select_row(e, i, thr, top_m, buf_c, buf_v):
    """Row i of e: the (at most ``top_m``) largest values >= thr into buf_c / buf_v ordered by
    cluster; returns how many."""
    k = e.shape[1]
    cnt = 0
    for j in range(k):
        v = e[i, j]
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
    return cnt


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _scan_rows(e, e_bits, threshold, col_sum, z, count, arg):
    """Rows of e (finite, >= 0; ``e_bits``: e viewed as int32, which orders such floats as they
    are): z[i] = sum_j e[i, j] (float64), col_sum += e[i] / z[i], count[i] = how many are
    >= threshold * z[i], arg[i] = the first argmax. Three loops a row that LLVM vectorises (the max
    in integers, the argmax as a min): ~30 ns a row at k = 64, against ~65 for a loop that tracks
    the running max and argmax, and ~42 with a call per row."""
    n, k = e.shape
    for i in range(n):
        s = 0.0
        mb = e_bits[i, 0]
        for j in range(k):
            s += e[i, j]
            mb = max(mb, e_bits[i, j])
        inv = np.float32(1.0 / s)
        thr = threshold * s
        c = np.int32(0)
        for j in range(k):
            v = e[i, j]
            col_sum[j] += v * inv
            c += np.int32(np.float64(v) >= thr)
        a = np.int32(k)
        for j in range(k):
            a = min(a, np.int32(j) if e_bits[i, j] == mb else np.int32(k))
        z[i] = s
        count[i] = c
        arg[i] = a


@njit(cache=True, nogil=True)
def _select_above(e, i, thr, cnt, top_m, arg, buf_c, buf_v):
    """The (at most ``top_m``) largest of row i's ``cnt`` values >= thr into buf_c / buf_v, ordered
    by cluster; ``arg``: the row's argmax. Returns how many."""
    if cnt == 1:  # the usual case: only the top cluster
        buf_c[0] = arg
        buf_v[0] = e[i, arg]
        return 1
    if cnt <= top_m:
        a = 0
        for j in range(e.shape[1]):
            if np.float64(e[i, j]) >= thr:
                buf_c[a] = j
                buf_v[a] = e[i, j]
                a += 1
        return a
    return _select_row(e, i, thr, top_m, buf_c, buf_v)


@intrinsic
def prefetch(typingctx, arr, i):
    """Ask the CPU to bring ``arr[i]``'s cache line in (for writing, kept in all levels): a hint,
    it changes no result. The hash tables' slots are random accesses; fetched ~16 rows ahead,
    they cost ~0.03 core-us less per vector on text's thousands of distinct pairs per chunk."""
    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, signature.args[0], ary, [args[1]], wraparound=False)
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                            "llvm.prefetch.p0")
        builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, 1), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()
    return types.none(arr, i), codegen


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@njit(cache=True, nogil=True, inline="always")
def _mix64(z):
    """splitmix64's finaliser: a bijection of uint64 that scrambles every bit into every other."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(cache=True, nogil=True)
def _key_base(seed, stream, chunk):
    z = _mix64(seed + _GOLDEN)
    z = _mix64(z ^ stream)
    return _mix64(z + chunk * _GOLDEN)


def key_base(seed: int, stream: int, chunk: int) -> np.uint64:
    """The base of chunk ``chunk``'s keys in random stream ``stream`` (any int seed, as its 64 low bits)."""
    return np.uint64(_key_base(np.uint64(seed % 2 ** 64), np.uint64(stream), np.uint64(chunk)))


@njit(cache=True, nogil=True, inline="always")
def _unit_key(base, f):
    """A uniform [0, 1) key (53 bits) for flat position f: splitmix64's output number f + 1 from
    state ``base`` (a counter, so a position's key needs no table and no draws for the others)."""
    z = _mix64(base + np.uint64(f + 1) * _GOLDEN)
    return np.float64(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=True, nogil=True)
def _position_keys(base, flat):
    out = np.empty(len(flat))
    for i in range(len(flat)):
        out[i] = _unit_key(base, flat[i])
    return out


def position_keys(base: np.uint64, flat: np.ndarray) -> np.ndarray:
    """The keys of flat positions ``flat`` from :func:`key_base` ``base``, as the phase-2 kernel draws
    them (the kernels take uint64 only: numba makes int64 + uint64 a float64)."""
    return _position_keys(np.uint64(base), np.asarray(flat, dtype=np.int64))


AHEAD = 16
"""Rows (pairs) ahead that the row kernel (the merge) prefetches its hash table slot for."""


@njit(cache=True, nogil=True, inline="always")
def slot_of(key, mask):
    return np.int64((np.uint64(key) * _GOLDEN) >> np.uint64(32)) & mask  # up to 2^32 slots


@njit(cache=True, nogil=True, inline="always")
def pair_add(keys, weights, key, w):
    """Open-addressing hash table (linear probing, -1 = empty slot, size a power of two): adds w
    to key's weight; returns the slot if key took a new one, else -1."""
    mask = len(keys) - 1
    h = slot_of(key, mask)
    while keys[h] != key:
        if keys[h] == -1:
            keys[h] = key
            weights[h] = w
            return h
        h = (h + 1) & mask
    weights[h] += w
    return -1


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def phase2_rows(e, e_bits, x, sel, tokens, threshold, top_m, seq_len, lda_min, key_lda, below, key_rand, top_floor,
                rand_floor, rows, clusters, values, top, top_v, acc, pos_hist, stored, hard, xsum, wsum, pair_keys,
                pair_w, fill, used, lda_idx, lda_key, top_idx, rand_idx, rand_key, buf_c, buf_v, z, count, arg):
    """Phase 2 on one tile after the product, one pass per row of e = exp(scaled similarities)
    (unnormalised, ``e_bits`` e viewed as int32; raw vectors ``x``, flat positions ``sel``, ``tokens``
    the chunk's flat ids):

    * z = sum_j e[i, j]; memberships e / z; the (at most ``top_m``) largest >= threshold into rows /
      clusters / values, ordered by (row, cluster); top / top_v: the largest one's cluster and value;
    * acc[0:k] += memberships (float64), acc[k] += sum of log z (the caller adds the offsets);
    * stored entries: membership mass per position in the sequence into pos_hist [k, seq_len],
      counts into stored [k], (token * k + cluster) mass into the hash table pair_keys / pair_w
      (``fill[0]`` counts its used slots, listed in ``used``), entries above their cluster's exemplar floor -> top_idx;
    * positions: top-cluster counts into hard [k]; random keys ``key_rand`` above the cluster's
      reservoir floor -> rand_idx / rand_key; confident positions (top_v >= lda_min) add top_v * x to
      xsum [k, d] and top_v to wsum [k], and those with an LDA key ``key_lda`` below ``below`` ->
      lda_idx / lda_key.

    ``z``, ``count``, ``arg``: scratch of :func:`_scan_rows`, n rows at least.
    Returns (nnz, n_lda, n_top, n_rand): how much of each output was written."""
    n, k = e.shape
    d = x.shape[1]
    nnz = n_lda = n_top = n_rand = 0
    logz = 0.0
    _scan_rows(e, e_bits, threshold, acc, z, count, arg)
    mask = len(pair_keys) - 1
    for i in range(n):
        s, cnt, c = z[i], count[i], arg[i]
        if i + AHEAD < n:  # the slot of a later row's (token, top cluster): usually its only pair
            h = slot_of(np.int64(tokens[sel[i + AHEAD]]) * k + arg[i + AHEAD], mask)
            prefetch(pair_keys, h)
            prefetch(pair_w, h)
        logz += np.log(s)
        inv = 1.0 / s
        best = e[i, c]
        cnt = _select_above(e, i, threshold * s, cnt, top_m, c, buf_c, buf_v) if cnt > 0 else 0
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
            h = pair_add(pair_keys, pair_w, tk + ca, np.float64(v))
            if h >= 0:
                used[fill[0]] = h
                fill[0] += 1
            if v > top_floor[ca]:
                top_idx[n_top] = nnz
                n_top += 1
            nnz += 1
        w = np.float32(best * inv)
        top[i] = c
        top_v[i] = w
        hard[c] += 1
        kr = key_rand[i]
        if kr > rand_floor[c]:
            rand_idx[n_rand] = i
            rand_key[n_rand] = kr
            n_rand += 1
        if w >= lda_min:
            wsum[c] += w
            for j in range(d):
                xsum[c, j] += w * x[i, j]
            kl = key_lda[i]
            if kl < below:
                lda_idx[n_lda] = i
                lda_key[n_lda] = kl
                n_lda += 1
    acc[k] += logz
    return nnz, n_lda, n_top, n_rand


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def phase2_block(src, flat, base, start, centres_t, inv_t, shift, x, e, e_bits, sq, scale, bits, smax, tokens,
                 threshold, top_m, seq_len, lda_min, base_lda, below, base_rand, top_floor, rand_floor, rows, seq, pos,
                 clusters, values, top, top_v, acc, pos_hist, stored, hard, xsum, wsum, pair_keys, pair_w, fill, used,
                 lda_idx, lda_key, top_idx, rand_idx, rand_key, counts, buf_c, buf_v, z, count, arg, key_lda,
                 key_rand):
    """Phase 2 of a block of a chunk, sub-tile by sub-tile of ``len(x)`` rows, so a sub-tile's
    vectors and scores stay in the core's cache from the read to the row kernel, with no Python in
    between: gather rows ``flat - base`` of the block ``src`` (uint16 float16 bits or float32) into
    ``x`` with their squared norms ``sq``; the product with ``centres_t`` [d, k] (BLAS, through
    numba's np.dot) into ``e`` (``e_bits``: as int32); the scaled exp (``shift``: the row-max shift of
    :class:`vmf.Scorer`, its offsets into acc[k]); then :func:`phase2_rows` with the block's outputs
    (``rows``: a sub-tile's scratch; the entries' sequence and position in the chunk go into ``seq`` /
    ``pos``; candidates' rows are into ``flat``, not the sub-tile, the LDA and random candidates' keys
    into ``lda_key`` / ``rand_key``; ``counts``: entries, LDA, top and random candidates written so
    far; ``key_lda`` / ``key_rand``: a sub-tile's scratch for its rows' keys, :func:`_unit_key` of
    their flat positions from ``base_lda`` / ``base_rand``). ``below`` [1], ``top_floor`` and ``rand_floor`` are read as
    the rows come: another thread may lower / raise them meanwhile.

    Starts at row ``start``; returns len(flat) when done, the first row not done when the pair table
    could pass half full before the next sub-tile (the caller empties it and calls again), or
    -1 - i if row i holds NaN/inf."""
    n = len(flat)
    size = x.shape[0]
    k = e.shape[1]
    half = len(pair_keys) // 2
    lo = start
    while lo < n:
        hi = min(n, lo + size)
        r = hi - lo
        if fill[0] + r * top_m > half:
            return lo
        xs, es, sub = x[:r], e[:r], flat[lo:hi]
        _load_sub(src, sub, base, xs, sq)
        for i in range(r):
            q = sq[i]
            if not np.isfinite(q):
                return -1 - (lo + i)
            scale[i] = np.float32(1.0) / np.sqrt(q) if q > 0 else np.float32(0.0)
        np.dot(xs, centres_t, es)
        if shift:
            for i in range(r):
                f = scale[i]
                for j in range(k):
                    es[i, j] *= f
                scale[i] = np.float32(1.0)
            shift_rows(es, np.float32(inv_t), smax)
            off = 0.0
            for i in range(r):
                off += np.float64(smax[i])
            acc[k] += off * inv_t
        else:
            for i in range(r):
                scale[i] *= np.float32(inv_t)
        exp_rows(es, scale, bits)
        for i in range(r):  # apart from the row kernel's branches, so the 64-bit hashes vectorise
            key_lda[i] = _unit_key(base_lda, sub[i])
        for i in range(r):
            key_rand[i] = _unit_key(base_rand, sub[i])
        c0, c1, c2, c3 = counts[0], counts[1], counts[2], counts[3]
        nnz, n_lda, n_top, n_rand = phase2_rows(
            es, e_bits[:r], xs, sub, tokens, threshold, top_m, seq_len, lda_min, key_lda[:r], below[0],
            key_rand[:r], top_floor, rand_floor, rows, clusters[c0:], values[c0:], top[lo:hi], top_v[lo:hi],
            acc, pos_hist, stored, hard, xsum, wsum, pair_keys, pair_w, fill, used, lda_idx[c1:], lda_key[c1:],
            top_idx[c2:], rand_idx[c3:], rand_key[c3:], buf_c, buf_v, z, count, arg)
        for a in range(nnz):
            f = flat[lo + rows[a]]
            q = f // seq_len
            seq[c0 + a] = q
            pos[c0 + a] = f - q * seq_len
        for a in range(c1, c1 + n_lda):
            lda_idx[a] += lo
        for a in range(c2, c2 + n_top):
            top_idx[a] += c0
        for a in range(c3, c3 + n_rand):
            rand_idx[a] += lo
        counts[0] += nnz
        counts[1] += n_lda
        counts[2] += n_top
        counts[3] += n_rand
        lo = hi
    return n
