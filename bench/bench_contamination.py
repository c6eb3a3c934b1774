"""Contamination speed: building the hashed n-gram index and looking benchmark items up in it.

Synthetic chunks of ``--tokens-per-chunk`` words drawn from a Zipf(1.1) vocabulary of 50k words
(text with realistic repetition); queries of 60 words, half copied from chunks (planted), half
drawn fresh. For each n (13 and 8):

* **build**: :func:`ngrams.build_index` over ``--chunks`` chunks in batches of 20k (chunks/s,
  tokens/s, distinct n-grams, index bytes, peak RSS of the build alone);
* **lookup**: :meth:`NgramIndex.match` for ``--queries`` items (queries/s), checked to find every
  planted item;
* **peer**: the same n-grams in a Python ``set`` of tuples (build and lookup), in the same run.

Memory per 1M chunks and a projection to 1B tokens scale the measured bytes per distinct n-gram,
distinct n-grams per token and tokens/s linearly (the build is one pass; the final merge is a sort).
Each measurement runs in its own subprocess so its peak RSS is its own. Compare ratios: the
machine is shared.

    .venv/bin/python bench/bench_contamination.py --quick     # 5k chunks
    .venv/bin/python bench/bench_contamination.py             # 50k chunks

Writes ``bench/results/<date>-<git sha>-contamination.json`` and ``bench/results/latest-contamination.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from corpus_proximity.analysis.ngrams import TokenHasher, build_index, tokenize, tokenize_with_offsets
from corpus_proximity.cache import atomic_write_json, atomic_write_text

from bench_tree import _proc_kib, machine_info

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def corpus(n_chunks: int, tokens: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i}" for i in range(50_000)])
    ids = np.minimum(rng.zipf(1.1, size=n_chunks * tokens) - 1, len(vocab) - 1)
    words = vocab[ids].reshape(n_chunks, tokens)
    return [" ".join(row) for row in words]


def queries(chunks: list[str], n: int, seed: int = 1) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    fresh = corpus(n, 60, seed=seed + 100)
    out, planted = [], np.zeros(n, dtype=bool)
    for i in range(n):
        if i % 2 == 0:
            w = chunks[int(rng.integers(len(chunks)))].split()
            a = int(rng.integers(0, max(1, len(w) - 60)))
            out.append(" ".join(w[a:a + 60]))
            planted[i] = True
        else:
            out.append(fresh[i])
    return out, planted


def _peak_mb() -> float:
    return _proc_kib("self", "VmHWM") / 1024


def worker(task: dict) -> dict:
    chunks = corpus(task["chunks"], task["tokens"])
    qs, planted = queries(chunks, task["queries"])
    data_mb = _peak_mb()
    Path("/proc/self/clear_refs").write_text("5")
    n = task["n"]
    if task["kind"] == "ours":
        t0 = time.perf_counter()
        index = build_index((chunks[i:i + 20_000] for i in range(0, len(chunks), 20_000)), n)
        build_s = time.perf_counter() - t0
        peak = _peak_mb()
        hasher = TokenHasher()
        t0 = time.perf_counter()
        found = [m.longest_span >= 60 for m in index.match_many([tokenize(q) for q in qs], hasher)]
        lookup_s = time.perf_counter() - t0
        # the evidence's character offsets: contamination.py tokenises items with offsets (a per-character
        # pass), against the plain tokenizer on the same texts
        t0 = time.perf_counter()
        for q in qs:
            tokenize(q)
        plain_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for q in qs:
            tokenize_with_offsets(q)
        offsets_s = time.perf_counter() - t0
        return {"build_s": build_s, "lookup_s": lookup_s, "peak_mb": peak, "data_mb": data_mb,
                "tokenize_s": plain_s, "tokenize_offsets_s": offsets_s,
                "distinct": int(len(index.hashes)), "index_bytes": index.nbytes, "tokens": index.n_tokens,
                "planted_found": float(np.mean(np.array(found)[planted])),
                "false_found": float(np.mean(np.array(found)[~planted]))}
    t0 = time.perf_counter()
    grams: set = set()
    for c in chunks:
        t = tokenize(c)
        grams.update(tuple(t[i:i + n]) for i in range(len(t) - n + 1))
    build_s = time.perf_counter() - t0
    peak = _peak_mb()
    t0 = time.perf_counter()
    for q in qs:
        t = tokenize(q)
        sum(tuple(t[i:i + n]) in grams for i in range(len(t) - n + 1))
    return {"build_s": build_s, "lookup_s": time.perf_counter() - t0, "peak_mb": peak, "data_mb": data_mb,
            "distinct": len(grams)}


def run(task: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(task)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {task['kind']} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def write_markdown(result: dict) -> None:
    """``latest-contamination.md`` from one result (also callable on a saved JSON)."""
    env = result["environment"]
    md = [f"# Contamination bench ({result['date']}, {result['git']}, {env['nproc']} cpus; {result['chunks']:,} chunks × "
          f"{result['tokens_per_chunk']} tokens, {result['queries']:,} queries)\n",
          "| n | build chunks/s (set) | lookup queries/s (set) | index MB / 1M chunks (set peak) | "
          "build peak MB here (index MB) | 1B tokens: index GB, build h (1 core) |", "|---|---|---|---|---|---|"]
    for n, r in result["by_n"].items():
        p, o = r["projection_1b_tokens"], r["ours"]
        md.append(f"| {n} | {r['chunks_per_s']:,.0f} ({r['peer_chunks_per_s']:,.0f}) | {r['queries_per_s']:,.0f} "
                  f"({r['peer_queries_per_s']:,.0f}) | {r['index_mb_per_1m_chunks']:,.0f} "
                  f"({r['peer_peak_mb_per_1m_chunks']:,.0f}) | {o['peak_mb'] - o['data_mb']:,.0f} "
                  f"({o['index_bytes'] / 2**20:,.0f}) | {p['index_gb']:.1f}, {p['build_hours_one_core']:.1f} |")
    o = next(iter(result["by_n"].values()))["ours"]
    if "tokenize_offsets_s" in o:
        md.append(f"\nEvidence offsets: tokenising the queries with character offsets takes "
                  f"{o['tokenize_offsets_s'] / max(o['tokenize_s'], 1e-9):.1f}× the plain tokenizer "
                  f"({result['queries'] / max(o['tokenize_offsets_s'], 1e-9):,.0f} queries/s).")
    md.append("\nBuild peak = the final merge (about 3-4× the index: the batches' arrays, the sort order, the sorted "
              "copy) plus one batch's Python tokens (`contamination.batch_size` chunks), so it does not scale per chunk.")
    atomic_write_text(RESULTS / "latest-contamination.md", "\n".join(md) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="5k chunks, 2k queries")
    ap.add_argument("--chunks", type=int, default=None)
    ap.add_argument("--tokens-per-chunk", type=int, default=200)
    ap.add_argument("--queries", type=int, default=None)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    n_chunks = args.chunks or (5_000 if args.quick else 50_000)
    n_q = args.queries or (2_000 if args.quick else 10_000)
    rows = {}
    for n in (13, 8):
        task = {"chunks": n_chunks, "tokens": args.tokens_per_chunk, "queries": n_q, "n": n}
        ours, peer = run({**task, "kind": "ours"}), run({**task, "kind": "peer"})
        per_token = ours["distinct"] / ours["tokens"]
        bytes_per = ours["index_bytes"] / ours["distinct"]
        build_mb = ours["peak_mb"] - ours["data_mb"]
        rows[n] = {"ours": ours, "peer": peer, "chunks_per_s": n_chunks / ours["build_s"],
                   "tokens_per_s": ours["tokens"] / ours["build_s"], "queries_per_s": n_q / ours["lookup_s"],
                   "peer_chunks_per_s": n_chunks / peer["build_s"], "peer_queries_per_s": n_q / peer["lookup_s"],
                   "index_mb_per_1m_chunks": ours["index_bytes"] / n_chunks * 1e6 / 2**20,
                   "build_peak_mb": build_mb,
                   "peer_peak_mb_per_1m_chunks": (peer["peak_mb"] - peer["data_mb"]) / n_chunks * 1e6,
                   "projection_1b_tokens": {"index_gb": 1e9 * per_token * bytes_per / 2**30,
                                            "build_hours_one_core": 1e9 / (ours["tokens"] / ours["build_s"]) / 3600}}
        r = rows[n]
        print(f"n={n}: build {r['chunks_per_s']:,.0f} chunks/s ({r['tokens_per_s']:,.0f} tokens/s; set of tuples "
              f"{r['peer_chunks_per_s']:,.0f}), lookup {r['queries_per_s']:,.0f} queries/s (set "
              f"{r['peer_queries_per_s']:,.0f}); index {r['index_mb_per_1m_chunks']:,.0f} MB per 1M chunks "
              f"(set peak {r['peer_peak_mb_per_1m_chunks']:,.0f}); planted found {ours['planted_found']:.0%}, "
              f"fresh found {ours['false_found']:.0%}; 1B tokens → {r['projection_1b_tokens']['index_gb']:.1f} GB, "
              f"{r['projection_1b_tokens']['build_hours_one_core']:.1f} h on one core")
    machine = machine_info()
    sha = machine["git_sha"]
    result = {"date": datetime.date.today().isoformat(), "git": sha, "environment": machine, "chunks": n_chunks,
              "tokens_per_chunk": args.tokens_per_chunk, "queries": n_q, "by_n": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_json(RESULTS / f"{result['date']}-{sha}-contamination.json", result)
    write_markdown(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
