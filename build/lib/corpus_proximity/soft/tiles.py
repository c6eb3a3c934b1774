"""Tiles of token vectors, spread over worker threads, for the two streaming passes.

A pass reads a chunk a block at a time (as large as the memory budget allows) and works on the
block's selected positions in tiles of a few MB, so a tile's float32 vectors and its [rows, k]
scores stay in cache between the gather, the matrix products and the row kernels.

Parallelism is one thread per core (the calling thread itself and n - 1 workers: no hand-off to a
sleeping thread for the first share of every block, ~4% of a phase-1 pass at d = 384, k = 64), each
running the whole per-tile pipeline on its own tiles with single-threaded BLAS (numpy's products
and exp, and the numba kernels, release the GIL). Not BLAS's threads plus numba's: between two
short parallel calls each pool's threads spin-wait on the cores the other needs (a 0.2 ms gather
took 7 ms after a product), and numpy's exp and the per-row kernels would run on one core. Each
worker gets a fixed, contiguous share of every block's tiles and keeps its own partial sums, which
the caller adds in worker order, so the result depends on the number of workers and the block size
only through float rounding, never on thread timing. This is phase 1's scheme; phase 2
(``stream.assign_all``) hands whole chunks to its workers instead, and tiles them
inside one numba call.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np
from threadpoolctl import ThreadpoolController

from corpus_proximity.soft.activations import ActivationChunk, check_finite
from corpus_proximity.soft.kernels import rows as kernels
from corpus_proximity.soft.vmf import inverse_norms

TILE_BYTES = 3 * 2 ** 19
"""A phase-1 tile holds about this many bytes of float32 vectors (256 to 4,096 rows): 1,024 at
d = 384; on 2 cores with 1 MB of L2 each that ran the products ~10% faster than 2,730 rows."""
TILE_BYTES_PHASE2 = 2 ** 20
"""Phase 2's sub-tiles (``kernels.rows.phase2_block``, 64 rows at least): 682 rows at d = 384,
113 at d = 2304. Inside one numba call they cost no Python; 0.25-4 MB ran alike at d = 384, and
at d = 2304 0.5 MB (64 rows: short products) ran ~10% slower than 1-4 MB."""


def tile_rows(dim: int, tile_bytes: int = TILE_BYTES, least: int = 256) -> int:
    return int(np.clip(tile_bytes // (4 * dim), least, 4096))


_BLAS: list[ThreadpoolController] = []


def blas_single_threaded():
    """A context in which BLAS runs on one thread (each worker is a core's worth already).

    threadpoolctl's ``threadpool_limits`` looks for the loaded libraries afresh on every entry
    (~1.4 ms, and ~1 ms more to leave: 2 % of a phase-2 pass over 300k vectors at d = 384); one
    controller, made at the first call, is reused instead (~0.03 ms). It knows the libraries
    loaded by then: numpy's OpenBLAS and scipy's, which ``kernels.rows`` loads on import."""
    if not _BLAS:
        _BLAS.append(ThreadpoolController())
    return _BLAS[0].limit(limits=1, user_api="blas")


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class Tile:
    """One tile handed to a worker: flat positions ``sel`` (sorted), the offset of its first one in
    the chunk's selection, its float32 vectors ``x`` as stored (not normalised), their inverse
    norms (0 for a zero vector), and the worker's scratch for the scores ``e`` [rows, k] and a
    [k, d] product ``kd``. ``x``, ``e`` and ``kd`` are the worker's reused buffers: valid only
    during the call."""

    __slots__ = ("sel", "offset", "x", "inv_norm", "e", "kd")

    def __init__(self, sel: np.ndarray, offset: int, x: np.ndarray, inv_norm: np.ndarray, e: np.ndarray,
                 kd: np.ndarray):
        self.sel, self.offset, self.x, self.inv_norm, self.e, self.kd = sel, offset, x, inv_norm, e, kd

    def unit(self) -> np.ndarray:
        """A normalised copy of the vectors."""
        return self.x * self.inv_norm[:, None]


class TilePool:
    """``n_workers`` threads (0 = one per available core) running a function over tiles."""

    def __init__(self, n_workers: int, dim: int, k: int, tile_bytes: int = TILE_BYTES):
        self.n = n_workers or available_cores()
        self.dim, self.k, self.tile = dim, k, tile_rows(dim, tile_bytes)
        # preallocated: numpy products into fresh arrays ran ~25% slower on two threads (allocation)
        self._buffers = [tuple(np.empty(shape, dtype=np.float32) for shape in
                               ((self.tile, dim), (self.tile,), (self.tile, k), (k, dim)))
                         for _ in range(self.n)]
        # the calling thread runs the first share itself, so n - 1 threads (no hand-off per block)
        self._executor = ThreadPoolExecutor(self.n - 1, thread_name_prefix="softclust") if self.n > 1 else None

    @property
    def nbytes(self) -> int:
        return sum(b.nbytes for bufs in self._buffers for b in bufs)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown()

    @contextmanager
    def running(self) -> Iterator["TilePool"]:
        """BLAS single-threaded while the pool works (each worker is a core's worth already)."""
        try:
            with blas_single_threaded():
                yield self
        finally:
            self.close()

    def map_chunk(self, chunk: ActivationChunk, flat: np.ndarray, rows: int,
                  work: Callable[[int, Tile], object]) -> list[object]:
        """Call ``work(worker, tile)`` on every tile of the selected positions ``flat`` (sorted flat
        indices into the chunk) of ``chunk``, read ``rows`` positions per block. Returns the
        results in position order."""
        seqs = max(1, rows // chunk.seq_len)
        span, out = chunk.seq_len, []
        for lo, block in chunk.blocks(seqs):
            a, b = (int(v) for v in np.searchsorted(flat, [lo * span, (lo + len(block)) * span]))
            if a == b:
                continue
            # equal tiles, a whole number of them per worker, so no worker waits on another
            n_tiles = -(-(b - a) // self.tile)
            n_tiles = -(-n_tiles // self.n) * self.n if b - a >= self.n * 64 else 1
            starts = [a + (b - a) * t // n_tiles for t in range(n_tiles + 1)]
            shares = np.array_split(np.arange(n_tiles), min(self.n, n_tiles))
            flat_block = block.reshape(-1, chunk.dim)

            def run(w: int, mine: np.ndarray) -> list[object]:
                buf, sq, e, kd = self._buffers[w]
                results = []
                for t in mine:
                    s = starts[t]
                    sel = flat[s:starts[t + 1]]
                    n = len(sel)
                    x, q = buf[:n], sq[:n]
                    kernels.load_rows(flat_block, sel - lo * span, x, q)
                    check_finite(chunk.name, sel, q, span)
                    results.append(work(w, Tile(sel, s, x, inverse_norms(np.sqrt(q)), e[:n], kd)))
                return results

            if self._executor is None or len(shares) == 1:
                out += run(0, shares[0])
            else:
                futures = [self._executor.submit(run, w, mine) for w, mine in enumerate(shares) if w > 0]
                out += run(0, shares[0])
                for f in futures:  # worker order = position order: each owns a contiguous share
                    out += f.result()
        return out
