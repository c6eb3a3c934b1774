"""Annotation speed: cluster paths for many outputs, and corpus proximity exact vs approximate.

1. **Assignment.** :func:`corpus_index.assign_to_clusters` (descent: one matrix product per tree
   node over the items grouped there) against the brute-force numpy baseline (every item against
   every centroid of each depth, blocked), on a synthetic 3-level tree with ``--branching``³
   leaves (22³ = 10,648 by default) and ``--outputs`` unit vectors (1M by default; 384-d) drawn
   around random leaves. Target: ≤ 10 s for 1M outputs on 2 cores. Also reported: how often the
   descent's leaf is the flat nearest leaf (descent is greedy; the two answer different questions).
2. **Proximity.** Exact blocked search (``ExactSearch``) vs the faiss IVF-Flat index (``IVFSearch``,
   the default nlist = 4·sqrt(N) and nprobe) over ``--corpus-size`` clustered corpus vectors: build time, query
   time and recall@1 of IVF against exact on ``--queries`` held-out queries.

Each measurement runs in a fresh subprocess (``--worker``) that builds its data from the same seed,
then resets the peak-RSS counter and times one call, so peak memory is that call's (data included;
the data alone is reported too). Compare ratios, not seconds: the machine is shared.

    .venv/bin/python bench/bench_annotate.py --quick      # 100k outputs, 50k corpus
    .venv/bin/python bench/bench_annotate.py              # 1M outputs, 200k corpus

Writes ``bench/results/<date>-<git sha>-annotate.json`` and ``bench/results/latest-annotate.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from corpus_proximity.cache import atomic_write_json, atomic_write_text
from corpus_proximity.config import AnnotationConfig
from corpus_proximity.tree.index import ExactSearch, IVFSearch, assign_to_clusters, nearest_centroid_flat
from corpus_proximity.tree.tree import ROOT as ROOT_ID
from corpus_proximity.tree.tree import ClusterTree, Node

from bench_tree import _proc_kib, machine_info

ROOT = Path(__file__).resolve().parents[1]

RESULTS = ROOT / "bench" / "results"
DIM = 384


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def synthetic_tree(branching: int, depth: int = 3, seed: int = 0) -> ClusterTree:
    """Children = parent centroid + noise shrinking with depth, renormalised."""
    rng = np.random.default_rng(seed)
    nodes = {ROOT_ID: Node(ROOT_ID, None, -1, np.empty(0, np.int64), centroid=np.zeros(DIM, np.float32))}
    level = [ROOT_ID]
    for d in range(depth):
        nxt = []
        for pid in level:
            parent = nodes[pid]
            base = parent.centroid if d else np.zeros(DIM, np.float32)
            cents = _unit(base + (0.6 ** d) * rng.normal(size=(branching, DIM)).astype(np.float32) / np.sqrt(DIM) * 4)
            for k in range(branching):
                cid = str(k) if pid == ROOT_ID else f"{pid}.{k}"
                nodes[cid] = Node(cid, pid, d, np.empty(0, np.int64), centroid=cents[k])
                parent.children.append(cid)
                nxt.append(cid)
        level = nxt
    return ClusterTree(nodes=nodes, n_points=0, dim=DIM)


def outputs_near_leaves(tree: ClusterTree, n: int, seed: int = 1, block: int = 100_000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    leaves = np.stack([nd.centroid for nd in tree.leaves()])
    X = np.empty((n, DIM), dtype=np.float32)
    for lo in range(0, n, block):
        m = min(block, n - lo)
        X[lo:lo + m] = _unit(leaves[rng.integers(0, len(leaves), m)] + 0.04 * rng.normal(size=(m, DIM)).astype(np.float32))
    return X


def clustered_corpus(n: int, n_queries: int, seed: int = 2, spread: float = 0.12) -> tuple[np.ndarray, np.ndarray]:
    """500 topics on the sphere, diffuse: at spread 0.12 the median cosine distance of a query to
    its nearest corpus vector is ~0.72 (GSM8K questions to the default corpus: 0.77)."""
    rng = np.random.default_rng(seed)
    centres = _unit(rng.normal(size=(500, DIM)))
    pick = rng.integers(0, 500, n + n_queries)
    X = np.empty((n + n_queries, DIM), dtype=np.float32)
    for lo in range(0, len(X), 100_000):
        hi = min(len(X), lo + 100_000)
        X[lo:hi] = _unit(centres[pick[lo:hi]] + spread * rng.normal(size=(hi - lo, DIM)).astype(np.float32))
    return X[:n], X[n:]


def _vmhwm_mb() -> float:
    return _proc_kib("self", "VmHWM") / 1024


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def worker(task: dict) -> dict:
    if task["kind"] in ("descent", "flat"):
        tree = synthetic_tree(task["branching"])
        X = outputs_near_leaves(tree, task["n"])
        assign_to_clusters(X[:2000], tree)  # warm caches/BLAS threads
        data_mb = _vmhwm_mb()
        _reset_peak()
        t0 = time.perf_counter()
        if task["kind"] == "descent":
            a = assign_to_clusters(X, tree)
            leaf = a.node_index[:, -1]
            seconds = time.perf_counter() - t0
            ids = np.asarray(a.ids)
            flat_sample = nearest_centroid_flat(X[:20_000], np.stack([nd.centroid for nd in tree.leaves()]))
            leaf_ids = np.array([nd.id for nd in tree.leaves()], dtype=object)
            agree = float(np.mean(ids[leaf[:20_000]] == leaf_ids[flat_sample]))
            return {"seconds": seconds, "peak_mb": _vmhwm_mb(), "data_mb": data_mb, "agree_with_flat": agree}
        per_depth = [np.stack([nd.centroid for nd in tree.at_depth(d)]) for d in range(tree.n_depths)]
        for C in per_depth:
            nearest_centroid_flat(X, C)
        return {"seconds": time.perf_counter() - t0, "peak_mb": _vmhwm_mb(), "data_mb": data_mb}
    corpus, queries = clustered_corpus(task["n"], task["queries"])
    data_mb = _vmhwm_mb()
    _reset_peak()
    a = AnnotationConfig()
    if task["kind"] == "exact":
        t0 = time.perf_counter()
        idx, _ = ExactSearch(corpus).search(queries)
        out = {"build_s": 0.0, "query_s": time.perf_counter() - t0}
    else:
        t0 = time.perf_counter()
        index = IVFSearch.build(corpus, a.ivf_nlist, a.ivf_nprobe)
        t1 = time.perf_counter()
        idx, _ = index.search(queries)
        out = {"build_s": t1 - t0, "query_s": time.perf_counter() - t1}
    np.save(task["idx_out"], idx)
    return {**out, "peak_mb": _vmhwm_mb(), "data_mb": data_mb}


def run(task: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(task)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {task['kind']} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="100k outputs, 50k corpus (under a few minutes)")
    ap.add_argument("--outputs", type=int, default=None)
    ap.add_argument("--branching", type=int, default=22)
    ap.add_argument("--corpus-size", type=int, default=None)
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=1, help="time the descent this many times (report the best)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    n_out = args.outputs or (100_000 if args.quick else 1_000_000)
    n_corpus = args.corpus_size or (50_000 if args.quick else 200_000)
    leaves = args.branching ** 3
    print(f"assignment: {n_out:,} outputs × tree with {leaves:,} leaves (3 levels, {DIM}-d)")
    descent = min((run({"kind": "descent", "n": n_out, "branching": args.branching}) for _ in range(args.repeat)),
                  key=lambda r: r["seconds"])
    print(f"  descent     {descent['seconds']:.2f} s  peak {descent['peak_mb']:.0f} MB "
          f"(data {descent['data_mb']:.0f} MB); leaf = flat nearest leaf for {descent['agree_with_flat']:.1%}")
    flat = run({"kind": "flat", "n": n_out, "branching": args.branching})
    print(f"  brute force {flat['seconds']:.2f} s  peak {flat['peak_mb']:.0f} MB; "
          f"speed-up ×{flat['seconds'] / descent['seconds']:.1f}")
    print(f"proximity: {args.queries:,} queries × {n_corpus:,} corpus vectors")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        exact = run({"kind": "exact", "n": n_corpus, "queries": args.queries, "idx_out": f"{tmp}/exact.npy"})
        ivf = run({"kind": "ivf", "n": n_corpus, "queries": args.queries, "idx_out": f"{tmp}/ivf.npy"})
        recall = float(np.mean(np.load(f"{tmp}/exact.npy") == np.load(f"{tmp}/ivf.npy")))
    print(f"  exact {exact['query_s']:.2f} s; IVF build {ivf['build_s']:.1f} s + query {ivf['query_s']:.2f} s; "
          f"recall@1 {recall:.3f}; query speed-up ×{exact['query_s'] / ivf['query_s']:.1f}")
    machine = machine_info()
    sha = machine["git_sha"]
    result = {"date": datetime.date.today().isoformat(), "git": sha, "machine": f"{platform.machine()}, "
              f"{machine['nproc']} cpus", "environment": machine, "outputs": n_out, "leaves": leaves, "corpus": n_corpus,
              "queries": args.queries, "descent": descent, "brute_force": flat,
              "speedup": flat["seconds"] / descent["seconds"], "exact": exact, "ivf": ivf, "recall_at_1": recall}
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_json(RESULTS / f"{result['date']}-{sha}-annotate.json", result)
    md = (f"# Annotation bench ({result['date']}, {sha}, {result['machine']})\n\n"
          f"| task | ours | peer | ratio |\n|---|---|---|---|\n"
          f"| assign {n_out:,} outputs, {leaves:,}-leaf tree | descent {descent['seconds']:.2f} s, "
          f"{descent['peak_mb']:.0f} MB | brute-force numpy {flat['seconds']:.2f} s, {flat['peak_mb']:.0f} MB | "
          f"×{result['speedup']:.1f} faster |\n"
          f"| nearest chunk, {args.queries:,} queries × {n_corpus:,} | IVF {ivf['query_s']:.2f} s "
          f"(+ build {ivf['build_s']:.1f} s, once), recall@1 {recall:.3f} | exact {exact['query_s']:.2f} s | "
          f"×{exact['query_s'] / ivf['query_s']:.1f} faster |\n\n"
          f"Data in memory for the assignment: {descent['data_mb']:.0f} MB. Descent leaf = flat nearest leaf for "
          f"{descent['agree_with_flat']:.1%} of outputs.\n")
    atomic_write_text(RESULTS / "latest-annotate.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
