"""Throughput and peak memory of the streaming soft clustering.

Throughput: vectors per second of one pass of phase 1 (memberships + stepwise-EM sums, 4·k·d
flops per vector) and of phase 2 (memberships, sparse selection and every per-cluster statistic,
2·k·d flops per vector), for d in {384, 2304} and k in {64, 512}, on float16 chunks held in
memory. The peer is the machine's matmul roofline measured in the same run, right before each
case: numpy float32 GEMM (2048³) GFLOP/s with the same BLAS threads. Reported: the pass's useful
GFLOP/s and its ratio to the roofline (target >= 0.5). A phase-1 pass is one epoch resumed from a
checkpoint-like state (initialisation left out); phase 2 runs without writing membership files.
Best of five runs of each: the roofline is the highest of 3 GEMMs before each of those runs (60 per
case), and with three runs of each pass (until 2026-11-23) a busy minute of this shared machine
could leave a pass no quiet run against a roofline that had had many (the same code's ratios moved
by up to 0.15 between runs an hour apart).

Phase 2 is timed three times: *warm*, resumed with statistics that have already seen four times as
many other positions (reservoir and exemplar lists full and rarely beaten, as in the bulk of a long
run), *cold*, from empty statistics, and warm again with token ids as in text (the generated ids
are one per planted centre, 100 in all; text has thousands of distinct (token, cluster) pairs per
chunk, which the token statistics pay for). A third peer, *products only*, runs phase 1's two matrix
products alone in the same tiles and threads: the ceiling BLAS gives for these shapes. One more,
untimed, warm run of phase 2 with its stages wrapped in thread-CPU clocks, and its block kernel's
stages run one at a time on one thread, say where its time goes.

Memory: a fresh process clusters activations 10x its memory budget, generated on the fly (never
stored), and another streams activations 4x the budget from chunk files on disk; each reports its
peak resident memory (VmHWM, the whole process: interpreter and libraries included) against the
budget.

    .venv/bin/python bench/bench_soft_cluster.py            # ~8 min on 2 cores
    .venv/bin/python bench/bench_soft_cluster.py --quick    # d=384 only, smaller memory runs
    .venv/bin/python bench/bench_soft_cluster.py --render bench/results/<run>.json   # tables again

Writes ``bench/results/<date>-<git sha>-soft.json`` and ``bench/results/latest-soft.md`` (``--quick``:
``-soft-quick.json`` / ``latest-soft-quick.md``, so a quick check leaves the full table alone).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
from threadpoolctl import threadpool_limits

from corpus_proximity.cache import atomic_write_json, atomic_write_text, package_versions
from corpus_proximity.config import SoftClusterConfig
from corpus_proximity.soft import stats as soft_cluster_stats
from corpus_proximity.soft import stream as soft_cluster_stream
from corpus_proximity.soft import tiles as soft_cluster_tiles
from corpus_proximity.soft import vmf
from corpus_proximity.soft.activations import ArrayChunk, FileSource, GeneratedSource, write_chunk
from corpus_proximity.soft.kernels import rows as soft_cluster_kernels
from corpus_proximity.soft.stage import SequentialSoftClustering
from corpus_proximity.soft.stream import GB, MemoryPlan, assign_all, fit_centres, rss_bytes
from corpus_proximity.soft.tiles import available_cores, tile_rows

ROOT = Path(__file__).resolve().parents[1]

RESULTS = ROOT / "bench" / "results"
SEQ_LEN = 128
VOCAB = 30_522


def planted_chunk(i: int, n_seq: int, d: int, centres: np.ndarray, seed: int = 0) -> ArrayChunk:
    """``n_seq`` × 128 float16 vectors near random planted centres, a padded tail per sequence.
    Drawn 16 sequences at a time, so making a chunk holds ~6 MB of float32 temporaries at d = 384
    (the memory runs measure the clustering, not this generator)."""
    r = np.random.default_rng([seed, i])
    lab = r.integers(len(centres), size=(n_seq, SEQ_LEN))
    x = np.empty((n_seq, SEQ_LEN, d), dtype=np.float16)
    for lo in range(0, n_seq, 16):
        part = r.standard_normal((min(16, n_seq - lo), SEQ_LEN, d), dtype=np.float32)
        part *= np.float32(0.5 / np.sqrt(d))
        part += centres[lab[lo:lo + 16]]
        x[lo:lo + 16] = part
    mask = np.arange(SEQ_LEN)[None, :] < r.integers(SEQ_LEN // 2, SEQ_LEN + 1, size=n_seq)[:, None]
    tokens = lab * 7 + 3  # one id per planted centre
    return ArrayChunk(f"gen-{i}", x, mask, tokens.astype(np.int32))


def text_tokens(chunk: ArrayChunk, i: int, seed: int = 0) -> ArrayChunk:
    """The chunk with token ids as in text: half of the positions keep their planted centre's id, half
    are drawn by Zipf's law over a 30,522-id vocabulary (BERT's): ~1,600 distinct ids and thousands
    of distinct (token, cluster) pairs per 64-sequence chunk, where the planted ids give 100 in all."""
    t = np.random.default_rng([seed, i, 1])
    ids = chunk.token_ids
    ids = np.where(t.random(ids.shape) < 0.5, ids, t.choice(VOCAB, size=ids.shape, p=_zipf()))
    return ArrayChunk(chunk.name, chunk.activations, chunk.attention_mask, ids.astype(np.int32))


@functools.cache
def _zipf() -> np.ndarray:
    """Zipf's law over the vocabulary, the i-th most frequent id with probability ~ 1 / i."""
    p = 1.0 / np.arange(1, VOCAB + 1)
    return p / p.sum()


def centres_for(d: int, n: int = 100, seed: int = 0) -> np.ndarray:
    c = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def roofline(n: int = 2048, reps: int = 3) -> float:
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = a.T.copy()
    best = 0.0
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = max(best, 2 * n ** 3 / (time.perf_counter() - t) / 1e9)
    # OpenBLAS's threads spin for ~0.1 s after a multi-threaded product before they sleep; a pass
    # started at once shared the cores with them (phase 1 ran 1.3-1.5x slower)
    time.sleep(0.5)
    return best


def products_only(d: int, k: int, n_vectors: int, workers: int) -> float:
    """Seconds for just phase 1's two products (x @ C.T and e.T @ x into preallocated arrays) over
    ``n_vectors`` float32 vectors, in the passes' tiles and threads: what BLAS gives for these
    shapes on these cores, a ceiling for the passes below the 2048³ roofline."""
    rows = tile_rows(d)
    per_worker = max(1, n_vectors // (rows * workers))
    c = centres_for(d, k, 1).T

    def work(w: int) -> None:
        x = np.random.default_rng(w).standard_normal((rows, d), dtype=np.float32)
        e, kd = np.empty((rows, k), dtype=np.float32), np.empty((k, d), dtype=np.float32)
        for _ in range(per_worker):
            np.matmul(x, c, out=e)
            np.matmul(e.T, x, out=kd)

    with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(workers) as ex:
        t = time.perf_counter()
        list(ex.map(work, range(workers)))
        return (time.perf_counter() - t) * n_vectors / (per_worker * rows * workers)


@contextmanager
def stage_clock(cpu: dict[str, float]) -> Iterator[None]:
    """Add thread CPU seconds into ``cpu`` while the block runs, by wrapping the workers' block
    kernel (``kernel``: gather, product, exp and row kernel in one numba call) and their whole
    chunk jobs; ``glue`` = the jobs outside the kernel (keys, outputs, concatenations)."""
    lock = threading.Lock()

    def timed(name: str, f):
        def g(*a, **kw):
            c = time.thread_time()
            try:
                return f(*a, **kw)
            finally:
                with lock:
                    cpu[name] = cpu.get(name, 0.0) + time.thread_time() - c
        return g

    originals = [(soft_cluster_kernels, "phase2_block"), (soft_cluster_stream, "_phase2_chunk")]
    saved = [getattr(owner, name) for owner, name in originals]
    soft_cluster_kernels.phase2_block = timed("kernel", saved[0])
    soft_cluster_stream._phase2_chunk = timed("job", saved[1])
    try:
        yield
    finally:
        for (owner, name), f in zip(originals, saved):
            setattr(owner, name, f)
        cpu["glue"] = cpu.pop("job", 0.0) - cpu.get("kernel", 0.0)


def kernel_stages(d: int, k: int, chunk: ArrayChunk, centres: np.ndarray, reps: int = 5) -> dict[str, float]:
    """Core-µs per position of the block kernel's stages, one thread, best of ``reps``: the whole
    kernel over one chunk (``soft_cluster_stream.phase2_block``) and, apart, its gather, product and
    exp in the same sub-tiles; ``rows`` = the rest (the row kernel and the loop)."""
    flat = np.flatnonzero(chunk.attention_mask.ravel())
    block, tokens, n = chunk.activations.reshape(-1, d), chunk.token_ids.ravel(), len(flat)
    scorer = vmf.Scorer(centres, 20.0)
    sub = tile_rows(d, soft_cluster_tiles.TILE_BYTES_PHASE2, 64)
    buf = soft_cluster_stream.TileBuffers(sub, d, k, 4)
    parts = soft_cluster_stats.ChunkParts.zeros(k, SEQ_LEN, d, soft_cluster_stats.pair_slots(sub, 4))
    floors = (0.0, np.full(k, 2.0), np.full(k, 2.0))  # no candidates: as deep into a warm run
    bases = soft_cluster_stream.chunk_key_bases(0, 0)

    def whole() -> None:
        soft_cluster_stream.phase2_block(block, flat, 0, scorer, tokens, SEQ_LEN, 0.05, 4, 0.5, bases, floors, parts,
                                         buf)
        parts.clear()

    spans = [(lo, min(n, lo + sub)) for lo in range(0, n, sub)]
    x, e, sq, bits = buf.x, buf.e, buf.sq, buf.bits
    stages = {"whole": whole,
              "gather": lambda: [soft_cluster_kernels.load_rows(block, flat[a:b], x[:b - a], sq) for a, b in spans],
              "product": lambda: [np.matmul(x[:b - a], scorer.centres_t, out=e[:b - a]) for a, b in spans],
              "exp": lambda: [soft_cluster_kernels.exp_rows(e[:b - a], buf.scale, bits) for a, b in spans]}
    buf.scale[:] = 0.0  # exp(0): finite
    best = {name: np.inf for name in stages}
    with threadpool_limits(1, user_api="blas"):
        for _ in range(reps):
            for name, f in stages.items():
                c = time.thread_time()
                f()
                best[name] = min(best[name], time.thread_time() - c)
    out = {name: round(v / n * 1e6, 3) for name, v in best.items()}
    out["rows"] = round(out["whole"] - out["gather"] - out["product"] - out["exp"], 3)
    return out


def phase2_breakdown(run, state: dict, n_pos: int) -> dict[str, float]:
    """Core-µs per position in one (untimed) warm run of phase 2: the workers' block kernels and
    the rest of their chunk jobs, and the main thread's own work (adds, offers), which runs while
    the workers go on."""
    cpu: dict[str, float] = {}
    state = {key: np.array(v) for key, v in state.items()}
    with stage_clock(cpu):
        c = time.thread_time()
        run(state)
        cpu["main"] = time.thread_time() - c
    return {name: round(v / n_pos * 1e6, 3) for name, v in cpu.items()}


def throughput(d: int, k: int, n_vectors: int, reps: int = 5, warm_passes: int = 4) -> dict:
    n_seq = max(1, 8192 // SEQ_LEN)
    n_chunks = max(1, n_vectors // (n_seq * SEQ_LEN))
    cen = centres_for(d)
    chunks = [planted_chunk(i, n_seq, d, cen) for i in range(n_chunks)]
    src = GeneratedSource(n_chunks, lambda i: chunks[i])
    n_pos = sum(int(c.attention_mask.sum()) for c in chunks)
    cfg = SoftClusterConfig(n_clusters=k, init_sample=max(2000, 4 * k), max_points=n_seq * SEQ_LEN, tol=0.0,
                            n_epochs=1, lda_sample=5000, memory_budget_gb=4.0, seed=0)
    plan = MemoryPlan(int(cfg.memory_budget_gb * GB), rss_bytes(), k)
    none = np.zeros(0, dtype=np.int64)
    quiet = lambda s: None  # noqa: E731
    init = fit_centres(src, cfg, none, plan, None, None, quiet).centres
    # one epoch from given centres = phase 1 resumed from a checkpoint at its start (no init)
    start = {"phase": np.array(1), "centres": init, "s": np.zeros(init.shape), "n": np.zeros(k), "t": np.array(0),
             "epoch": np.array(0), "next_chunk": np.array(0), "epoch_start": init, "history": np.zeros((0, 8)),
             "epoch_shift": np.zeros(0)}
    # phase 2 "warm": resumed with statistics that have seen ``warm_passes`` times as many other
    # positions, as deep into a long run, where reservoirs and exemplar lists are full and rarely
    # change (not the same positions: those would all re-enter the lists they are in). A real run
    # sees millions of positions, so even this overstates how often candidates still get in (the
    # rate falls as 1 / positions seen). "cold" starts empty
    fresh = GeneratedSource(n_chunks * warm_passes, lambda i: planted_chunk(n_chunks + i, n_seq, d, cen))
    seen = assign_all(fresh, init, cfg, none, plan, None, None, None, quiet)
    warm = {"phase": np.array(2), "next_chunk": np.array(0)}
    for prefix, acc in seen.parts():
        warm.update(acc.state(prefix))
    # the same vectors with token ids as in text: thousands of distinct (token, cluster) pairs
    text = [text_tokens(c, i) for i, c in enumerate(chunks)]
    src_text = GeneratedSource(n_chunks, lambda i: text[i])
    fresh = GeneratedSource(n_chunks * warm_passes,
                            lambda i: text_tokens(planted_chunk(n_chunks + i, n_seq, d, cen), n_chunks + i))
    seen = assign_all(fresh, init, cfg, none, plan, None, None, None, quiet)
    warm_text = {"phase": np.array(2), "next_chunk": np.array(0)}
    for prefix, acc in seen.parts():
        warm_text.update(acc.state(prefix))
    workers = available_cores()
    # the passes take over (and update) the state they resume from, as from a checkpoint: each run
    # gets its own copy, made before the clock starts
    runs = {"phase1": (start, lambda s: fit_centres(src, cfg, none, plan, None, s, quiet)),
            "phase2": (warm, lambda s: assign_all(src, init, cfg, none, plan, None, None, s, quiet)),
            "phase2_cold": (None, lambda s: assign_all(src, init, cfg, none, plan, None, None, None, quiet)),
            "phase2_text": (warm_text, lambda s: assign_all(src_text, init, cfg, none, plan, None, None, s, quiet))}
    best = {name: np.inf for name in [*runs, "products"]}
    peak = 0.0
    for _ in range(reps):  # best of reps, each right after a roofline measurement
        for name, (state, run) in runs.items():
            state = {key: np.array(v) for key, v in state.items()} if state is not None else None
            peak = max(peak, roofline())
            t = time.perf_counter()
            run(state)
            best[name] = min(best[name], time.perf_counter() - t)
        best["products"] = min(best["products"], products_only(d, k, n_pos, workers))
    flops = {"phase1": 4 * k * d, "phase2": 2 * k * d, "phase2_cold": 2 * k * d, "phase2_text": 2 * k * d,
             "products": 4 * k * d}
    out = {"d": d, "k": k, "vectors": n_pos, "workers": workers, "roofline_gflops": round(peak, 1),
           "phase2_core_us": phase2_breakdown(runs["phase2"][1], warm, n_pos),
           "phase2_text_core_us": phase2_breakdown(runs["phase2_text"][1], warm_text, n_pos),
           "kernel_core_us": kernel_stages(d, k, chunks[0], init)}
    for name, seconds in best.items():
        v = n_pos / seconds
        out[f"{name}_vectors_per_s"] = round(v)
        out[f"{name}_gflops"] = round(v * flops[name] / 1e9, 1)
        out[f"{name}_ratio"] = round(v * flops[name] / 1e9 / peak, 3)
    return out


def _vmhwm() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def memory_worker(mode: str, budget_gb: float, times: float, d: int, k: int, directory: str | None) -> int:
    """Run in a fresh process: cluster ``times`` × budget of activations and print peak RSS as JSON."""
    n_seq = 256
    chunk_bytes = n_seq * SEQ_LEN * d * 2
    n_chunks = int(np.ceil(times * budget_gb * GB / chunk_bytes))
    cen = centres_for(d)
    if mode == "disk":
        src = FileSource(sorted(Path(directory).glob("chunk-*.npz")))
    else:
        src = GeneratedSource(n_chunks, lambda i: planted_chunk(i, n_seq, d, cen))
    model = SequentialSoftClustering(k, init_sample=5000, max_points=2048, n_epochs=1, lda_sample=5000,
                                     memory_budget_gb=budget_gb, seed=0)
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        model.fit(src, out)
    print(json.dumps({"mode": mode, "budget_gb": budget_gb, "activation_gb": round(len(src) * chunk_bytes / GB, 2),
                      "chunks": len(src), "positions": int(model.summary_["n_positions"]),
                      "peak_rss_gb": round(_vmhwm() / GB, 3), "seconds": round(time.perf_counter() - t, 1)}))
    return 0


def measure_memory(mode: str, budget_gb: float, times: float, d: int, k: int) -> dict:
    (ROOT / "data").mkdir(exist_ok=True)  # git-ignored: absent on a fresh clone
    with tempfile.TemporaryDirectory(dir=ROOT / "data") as tmp:
        if mode == "disk":
            n_seq, cen = 256, centres_for(d)
            n_chunks = int(np.ceil(times * budget_gb * GB / (n_seq * SEQ_LEN * d * 2)))
            for i in range(n_chunks):
                c = planted_chunk(i, n_seq, d, cen)
                write_chunk(Path(tmp) / f"chunk-{i:05d}.npz", c.activations, c.attention_mask, c.token_ids)
        cmd = [sys.executable, __file__, "--memory-worker", mode, str(budget_gb), str(times), str(d), str(k), tmp]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    r["peak_over_budget"] = round(r["peak_rss_gb"] / budget_gb, 3)
    return r


def _git() -> dict:
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return {"sha": sha or "unknown"}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--memory-worker":
        mode, budget, times, d, k, directory = sys.argv[2:8]
        return memory_worker(mode, float(budget), float(times), int(d), int(k), directory)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="d=384 only and smaller memory runs")
    p.add_argument("--budget-gb", type=float, default=0.6, help="memory budget of the memory runs")
    p.add_argument("--render", type=Path, help="only rewrite latest-soft.md from this saved results JSON")
    args = p.parse_args()
    if args.render:
        saved = json.loads(args.render.read_text())
        parts = args.render.name.removesuffix(".json").split("-", 4)  # date (3 parts), sha, soft[-quick]
        stamp, suffix = "-".join(parts[:4]), parts[4]
        report(saved["throughput"], saved["memory"], stamp, saved["machine"]["nproc"], RESULTS / f"latest-{suffix}.md")
        return 0
    dims = (384,) if args.quick else (384, 2304)
    rows = []
    for d in dims:
        for k in (64, 512):
            r = throughput(d, k, 400_000 if d == 384 else 150_000)
            print(r, flush=True)
            rows.append(r)
    budget = 0.4 if args.quick else args.budget_gb
    mem = [measure_memory("generated", budget, 10, 384, 64), measure_memory("disk", budget, 4, 384, 64)]
    for m in mem:
        print(m, flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    git = _git()
    stamp = f"{datetime.date.today().isoformat()}-{git['sha']}"
    machine = {"nproc": os.cpu_count(), "platform": platform.platform(), "load": os.getloadavg(),
               "versions": package_versions(), "git": git}
    suffix = "soft-quick" if args.quick else "soft"
    atomic_write_json(RESULTS / f"{stamp}-{suffix}.json", {"machine": machine, "throughput": rows, "memory": mem})
    report(rows, mem, stamp, os.cpu_count(), RESULTS / f"latest-{suffix}.md")
    return 0


def _cell(r: dict, key: str) -> str:
    """A ratio, or a dash where a run saved before this column existed has none."""
    return f"{r[key]:.2f}" if key in r else "–"


def report(rows: list[dict], mem: list[dict], stamp: str, cores: int, path: Path) -> None:
    """Write the markdown tables of a run (also from a saved JSON: ``--render JSON``)."""
    lines = [f"# Soft clustering benchmark: {stamp}, {cores} cores", "",
             "Throughput per pass on float16 chunks in memory, best of 5; roofline = numpy float32 GEMM 2048³ GFLOP/s "
             "on all cores, measured before every run (the highest kept); ratio = the pass's useful GFLOP/s (phase 1: "
             "4kd, phase 2: 2kd per vector) / roofline; target >= 0.5. Phase 2 = memberships, sparse selection and every "
             "per-cluster statistic (no files written): *warm* resumes with statistics that have seen 4x as many other "
             "positions, as in the bulk of a long run, *cold* starts them empty. Token ids: one per planted centre "
             "(100 in all), and *text*: the same vectors and warm start with half the ids drawn by Zipf's law over "
             "30,522 (BERT's vocabulary), thousands of distinct (token, cluster) pairs per chunk, as in text. "
             "*Products only* = phase 1's two matrix products alone "
             "in the same tiles and threads: what BLAS gives for these shapes.", "",
             "| d | k | roofline GFLOP/s | phase 1 vectors/s | phase 1 ratio | phase 2 warm vectors/s | phase 2 warm ratio "
             "| phase 2 warm, text tokens | phase 2 cold ratio | products only ratio |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['d']} | {r['k']} | {r['roofline_gflops']} | {r['phase1_vectors_per_s']:,} | {r['phase1_ratio']:.2f} | "
              f"{r['phase2_vectors_per_s']:,} | {r['phase2_ratio']:.2f} | {_cell(r, 'phase2_text_ratio')} | "
              f"{r['phase2_cold_ratio']:.2f} | {r['products_ratio']:.2f} |" for r in rows]
    lines += ["", "Where phase 2 (warm) spends its time, in core-µs per vector. From one more warm run with clocks: the "
              "workers' block kernels (gather, product, exp and row kernel in one numba call per block), the rest of "
              "their chunk jobs, and the main thread's adds and offers, which run alongside the workers. From the "
              "kernel run alone on one thread over one chunk: its stages (*rows* = the whole kernel less the others: "
              "the row kernel and the loop; *noise* where that difference is within the timings' noise). "
              "*Product at roofline* = the product alone at the roofline's per-core speed; a pass at ratio 0.5 has "
              "twice that for everything. *Text tokens*: the same run's three parts with text's token ids.", "",
              "| d | k | kernels | job glue | main thread | alone: gather | product | exp | rows | whole | "
              "product at roofline | text tokens: kernels | job glue | main thread |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        c, s1 = r["phase2_core_us"], r["kernel_core_us"]
        at_roof = 2 * r["k"] * r["d"] / (r["roofline_gflops"] * 1e3 / r["workers"])
        rest = f"{s1['rows']:.2f}" if s1["rows"] > 0.02 * s1["whole"] else "noise"  # a difference of timings
        t = r.get("phase2_text_core_us", {})
        lines.append(f"| {r['d']} | {r['k']} | {c['kernel']:.2f} | {c['glue']:.2f} | {c['main']:.2f} | "
                     f"{s1['gather']:.2f} | {s1['product']:.2f} | {s1['exp']:.2f} | {rest} | "
                     f"{s1['whole']:.2f} | {at_roof:.2f} | {_cell(t, 'kernel')} | {_cell(t, 'glue')} | "
                     f"{_cell(t, 'main')} |")
    lines += ["", "Peak RSS of a whole process (interpreter and libraries included) against its memory budget:", "",
              "| activations | budget GB | activations GB | peak RSS GB | peak / budget | seconds |", "|---|---|---|---|---|---|"]
    lines += [f"| {m['mode']} | {m['budget_gb']} | {m['activation_gb']} | {m['peak_rss_gb']} | {m['peak_over_budget']} | "
              f"{m['seconds']} |" for m in mem]
    atomic_write_text(path, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
