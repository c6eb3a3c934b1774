"""Time-to-tree and peak memory of ``recursive_cluster`` against plain global UMAP + HDBSCAN.

Ours is :func:`cluster_corpus.recursive_cluster`. The peer, measured in the same run on the same
vectors, is what most topic pipelines do: one UMAP fit on *all* vectors with our root's reducer
(``make_reducer``: n_components, n_neighbors, min_dist, cosine, seed; no fit sample), then our
HDBSCAN (``make_clusterer``, same backend) once with the root's ``min_cluster_size``. With
``root_clusterer="hdbscan"`` and N <= ``umap_fit_sample`` the peer's labels are our depth-0 split,
so the time ratio is the price of the levels below it; the default root (``hybrid``) runs that
HDBSCAN and then k-means by silhouette for k up to its count, in the same projection.

Data: unit-sphere 384-d float32 vectors with a planted hierarchy (10 coarse regions × 5 fine
blobs, seeded) for each ``--sizes`` N, and optionally a config's real embeddings (``--corpus``,
chunked and embedded through the stage cache).

Each (method, dataset) runs in a fresh subprocess (this script with ``--worker``) that memory-maps
the vectors from a .npy, warms numba's JIT up on a small random set, resets the peak-RSS counter
(``/proc/self/clear_refs``) and times one call. Peak memory is that process's VmHWM plus the
sampled peak of its joblib workers (n_jobs != 1; they start cold, as they do for users). The
machine is shared and noisy: compare the ratios (ours / peer), not the seconds.

    .venv/bin/python bench/bench_tree.py --quick            # N = 10,000 (make bench)
    .venv/bin/python bench/bench_tree.py                    # N = 10k, 30k, 100k
    .venv/bin/python bench/bench_tree.py --sizes --corpus configs/clustering_02_full.py

Writes ``bench/results/<date>-<git sha>-tree.json`` and ``bench/results/latest-tree.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path

import numpy as np

# Imported here, not inside the workers' timed calls, so import time is in neither measurement.
from sklearn.metrics import adjusted_rand_score

from corpus_proximity.cache import atomic_write_json, atomic_write_text, package_versions
from corpus_proximity.config import ClusteringConfig, load_config, to_dict
from corpus_proximity.text import embedding as embed_chunks
from corpus_proximity.tree.build import min_cluster_size, node_seed, recursive_cluster
from corpus_proximity.tree.clusterers import make_clusterer, make_reducer
from corpus_proximity.tree.tree import ROOT as ROOT_ID

ROOT = Path(__file__).resolve().parents[1]

RESULTS = ROOT / "bench" / "results"
N_COARSE, N_FINE, DIM = 10, 5, 384


def planted_sphere(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` unit vectors in 384-d: 10 coarse regions × 5 fine blobs; returns (X, coarse, fine).

    Region centres are random unit vectors (≈ √2 apart), fine centres sit 0.5 from theirs
    (≈ 0.7 apart) and points 0.25 from their blob centre, so the two levels are distinct."""
    rng = np.random.default_rng(seed)
    coarse_c = rng.standard_normal((N_COARSE, DIM))
    coarse_c /= np.linalg.norm(coarse_c, axis=1, keepdims=True)
    off = rng.standard_normal((N_COARSE * N_FINE, DIM))
    fine_c = np.repeat(coarse_c, N_FINE, axis=0) + 0.5 * off / np.linalg.norm(off, axis=1, keepdims=True)
    fine = rng.permutation(np.arange(n) % (N_COARSE * N_FINE))
    X = fine_c[fine].astype(np.float32)
    X += rng.standard_normal((n, DIM), dtype=np.float32) * np.float32(0.25 / np.sqrt(DIM))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X, fine // N_FINE, fine


# --- worker: one method on one dataset, in its own process --------------------------------------

def _proc_kib(pid: int | str, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next((int(line.split()[1]) for line in f if line.startswith(key + ":")), 0)


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            kids = [int(c) for t in os.listdir(f"/proc/{p}/task")
                    for c in open(f"/proc/{p}/task/{t}/children").read().split()]
        except OSError:
            continue
        out += kids
        todo += kids
    return out


class ChildrenPeak(threading.Thread):
    """Samples the summed RSS of this process's descendants (joblib workers) every 0.2 s."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_kib, self.stop = 0, threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.2):
            total = 0
            for p in _descendants(os.getpid()):
                try:
                    total += _proc_kib(p, "VmRSS")
                except OSError:  # the worker exited between listing and reading
                    pass
            self.peak_kib = max(self.peak_kib, total)


def _warm_up(cfg: ClusteringConfig) -> None:
    """Import umap/hdbscan and compile numba kernels outside the timed call: NN-descent +
    transform (> 4096 points) and the exact small-node path, so neither method pays for them."""
    X = np.random.default_rng(0).standard_normal((4200, DIM)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    reduced = make_reducer(dataclasses.replace(cfg, umap_fit_sample=4100)).fit_transform(X, 0)
    make_clusterer("hdbscan", cfg).fit_predict(reduced, 50, 0)
    make_reducer(dataclasses.replace(cfg, umap_fit_sample=None)).fit_transform(X[:300], 0)


def _carried_labels(tree, depth: int) -> np.ndarray:
    """labels_at_depth(depth), where a point whose branch stopped higher keeps its leaf's label."""
    out = tree.labels_at_depth(0)
    for d in range(1, depth + 1):
        cur = tree.labels_at_depth(d)
        out = np.where(cur == "", out, cur)
    return out.astype(str)


def _ari(truth: dict | None, labels: np.ndarray) -> dict | None:
    if truth is None:
        return None
    return {k: round(float(adjusted_rand_score(truth[k], labels)), 4) for k in ("coarse", "fine")}


def run_ours(X: np.ndarray, cfg: ClusteringConfig, truth: dict | None) -> dict:
    t0 = time.perf_counter()
    tree = recursive_cluster(X, cfg)
    seconds = time.perf_counter() - t0
    n = tree.n_points
    return {"seconds": seconds, "n_depths": tree.n_depths, "n_nodes": len(tree.nodes) - 1,
            "n_leaves": len(tree.leaves()), "nodes_per_depth": [len(tree.at_depth(d)) for d in range(tree.n_depths)],
            "n_clusters": len(tree.at_depth(0)), "noise_share_root": len(tree.root.noise) / n,
            "noise_share": sum(len(nd.noise) for nd in tree.nodes.values()) / n,
            "ari": {f"d{d}": _ari(truth, _carried_labels(tree, d)) for d in range(max(tree.n_depths, 1))}}


def run_peer(X: np.ndarray, cfg: ClusteringConfig, truth: dict | None) -> dict:
    # Our root's reducer and HDBSCAN (same parameters, backend and seed), fitted on all vectors.
    reducer = make_reducer(dataclasses.replace(cfg, umap_fit_sample=None))
    clusterer = make_clusterer("hdbscan", cfg)
    seed, mcs = node_seed(cfg.seed, ROOT_ID), min_cluster_size(len(X), 0, cfg)
    t0 = time.perf_counter()
    labels = clusterer.fit_predict(reducer.fit_transform(X, seed), mcs, seed)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "min_cluster_size": mcs, "n_clusters": len(np.unique(labels[labels >= 0])),
            "noise_share": float((labels < 0).mean()), "ari": _ari(truth, labels)}


def worker(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    cfg = ClusteringConfig(**spec["clustering"])
    X = np.load(spec["npy"], mmap_mode="r")
    truth = dict(np.load(spec["truth"])) if spec["truth"] else None
    t0 = time.perf_counter()
    _warm_up(cfg)
    warmup_s = time.perf_counter() - t0
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM: the peak below is the measured call's, not the warm-up's
    baseline_kib = _proc_kib("self", "VmRSS")
    sampler = ChildrenPeak()
    if cfg.n_jobs != 1:
        sampler.start()
    cpu0 = os.times()
    result = (run_ours if spec["method"] == "ours" else run_peer)(X, cfg, truth)
    cpu1 = os.times()
    sampler.stop.set()
    self_peak_kib = _proc_kib("self", "VmHWM")
    result.update(warmup_s=warmup_s, cpu_self_s=(cpu1.user + cpu1.system) - (cpu0.user + cpu0.system),
                  baseline_mib=baseline_kib / 1024, self_peak_mib=self_peak_kib / 1024,
                  children_peak_mib=sampler.peak_kib / 1024, peak_mib=(self_peak_kib + sampler.peak_kib) / 1024)
    Path(spec["out"]).write_text(json.dumps(result))
    return 0


# --- parent: datasets, subprocesses, report ----------------------------------------------------

def measure(method: str, npy: Path, truth: Path | None, cfg: ClusteringConfig, tmp: Path) -> dict:
    spec, out = tmp / f"{method}-spec.json", tmp / f"{method}-out.json"
    spec.write_text(json.dumps({"method": method, "npy": str(npy), "truth": str(truth) if truth else None,
                                "clustering": to_dict(cfg), "out": str(out)}))
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", str(spec)], cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"bench: the {method} worker on {npy} exited {proc.returncode} (its stderr is above)")
    return json.loads(out.read_text())


def bench_dataset(name: str, npy: Path, truth: Path | None, cfg: ClusteringConfig, tmp: Path) -> dict:
    n = int(np.load(npy, mmap_mode="r").shape[0])
    print(f"bench: {name} N={n}: peer (global UMAP + HDBSCAN) …", file=sys.stderr, flush=True)
    peer = measure("peer", npy, truth, cfg, tmp)
    print(f"bench: {name} N={n}: ours (recursive_cluster) …", file=sys.stderr, flush=True)
    ours = measure("ours", npy, truth, cfg, tmp)
    above = [max(r["peak_mib"] - r["baseline_mib"], 1e-9) for r in (ours, peer)]
    return {"data": name, "n": n, "clustering": to_dict(cfg), "ours": ours, "peer": peer,
            "time_ratio": ours["seconds"] / peer["seconds"], "mem_ratio": ours["peak_mib"] / peer["peak_mib"],
            "mem_above_baseline_ratio": above[0] / above[1]}


def _pair(a: dict | None, ka: str, b: dict | None, kb: str) -> str:
    return "/".join("–" if d is None else f"{d[k]:.2f}" for d, k in ((a, ka), (b, kb)))


def markdown(rows: list[dict]) -> str:
    head = ("| data | N | ours s | peer s | time ratio | ours peak MiB | peer peak MiB | mem ratio "
            "| ours ARI d0/d1 | peer ARI coarse/fine | ours depths/leaves | noise ours/peer |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        o, p = r["ours"], r["peer"]
        ours_ari = _pair(o["ari"].get("d0"), "coarse", o["ari"].get("d1"), "fine")
        peer_ari = _pair(p["ari"], "coarse", p["ari"], "fine")
        lines.append(f"| {r['data']} | {r['n']} | {o['seconds']:.1f} | {p['seconds']:.1f} | {r['time_ratio']:.2f} "
                     f"| {o['peak_mib']:.0f} | {p['peak_mib']:.0f} | {r['mem_ratio']:.2f} | {ours_ari} | {peer_ari} "
                     f"| {o['n_depths']}/{o['n_leaves']} | {o['noise_share']:.1%}/{p['noise_share']:.1%} |")
    return "\n".join(lines) + "\n"


def machine_info() -> dict:
    """Where and with what this ran; versions that decide speed are added to cache's list."""
    def git(*a: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *a], capture_output=True, text=True).stdout.strip()

    versions = package_versions()
    for name in ("fast-hdbscan", "numba", "pynndescent"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return {"git_sha": git("rev-parse", "--short", "HEAD") or "nogit",
            "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
            "nproc": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)),
            "platform": platform.platform(), "loadavg_end": os.getloadavg(), "versions": versions}


def corpus_embeddings(config_path: str) -> tuple[str, Path, ClusteringConfig]:
    """Chunk and embed a config's corpus through the stage cache; return its name, .npy and clustering."""
    cfg = load_config(config_path)
    if not Path(cfg.cache_dir).is_absolute():  # the cache is relative to the repo, wherever we run from
        cfg = dataclasses.replace(cfg, cache_dir=str(ROOT / cfg.cache_dir))
    sd = embed_chunks.run_embedding(cfg)
    embed_chunks.load_embeddings(sd)  # validates shape, dtype and finiteness
    return f"corpus:{cfg.name}", sd.file("embeddings.npy"), cfg.clustering


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="synthetic N=10,000 only (make bench)")
    p.add_argument("--sizes", type=int, nargs="*", default=None, metavar="N",
                   help="synthetic sizes (default 10000 30000 100000; give none to skip synthetic data)")
    p.add_argument("--corpus", metavar="CONFIG", help="also bench the embeddings of this configs/*.py corpus")
    p.add_argument("--n-components", type=int, default=None, help="ClusteringConfig.umap_n_components")
    p.add_argument("--n-jobs", type=int, default=None, help="ClusteringConfig.n_jobs")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args.worker)
    if args.quick and args.sizes is not None:
        p.error("--quick and --sizes are exclusive")
    sizes = [10000] if args.quick else [10000, 30000, 100000] if args.sizes is None else args.sizes
    overrides = {k: v for k, v in (("umap_n_components", args.n_components), ("n_jobs", args.n_jobs)) if v is not None}
    started = datetime.datetime.now()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-tree-") as tmp_dir:
        tmp = Path(tmp_dir)
        for n in sizes:
            X, coarse, fine = planted_sphere(n, args.seed)
            npy, truth = tmp / f"synthetic-{n}.npy", tmp / f"synthetic-{n}-truth.npz"
            np.save(npy, X)
            np.savez(truth, coarse=coarse, fine=fine)
            del X
            rows.append(bench_dataset("synthetic", npy, truth, ClusteringConfig(**overrides), tmp))
        if args.corpus:
            name, npy, cfg = corpus_embeddings(args.corpus)
            rows.append(bench_dataset(name, npy, None, dataclasses.replace(cfg, **overrides), tmp))
    machine, table = machine_info(), markdown(rows)
    sha = machine["git_sha"]
    out = RESULTS / f"{started:%Y-%m-%d}-{sha}-tree.json"
    atomic_write_json(out, {"started": started.isoformat(timespec="seconds"), "argv": sys.argv[1:],
                            "machine": machine, "rows": rows,
                            "synthetic": {"coarse": N_COARSE, "fine": N_FINE, "dim": DIM, "seed": args.seed}})
    atomic_write_text(RESULTS / "latest-tree.md", (
        f"# Tree benchmark: {started:%Y-%m-%d} {sha}{' (dirty)' if machine['git_dirty'] else ''}, "
        f"{machine['nproc']} cores\n\nours = recursive_cluster, peer = one global UMAP + HDBSCAN; ratios are "
        f"ours / peer. Peaks include the ~0.6 GiB (interpreter, libraries, JIT code) each process holds before "
        f"the call; `mem_above_baseline_ratio` in {out.name} leaves it out.\n\n{table}"))
    print(table)
    print(f"bench: {out.relative_to(ROOT)} and {(RESULTS / 'latest-tree.md').relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
