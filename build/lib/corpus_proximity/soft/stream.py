"""The two streaming passes of the soft clustering, in fixed memory, with checkpoints.

Phase 1 (:func:`fit_centres`) learns the centres online: each chunk contributes one stepwise-EM
update computed on up to ``max_points`` sampled positions. Phase 2 (:func:`assign_all`) streams
every position once, writes each chunk's sparse memberships and feeds the per-cluster statistics.

Memory: a chunk's activations are read ``rows`` positions at a time, where ``rows`` is what the
budget leaves after the process's own footprint (measured at start) and the fixed-size state.
Randomness is drawn from generators seeded by (seed, purpose, epoch, chunk), never from a shared
stream, so a run resumed from a checkpoint makes exactly the choices of an uninterrupted one and
the results do not depend on the block size.
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from queue import SimpleQueue
from typing import Callable

import numpy as np

from corpus_proximity.cache import atomic_writer
from corpus_proximity.config import SoftClusterConfig, semantic_dict
from corpus_proximity.errors import InputError
from corpus_proximity.soft import tiles as soft_cluster_tiles
from corpus_proximity.soft.activations import ActivationChunk, ChunkSource, check_finite
from corpus_proximity.soft.kernels import rows as kernels
from corpus_proximity.soft.kernels import stats as stats_kernels
from corpus_proximity.soft.stats import (
    ChunkMemberships,
    ChunkParts,
    ExemplarCandidates,
    Exemplars,
    LdaStats,
    UsageStats,
    pair_slots,
)
from corpus_proximity.soft.tiles import TILE_BYTES_PHASE2, TilePool, available_cores, blas_single_threaded
from corpus_proximity.soft.vmf import Scorer, StepwiseEM, estep_sums, init_centres, sample_positions

GB = 1024 ** 3


def rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc; 0 where unavailable)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass
class MemoryPlan:
    """Rows (token positions) per block so that baseline + state + chunk + block stays in budget."""

    budget: int
    baseline: int
    k: int
    headroom: float = 0.85  # allocator slack, temporaries not modelled

    def _sizes(self, chunk: ActivationChunk, state_bytes: int) -> tuple[float, int, int]:
        """(bytes free for blocks, bytes per row of a block, the chunk's own bytes)."""
        d, per_seq_pos = chunk.dim, chunk.n_seq * chunk.seq_len
        resident = getattr(chunk, "activations", None)
        chunk_bytes = per_seq_pos * (40 + 16 * 4) + (resident.nbytes if resident is not None else 0)
        per_row = d * (2 * chunk.dtype.itemsize + 16) + 6 * self.k + 128
        return self.headroom * self.budget - self.baseline - state_bytes - chunk_bytes, per_row, chunk_bytes

    def free_rows(self, chunk: ActivationChunk, state_bytes: int) -> int:
        """Rows of blocks of ``chunk`` the budget leaves (negative: not even the chunk fits)."""
        free, per_row, _ = self._sizes(chunk, state_bytes)
        return int(free // per_row)

    def rows(self, chunk: ActivationChunk, state_bytes: int) -> int:
        """Rows per block of ``chunk``; an error naming the fix if not even one sequence fits."""
        free, per_row, chunk_bytes = self._sizes(chunk, state_bytes)
        if free < per_row * chunk.seq_len:
            need = (self.baseline + state_bytes + chunk_bytes + per_row * chunk.seq_len) / self.headroom
            raise InputError(f"soft_cluster.memory_budget_gb={self.budget / GB:.2f} is too small for {chunk.name}: "
                             f"process {self.baseline / GB:.2f} GB + state {state_bytes / GB:.2f} GB + one "
                             f"sequence needs about {need / GB:.2f} GB; raise it or lower n_clusters/lda_sample")
        return int(free // per_row)


def warm_up() -> None:
    """Load (or compile) every numba kernel of the passes on tiny inputs, read-only ones too, so
    the process's footprint measured for the memory plan includes them (~60 MB)."""
    k, d = 3, 8
    for dtype in (np.float16, np.float32):
        raw = np.ones((4, d), dtype=dtype)
        raw.flags.writeable = False  # blocks read from chunk files are read-only
        x, sq = np.empty((4, d), dtype=np.float32), np.empty(4, dtype=np.float32)
        kernels.load_rows(raw, np.arange(4), x, sq)
    inv = np.ones(4, dtype=np.float32)
    parts, buf = ChunkParts.zeros(k, 2, d), TileBuffers(4, d, k, 2)
    for inv_t in (20.0, 200.0):  # without and with the row-max shift
        scorer = Scorer(np.eye(k, d, dtype=np.float32), inv_t)
        estep_sums(x, inv, scorer, np.zeros((k, d), dtype=np.float32))
        for dtype in (np.float16, np.float32):  # phase2_block makes its arrays read-only: one compile each
            phase2_block(np.ones((4, d), dtype=dtype), np.arange(4), 0, scorer, np.zeros(8, dtype=np.int32), 2, 0.05,
                         2, 0.5, chunk_key_bases(0, 0), (0.5, np.zeros(k), np.zeros(k)), parts, buf)
    StepwiseEM.start(np.eye(k, d, dtype=np.float32)).update(np.ones(k), np.zeros((2, k, d), dtype=np.float32), 4, 0.6)
    stats = Phase2Stats(UsageStats(k), Exemplars(k, 2, 1, 2), Exemplars(k, 2, 1, 2), LdaStats(k, d, 10))
    stats.add_chunk(parts, np.zeros(4, dtype=np.int32))  # the sums, token counts and the pair table's merge
    stats.lda.add_sample(np.zeros(1), x[:1], np.zeros(1, dtype=np.int32), inv[:1])
    stats.lda.add_sample(np.zeros(1), np.zeros((1, d), dtype=np.uint16), np.zeros(1, dtype=np.int32), inv[:1])
    one = np.zeros(1, dtype=np.int32)
    cm = ChunkMemberships(0, one, one, one, np.ones(1, dtype=np.float32), np.zeros((1, 2), dtype=np.int32),
                          np.ones((1, 2), dtype=bool))
    ones, at = np.ones(1, dtype=np.float32), np.zeros(1, dtype=np.int64)
    for where, key in (((one, one), ones), ((at, at), np.ones(1))):  # the top lists' and the random lists' types
        Exemplars(k, 2, 1, 2).offer(ExemplarCandidates.of_chunk(cm, *where, one, key, ones, 2, 1, 2, k))


def valid_positions(chunk: ActivationChunk, ignore_ids: np.ndarray) -> np.ndarray:
    valid = chunk.attention_mask.copy()
    if len(ignore_ids):
        valid &= ~np.isin(chunk.token_ids, ignore_ids)
    if not valid.any():
        raise InputError(f"{chunk.name}: empty chunk (no position left once padding and special tokens are dropped)")
    return valid


def _check_dim(chunk: ActivationChunk, dim: int | None, first: Callable[[], str]) -> None:
    if dim is not None and chunk.dim != dim:
        raise InputError(f"{chunk.name}: activations have d={chunk.dim} but {first()} has d={dim}; "
                         f"every chunk of a run must come from the same model and layer")


class Checkpoint:
    """One NPZ holding the whole state of a run, written atomically; tied to the params and data."""

    def __init__(self, path: Path, fingerprint: str):
        self.path, self.fingerprint = path, fingerprint

    def save(self, state: dict[str, np.ndarray]) -> None:
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, fingerprint=np.array(self.fingerprint), **state)
        atomic_writer(self.path, write)

    def load(self) -> dict[str, np.ndarray] | None:
        if not self.path.is_file():
            return None
        with np.load(self.path, allow_pickle=False) as z:
            state = {k: z[k] for k in z.files}
        if str(state.pop("fingerprint")) != self.fingerprint:
            raise InputError(f"{self.path}: checkpoint of a run with other settings or data; delete it "
                             f"(or run with --fresh) to start over")
        return state


def fingerprint(cfg: SoftClusterConfig, n_chunks: int, ignore_ids: np.ndarray) -> str:
    payload = {"cfg": semantic_dict(cfg), "n_chunks": n_chunks, "ignore": sorted(map(int, ignore_ids))}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@dataclass
class Phase1Result:
    centres: np.ndarray
    history: np.ndarray  # [steps, 8]: epoch, chunk, step, eta, max shift, mean shift, loglik/point, points
    epoch_shift: list[float] = field(default_factory=list)  # max 1 - cos(start, end) per epoch
    converged: bool = False


HISTORY_COLUMNS = ("epoch", "chunk", "step", "eta", "max_shift", "mean_shift", "loglik", "points")


def _init_sample(source: ChunkSource, cfg: SoftClusterConfig, ignore: np.ndarray, plan: MemoryPlan, log):
    parts, have, dim, first = [], 0, None, None
    for i in range(len(source)):
        chunk = source.open(i)
        _check_dim(chunk, dim, lambda: first)
        dim, first = chunk.dim, first or chunk.name
        take = min(cfg.max_points, cfg.init_sample - have)
        flat = sample_positions(valid_positions(chunk, ignore), take, np.random.default_rng([cfg.seed, 0, i]))
        state = cfg.init_sample * chunk.dim * 8
        with TilePool(cfg.n_workers, chunk.dim, cfg.n_clusters).running() as pool:
            parts += pool.map_chunk(chunk, flat, plan.rows(chunk, state), lambda w, t: t.unit())
        have += len(flat)
        if have >= cfg.init_sample:
            break
    x = np.concatenate(parts)
    log(f"phase 1: {cfg.init} init of {cfg.n_clusters} centres on {len(x)} positions (d={x.shape[1]})")
    return init_centres(x, cfg.n_clusters, cfg.init, np.random.default_rng([cfg.seed, 0])), first


def fit_centres(source: ChunkSource, cfg: SoftClusterConfig, ignore: np.ndarray, plan: MemoryPlan,
                ckpt: Checkpoint | None, state: dict | None, log: Callable[[str], None]) -> Phase1Result:
    """Phase 1: online vMF-mixture centres, one stepwise-EM update per chunk, up to n_epochs passes."""
    inv_t = 1.0 / cfg.temperature
    if state is not None and int(state["phase"]) == 1:
        em = StepwiseEM(np.array(state["centres"], dtype=np.float32), np.array(state["s"], dtype=np.float64),
                        np.array(state["n"], dtype=np.float64), int(state["t"]))  # copies: updated in place
        epoch0, chunk0 = int(state["epoch"]), int(state["next_chunk"])
        start, history = state["epoch_start"], [tuple(r) for r in state["history"]]
        epoch_shift = [float(v) for v in state["epoch_shift"]]
        converged = bool(state["converged"]) if "converged" in state else False
        log(f"phase 1: resuming at epoch {epoch0}, chunk {chunk0} (step {em.t})")
    else:
        centres, _ = _init_sample(source, cfg, ignore, plan, log)
        em, epoch0, chunk0, start, history, epoch_shift = StepwiseEM.start(centres), 0, 0, centres.copy(), [], []
        converged = False
    k, d = em.centres.shape
    state_bytes = k * d * 24

    def save(epoch: int, next_chunk: int) -> None:
        if ckpt is not None:
            ckpt.save({"phase": np.array(1), "centres": em.centres, "s": em.s, "n": em.n, "t": np.array(em.t),
                       "epoch": np.array(epoch), "next_chunk": np.array(next_chunk), "epoch_start": start,
                       "history": np.array(history, dtype=np.float64).reshape(-1, len(HISTORY_COLUMNS)),
                       "epoch_shift": np.array(epoch_shift), "converged": np.array(converged)})

    with TilePool(cfg.n_workers, d, k).running() as pool:
        rx_parts = np.zeros((pool.n, k, d), dtype=np.float32)  # per worker: float32 sums within a chunk
        state_bytes += rx_parts.nbytes + pool.nbytes
        # a checkpoint of a phase 1 that ended (converged, or its last epoch done) resumes as ended
        for epoch in range(epoch0, cfg.n_epochs if not converged else epoch0):
            for i in range(chunk0 if epoch == epoch0 else 0, len(source)):
                chunk = source.open(i)
                _check_dim(chunk, d, lambda: source.open(0).name)
                flat = sample_positions(valid_positions(chunk, ignore), cfg.max_points,
                                        np.random.default_rng([cfg.seed, 1, epoch, i]))
                scorer = Scorer(em.centres, inv_t)
                sums = pool.map_chunk(chunk, flat, plan.rows(chunk, state_bytes),
                                      lambda w, t: estep_sums(t.x, t.inv_norm, scorer, rx_parts[w], (t.e, t.kd)))
                r, ll = np.zeros(k), 0.0
                for br, bll in sums:
                    r, ll = r + br, ll + bll
                eta, shift = em.update(r, rx_parts, len(flat), cfg.step_decay)  # rx_parts zeroed
                history.append((epoch, i, em.t, eta, float(shift.max()), float(shift.mean()), ll / len(flat), len(flat)))
                if (i + 1) % cfg.checkpoint_every == 0 and i + 1 < len(source):
                    save(epoch, i + 1)
            moved = 1.0 - np.einsum("ij,ij->i", start.astype(np.float64), em.centres.astype(np.float64))
            epoch_shift.append(float(moved.max()))
            repaired = em.repair(np.random.default_rng([cfg.seed, 4, epoch])) if epoch + 1 < cfg.n_epochs else 0
            start = em.centres.copy()
            log(f"phase 1: epoch {epoch + 1}/{cfg.n_epochs}  max centre shift {epoch_shift[-1]:.2e}  "
                f"loglik/point {history[-1][6]:.4f}" + (f"  {repaired} redundant centres re-seeded" if repaired else ""))
            converged = epoch_shift[-1] < cfg.tol and not repaired
            save(epoch + 1, 0)
            if converged:
                break
    return Phase1Result(em.centres, np.array(history, dtype=np.float64).reshape(-1, len(HISTORY_COLUMNS)),
                        epoch_shift, converged)


@dataclass
class Phase2Stats:
    usage: UsageStats
    top: Exemplars
    random: Exemplars
    lda: LdaStats

    @classmethod
    def empty(cls, cfg: SoftClusterConfig, d: int) -> "Phase2Stats":
        k = cfg.n_clusters
        return cls(UsageStats(k), Exemplars(k, cfg.n_exemplars, cfg.context_window, cfg.top_m),
                   Exemplars(k, cfg.n_random_exemplars, cfg.context_window, cfg.top_m),
                   LdaStats(k, d, cfg.lda_sample))

    @classmethod
    def from_state(cls, cfg: SoftClusterConfig, d: int, state: dict[str, np.ndarray]) -> "Phase2Stats":
        """The statistics a checkpoint saved, its arrays taken over. The reservoir they replace is
        never made (lda_sample x d floats, zeroed: 184 MB at d = 2304 and the default 20,000)."""
        k = cfg.n_clusters
        stats = cls(UsageStats(k), Exemplars(k, cfg.n_exemplars, cfg.context_window, cfg.top_m),
                    Exemplars(k, cfg.n_random_exemplars, cfg.context_window, cfg.top_m), LdaStats(k, d, 0))
        for prefix, acc in stats.parts():
            acc.load_state(state, prefix)
        return stats

    def parts(self):
        return (("usage.", self.usage), ("top.", self.top), ("random.", self.random), ("lda.", self.lda))

    def nbytes(self) -> int:
        return sum(int(v.nbytes) for p, a in self.parts() for v in a.state(p).values())

    def add_chunk(self, parts: ChunkParts, valid_tokens: np.ndarray) -> None:
        """Merge a chunk: its sums (one numba call, ``kernels.stats.add_chunk_sums``),
        log-likelihood, tokens (those at its assigned positions) and (token, cluster) pairs, leaving
        ``parts`` zeroed and empty for reuse."""
        u, k = self.usage, self.usage.k
        u.loglik += parts.acc[k] - len(valid_tokens) * np.log(k)
        u.n_positions += len(valid_tokens)
        u.fit_positions(parts.pos_hist.shape[1])
        stats_kernels.add_chunk_sums(u.soft, u.hard, u.stored, u.pos_hist, self.lda.xsum, self.lda.wsum, parts.acc,
                                     parts.hard, parts.stored, parts.pos_hist, parts.xsum, parts.wsum)
        u.add_tokens(valid_tokens)
        u.take_pairs(parts)


def write_memberships(path: Path, cm: ChunkMemberships, chunk: ActivationChunk, k: int, cfg: SoftClusterConfig) -> None:
    meta = {"source": chunk.name, "n_seq": chunk.n_seq, "seq_len": chunk.seq_len, "n_clusters": k,
            "threshold": cfg.threshold, "top_m": cfg.top_m}
    arrays = {"indices": np.stack([cm.seq, cm.pos, cm.cluster], axis=1).astype(np.int32),
              "values": cm.value, "tokens": cm.token_ids, "valid": cm.valid.astype(np.uint8),
              "meta": np.array(json.dumps(meta))}
    if chunk.sequence_ids is not None:
        arrays["sequence_ids"] = np.asarray(chunk.sequence_ids, dtype=str)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    atomic_writer(path, write)


IN_FLIGHT_PER_WORKER = 2
"""Phase 2 keeps up to this many chunks per worker handed out (memory allowing), so a worker that
is done does not wait for the main thread to finish an earlier chunk held up on another worker."""

class TileBuffers:
    """A running chunk's scratch for :func:`phase2_block`: one sub-tile of ``rows`` vectors and scores."""

    def __init__(self, rows: int, d: int, k: int, top_m: int):
        self.x, self.e = np.empty((rows, d), dtype=np.float32), np.empty((rows, k), dtype=np.float32)
        self.sq, self.scale, self.smax = (np.empty(rows, dtype=np.float32) for _ in range(3))
        self.bits, self.rows = np.empty(k, dtype=np.int32), np.empty(rows * top_m, dtype=np.int64)
        self.z, self.count, self.arg = np.empty(rows), np.empty(rows, dtype=np.int32), np.empty(rows, dtype=np.int32)
        self.key_lda, self.key_rand = np.empty(rows), np.empty(rows)
        self.buf_c, self.buf_v = np.empty(top_m, dtype=np.int32), np.empty(top_m, dtype=np.float32)

    @property
    def nbytes(self) -> int:
        return sum(v.nbytes for v in vars(self).values())


def phase2_block(block: np.ndarray, sel: np.ndarray, base: int, scorer: Scorer, tokens: np.ndarray, seq_len: int,
                 threshold: float, top_m: int, lda_min: float, key_bases: tuple[int, int], floors: tuple,
                 parts: ChunkParts, buf: TileBuffers, name: str = ""):
    """Phase 2 of one block of a chunk (``kernels.rows.phase2_block``): the vectors at flat
    positions ``sel`` of the chunk, rows ``sel - base`` of ``block`` [positions, d] (float16 or
    float32, as stored); ``tokens`` the chunk's flat token ids; the sums go into ``parts``, ``buf`` is
    the scratch of one sub-tile. Returns the stored entries (sequence and position in the chunk,
    clusters, memberships), each row's top cluster and membership, and the rows / entries that may
    enter the LDA reservoir (with their keys), the top exemplars and the random exemplars (with their
    keys); ``floors``: what they must beat, ``key_bases``: the chunk's LDA and random key bases
    (``kernels.rows.key_base``), each position's keys drawn from them in the kernel."""
    n, k = len(sel), scorer.k
    m = min(top_m, k)
    if len(buf.x) * m > len(parts.pair_keys) // 2:  # the kernel would wait for room forever
        raise ValueError(f"a tile of {len(buf.x) * m} pairs needs a table of more than "
                         f"{2 * len(buf.x) * m} slots (pair_slots)")
    below, top_floor, rand_floor = floors
    below = np.atleast_1d(np.asarray(below, dtype=np.float64))  # an array: read at every sub-tile
    seq, pos = np.empty(n * m, dtype=np.int32), np.empty(n * m, dtype=np.int32)
    cls, vals = np.empty(n * m, dtype=np.int32), np.empty(n * m, dtype=np.float32)
    top, top_v = np.empty(n, dtype=np.int32), np.empty(n, dtype=np.float32)
    li, ti, ri = np.empty(n, dtype=np.int64), np.empty(n * m, dtype=np.int64), np.empty(n, dtype=np.int64)
    lk, rk = np.empty(n), np.empty(n)
    counts = np.zeros(4, dtype=np.int64)
    src = kernels.read_only(block.view(np.uint16) if block.dtype == np.float16 else block)
    start = 0
    while start < n:
        if start > 0:
            parts.spill()
        start = kernels.phase2_block(
            src, sel, base, start, scorer.centres_t, scorer.inv_t, scorer.shift, buf.x, buf.e,
            buf.e.view(np.int32), buf.sq, buf.scale, buf.bits, buf.smax, kernels.read_only(tokens),
            np.float32(threshold), m, seq_len, np.float32(lda_min), np.uint64(key_bases[0]), below,
            np.uint64(key_bases[1]), top_floor, rand_floor, buf.rows, seq, pos, cls, vals, top, top_v, parts.acc,
            parts.pos_hist, parts.stored, parts.hard, parts.xsum, parts.wsum, parts.pair_keys, parts.pair_w,
            parts.fill, parts.used, li, lk, ti, ri, rk, counts, buf.buf_c, buf.buf_v, buf.z, buf.count, buf.arg,
            buf.key_lda, buf.key_rand)
        if start < 0:  # a row holds NaN/inf: the error names the file, the count and the first
            bad = sel[-1 - start:]
            check_finite(name, bad, np.square(block[bad - base], dtype=np.float32).sum(axis=1), seq_len)
    nnz, n_lda, n_top, n_rand = counts.tolist()
    return ((seq[:nnz], pos[:nnz], cls[:nnz], vals[:nnz]), top, top_v,
            (li[:n_lda], lk[:n_lda], ti[:n_top], ri[:n_rand], rk[:n_rand]))


def _phase2_chunk(i: int, chunk: ActivationChunk, valid: np.ndarray, scorer: Scorer, cfg: SoftClusterConfig,
                  rows: int, floors: tuple, parts: ChunkParts, bufs: SimpleQueue, out_dir: Path | None) -> dict:
    """Memberships of every position of chunk ``i`` (one worker thread's job), read ``rows``
    positions at a time, its statistics into its own ``parts``; its membership file is written at
    once, the rest is added by the main thread in chunk order. ``floors``: what can still enter the
    LDA reservoir and the exemplar lists, arrays the main thread updates as its offers land (read
    per sub-tile); the chunk passes on what beats them, the adds re-check exactly. It passes on at
    most ``lda_sample`` reservoir candidates, those with the smallest keys: no others could enter."""
    flat = np.flatnonzero(valid.ravel())
    bases = chunk_key_bases(cfg.seed, i)
    tokens, L = chunk.token_ids.ravel(), chunk.seq_len
    res, lda = [], []
    buf = bufs.get()
    try:
        for lo, block in chunk.blocks(max(1, rows // L)):
            a, b = (int(v) for v in np.searchsorted(flat, [lo * L, (lo + len(block)) * L]))
            if a == b:
                continue
            sel, base, block = flat[a:b], lo * L, block.reshape(-1, chunk.dim)
            (sq, ps, cls, vals), top, top_v, (li, kl, ti, ri, kr) = phase2_block(
                block, sel, base, scorer, tokens, L, cfg.threshold, cfg.top_m, cfg.lda_min_membership, bases, floors,
                parts, buf, chunk.name)
            keep = _smallest(kl, cfg.lda_sample)
            li, kl = li[keep], kl[keep]
            # the LDA candidates' vectors as stored (float16 as its bits: the reservoir converts the
            # ones it takes); while it fills, every confident position is one, and float32 copies
            # (up to 46 MB a chunk at d = 2304) cost page faults that slowed cold passes by up to 1.8x
            x = (block.view(np.uint16) if block.dtype == np.float16 else block)[sel[li] - base]
            res.append((sq, ps, cls, vals, (ti, cls[ti], vals[ti]), (sel[ri], top[ri], kr, top_v[ri])))
            lda.append((kl, x, top[li], top_v[li]))
            if sum(len(q[0]) for q in lda) > cfg.lda_sample:  # the chunk's smallest keys, so far
                lda = [_merge_smallest(lda, cfg.lda_sample)]
    finally:
        bufs.put(buf)

    def cat(arrays: list[np.ndarray]) -> np.ndarray:
        return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)  # one block: the usual case

    cm = ChunkMemberships(i, *(cat([q[j] for q in res]) for j in range(4)), chunk.token_ids, valid)
    if out_dir is not None:
        write_memberships(out_dir / f"chunk-{i:05d}.npz", cm, chunk, scorer.k, cfg)
    entry, tcls, tval = (cat([q[4][f] for q in res]) for f in range(3))
    if len(res) > 1:  # entries of earlier blocks come first
        starts = np.cumsum([0] + [len(q[0]) for q in res[:-1]])
        entry = entry + np.repeat(starts, [len(q[4][0]) for q in res])
    at, rcls, rkey, rval = (cat([q[5][f] for q in res]) for f in range(4))
    w, m, k = cfg.context_window, cfg.top_m, scorer.k
    return {"tokens": tokens[flat], "lda": _merge_smallest(lda, cfg.lda_sample),
            "top": ExemplarCandidates.of_chunk(cm, cm.seq[entry], cm.pos[entry], tcls, tval, tval, cfg.n_exemplars,
                                               w, m, k),
            "random": ExemplarCandidates.of_chunk(cm, at // L, at % L, rcls, rkey, rval, cfg.n_random_exemplars,
                                                  w, m, k)}


def chunk_key_bases(seed: int, i: int) -> tuple[np.uint64, np.uint64]:
    """Chunk ``i``'s key bases: each position's LDA reservoir key and random exemplar key, uniform in
    [0, 1), are a hash of (seed, stream, chunk, flat position) (``kernels.rows.position_keys``),
    drawn in the kernel where they are compared, so they depend on neither the blocks nor the workers."""
    return kernels.key_base(seed, 3, i), kernels.key_base(seed, 2, i)


def _smallest(keys: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` smallest keys, in order of index (all of them if there are fewer)."""
    if len(keys) <= n:
        return np.arange(len(keys))
    return np.sort(np.argpartition(keys, n - 1)[:n])


def _merge_smallest(parts: list[tuple], n: int) -> tuple:
    """Reservoir candidates (keys, vectors, clusters, weights) of several blocks as one, the ``n``
    with the smallest keys."""
    if len(parts) == 1 and len(parts[0][0]) <= n:
        return parts[0]
    joined = [np.concatenate([p[j] for p in parts]) for j in range(4)]
    keep = _smallest(joined[0], n)
    return tuple(a[keep] for a in joined)


def assign_all(source: ChunkSource, centres: np.ndarray, cfg: SoftClusterConfig, ignore: np.ndarray,
               plan: MemoryPlan, out_dir: Path | None, ckpt: Checkpoint | None, state: dict | None,
               log: Callable[[str], None], save_extra: dict | None = None) -> Phase2Stats:
    """Phase 2: every position's memberships; sparse files (if ``out_dir``) and per-cluster statistics.

    Each worker thread takes whole chunks (2 per worker in flight, so none waits for the main
    thread), each chunk with its own partial sums; the main thread adds them, offers the exemplar
    and reservoir candidates and saves checkpoints in chunk order. Results do not depend on thread
    timing: a chunk's sums run in its row order, and the candidates a chunk passes on depend on the
    floors it was handed, but the adds re-check them exactly. The number of workers changes the
    block size, and so the order of the (token, cluster) sums, only: float rounding."""
    k, d = centres.shape
    if state is not None and int(state["phase"]) == 2:
        stats, chunk0 = Phase2Stats.from_state(cfg, d, state), int(state["next_chunk"])
        log(f"phase 2: resuming at chunk {chunk0}")
    else:
        stats, chunk0 = Phase2Stats.empty(cfg, d), 0
    scorer = Scorer(centres, 1.0 / cfg.temperature)
    n_workers = cfg.n_workers or available_cores()
    m = min(cfg.top_m, k)
    sub = soft_cluster_tiles.tile_rows(d, TILE_BYTES_PHASE2, 64)
    slots = pair_slots(sub, m)
    scratch = [TileBuffers(sub, d, k, m) for _ in range(n_workers)]
    bufs: SimpleQueue = SimpleQueue()  # a sub-tile's scratch per running chunk
    for b in scratch:
        bufs.put(b)
    window = IN_FLIGHT_PER_WORKER * n_workers
    free: list[ChunkParts] = []  # partial sums of finished chunks, to reuse
    # the state but for the (token, cluster) table, which grows with the distinct pairs seen (~1M
    # after 1.2M positions of text at k = 512): counted as each chunk starts, 3x (it and the
    # doubled table it moves into when it grows)
    state_bytes = (stats.nbytes() - stats.usage.table_nbytes + sum(b.nbytes for b in scratch) + k * d * 12
                   + 32 * 2 ** 20)
    inflight: deque = deque()
    # what can still enter the reservoir / the exemplar lists: updated in place as offers land,
    # read by the chunks in flight
    floors = (np.array([stats.lda.threshold()]), stats.top.floor(), stats.random.floor())

    parts_bytes = ChunkParts.zeros(k, 1, d, slots).nbytes - 8 * k  # and 8 k per position in the sequence

    per_candidate = 40 + (2 * cfg.context_window + 1 + cfg.top_m) * 8  # with its context

    def results(chunk: ActivationChunk) -> int:
        """Bytes of a computed chunk's results (sparse memberships, tokens, LDA candidates' keys) and,
        at most, its exemplar candidates (each cluster's best of the chunk)."""
        n = chunk.n_seq * chunk.seq_len
        candidates = min(k * cfg.n_exemplars, n * cfg.top_m) + min(k * cfg.n_random_exemplars, n)
        return n * (16 * cfg.top_m + 24) + candidates * per_candidate

    def footprint(chunk: ActivationChunk) -> int:
        """Bytes a chunk in flight holds besides its block: its activations if in memory, its
        per-position arrays, results and partial sums."""
        resident = getattr(chunk, "activations", None)
        n = chunk.n_seq * chunk.seq_len
        lda = min(n * min(float(floors[0][0]), 1.0), cfg.lda_sample) * (4 * d + 24)  # expected candidates
        return (n * (40 + 16 * 4) + results(chunk) + int(lda) + (resident.nbytes if resident is not None else 0)
                + parts_bytes + 8 * k * chunk.seq_len)

    def finish() -> None:
        i, fut, parts, _ = inflight.popleft()
        res = fut.result()
        stats.add_chunk(parts, res["tokens"])
        free.append(parts)
        stats.top.offer(res["top"])
        stats.random.offer(res["random"])
        stats.lda.add_sample(*res["lda"])
        floors[0][0] = stats.lda.threshold()
        floors[1][:], floors[2][:] = stats.top.floor(), stats.random.floor()
        if ckpt is not None and (i + 1) % cfg.checkpoint_every == 0 and i + 1 < len(source):
            st = {"phase": np.array(2), "next_chunk": np.array(i + 1), **(save_extra or {})}
            for prefix, acc in stats.parts():
                st.update(acc.state(prefix))
            ckpt.save(st)

    with ThreadPoolExecutor(n_workers, thread_name_prefix="softclust") as pool, blas_single_threaded():
        try:
            for i in range(chunk0, len(source)):
                chunk = source.open(i)
                _check_dim(chunk, d, lambda: source.open(0).name)
                valid = valid_positions(chunk, ignore)
                parts = next((p for p in free if p.pos_hist.shape[1] == chunk.seq_len), None)
                if parts is None:
                    parts = ChunkParts.zeros(k, chunk.seq_len, d, slots)
                else:
                    free.remove(parts)
                # one block per running chunk in memory at once; fewer chunks in flight where the
                # budget cannot hold them all (chunks held in memory), down to one at a time
                while True:
                    others = sum(c[3] for c in inflight) + results(chunk) + parts_bytes + 3 * stats.usage.table_nbytes
                    rows = plan.free_rows(chunk, state_bytes + others) // n_workers
                    if rows >= chunk.seq_len or not inflight:
                        break
                    finish()
                if rows < chunk.seq_len:
                    rows = plan.rows(chunk, state_bytes + others)  # alone: one block at a time (or the error)
                fut = pool.submit(_phase2_chunk, i, chunk, valid, scorer, cfg, rows, floors, parts, bufs, out_dir)
                inflight.append((i, fut, parts, footprint(chunk)))
                if len(inflight) >= window:
                    finish()
            while inflight:
                finish()
        finally:
            for entry in inflight:  # an error: let the running chunks end before the pool closes
                entry[1].cancel()
    return stats
