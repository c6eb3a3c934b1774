"""numba kernels of the soft clustering's per-row passes over the [rows, k] similarity matrix.

numpy needs several full passes (argmax, subtract, scale, sum, compare, nonzero, sort) where one
row-parallel loop does; ``nonzero`` alone cost more than the matrix product at k = 512.
"""

from __future__ import annotations

from numba import njit


@njit(cache=True)
def shift_rows(e, inv_t, top, smax):
    """In place: e[i] = (e[i] - max_j e[i, j]) * inv_t; top[i] = argmax, smax[i] = max."""
    n, k = e.shape
    for i in range(n):
        m = e[i, 0]
        a = 0
        for j in range(1, k):
            if e[i, j] > m:
                m = e[i, j]
                a = j
        top[i] = a
        smax[i] = m
        for j in range(k):
            e[i, j] = (e[i, j] - m) * inv_t


@njit(cache=True, fastmath={"reassoc", "contract"})
def select_rows(e, threshold, top_m, z, out_c, out_v, out_n):
    """Rows of e = exp(scaled similarities), unnormalised: z[i] = sum_j e[i, j]; the (at most
    ``top_m``) largest e[i, j] >= threshold * z[i] go to out_c[i, :n] / out_v[i, :n] (memberships,
    i.e. divided by z), ordered by cluster; out_n[i] = n."""
    n, k = e.shape
    for i in range(n):
        s = 0.0
        for j in range(k):
            s += e[i, j]
        z[i] = s
        thr = threshold * s
        cnt = 0
        for j in range(k):
            v = e[i, j]
            if v >= thr:
                if cnt < top_m:
                    pos = cnt
                    cnt += 1
                elif v > out_v[i, cnt - 1]:
                    pos = cnt - 1
                else:
                    continue
                while pos > 0 and out_v[i, pos - 1] < v:  # keep the buffer sorted by value, descending
                    out_v[i, pos] = out_v[i, pos - 1]
                    out_c[i, pos] = out_c[i, pos - 1]
                    pos -= 1
                out_v[i, pos] = v
                out_c[i, pos] = j
        for a in range(1, cnt):  # then by cluster, as the files store them
            c, v = out_c[i, a], out_v[i, a]
            b = a
            while b > 0 and out_c[i, b - 1] > c:
                out_c[i, b] = out_c[i, b - 1]
                out_v[i, b] = out_v[i, b - 1]
                b -= 1
            out_c[i, b] = c
            out_v[i, b] = v
        inv = 1.0 / s
        for a in range(cnt):
            out_v[i, a] *= inv
        out_n[i] = cnt

