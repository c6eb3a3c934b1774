"""Time to tree at scale: sample-fit + assign (``clustering.fit_sample``) vs the full fit.

Data: ``bench_tree.planted_sphere`` (384-d unit vectors, 10 regions × 5 blobs, seeded) at each
``--sizes`` N. Ours-at-scale = :func:`corpus_proximity.tree.scale.build_tree` with the default
``ClusteringConfig`` and ``fit_sample`` (the tree fitted on that many chunks, every other chunk
assigned by the kNN vote; faiss IVF above ``assign_exact_max``); the peer, at the ``--full-at``
sizes only, is the full fit (``recursive_cluster`` on all N) on the same vectors in the same run.
Reported: seconds (and each step: sample, fit, index, assign, assemble), peak RSS, ARI against
the planted levels (depth 0 vs regions, depth 1 carried down vs blobs), and where both ran the
agreement of the two trees (ARI of their depth-0 labels and of their depth-1 labels, noise one
label), plus the log-log slope of time vs N and the time it projects to 1M when 1M was not run.

Each (method, N) runs in its own subprocess (``--worker``) that memory-maps the vectors, warms
numba's JIT up (``bench_tree._warm_up``), resets the peak-RSS counter and times one call; the
memory-mapped vectors it touches count in its RSS. The machine is shared: run it under ``nice``
and read the load average recorded with the results.

    nice .venv/bin/python bench/bench_tree_scale.py                          # 100k (+ full fit), 300k, 1M
    nice .venv/bin/python bench/bench_tree_scale.py --sizes 100000 300000    # project 1M from the slope

Writes ``bench/results/<date>-<git sha>-tree-scale.json`` and ``bench/results/latest-tree-scale.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score

from corpus_proximity.cache import atomic_write_json, atomic_write_text
from corpus_proximity.config import ClusteringConfig, to_dict
from corpus_proximity.tree.build import recursive_cluster
from corpus_proximity.tree.scale import build_tree

from bench_tree import RESULTS, _carried_labels, _proc_kib, _warm_up, machine_info, planted_sphere


def worker(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    cfg = ClusteringConfig(**spec["clustering"])
    X = np.load(spec["npy"], mmap_mode="r")
    t0 = time.perf_counter()
    _warm_up(cfg)
    warmup_s = time.perf_counter() - t0
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM: the peak is the timed call's
    baseline_kib = _proc_kib("self", "VmRSS")
    timings: dict = {}
    cpu0, t0 = os.times(), time.perf_counter()
    tree = build_tree(X, cfg, timings=timings) if spec["method"] == "scale" else recursive_cluster(X, cfg)
    seconds, cpu1 = time.perf_counter() - t0, os.times()
    peak_kib = _proc_kib("self", "VmHWM")
    labels = {"d0": tree.labels_at_depth(0).astype(str), "d1": tree.labels_at_depth(1).astype(str),
              "c1": _carried_labels(tree, 1)}
    np.savez(spec["labels"], **labels)
    n = tree.n_points
    Path(spec["out"]).write_text(json.dumps({
        "seconds": seconds, "steps": timings, "warmup_s": warmup_s,
        "cpu_s": (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system),
        "baseline_mib": baseline_kib / 1024, "peak_mib": peak_kib / 1024,
        "n_depths": tree.n_depths, "nodes_per_depth": [len(tree.at_depth(d)) for d in range(tree.n_depths)],
        "noise_share": sum(len(nd.noise) for nd in tree.nodes.values()) / n}))
    return 0


def measure(method: str, npy: Path, cfg: ClusteringConfig, tmp: Path) -> tuple[dict, dict]:
    spec, out, labels = tmp / f"{method}-spec.json", tmp / f"{method}-out.json", tmp / f"{method}-labels.npz"
    spec.write_text(json.dumps({"method": method, "npy": str(npy), "clustering": to_dict(cfg),
                                "out": str(out), "labels": str(labels)}))
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", str(spec)],
                          cwd=Path(__file__).resolve().parents[1])
    if proc.returncode != 0:
        raise SystemExit(f"bench: the {method} worker on {npy} exited {proc.returncode} (its stderr is above)")
    return json.loads(out.read_text()), dict(np.load(labels, allow_pickle=False))


def ari(a: np.ndarray, b: np.ndarray) -> float:
    return round(float(adjusted_rand_score(a, b)), 4)


def slope(rows: list[dict]) -> float | None:
    pts = [(math.log(r["n"]), math.log(r["scale"]["seconds"])) for r in rows]
    if len(pts) < 2:
        return None
    x, y = np.array(pts).T
    return float(np.polyfit(x, y, 1)[0])


def markdown(rows: list[dict], b: float | None, projected: float | None, load: tuple) -> str:
    head = ("| N | fit_sample | sample-fit + assign s (fit / index / assign / assemble) | full fit s | time ratio "
            "| scale peak MiB | full peak MiB | scale ARI d0/d1 vs truth | full ARI d0/d1 vs truth "
            "| scale vs full ARI d0 / d1 |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        s, f = r["scale"], r.get("full")
        st = s["steps"]
        steps = " / ".join(f"{st.get(k, 0):.0f}" for k in ("fit", "index", "assign", "assemble"))
        full = f"{f['seconds']:.0f}" if f else "–"
        ratio = f"{s['seconds'] / f['seconds']:.2f}" if f else "–"
        fpk = f"{f['peak_mib']:.0f}" if f else "–"
        fari = f"{r['full_truth']['d0']:.2f}/{r['full_truth']['c1']:.2f}" if f else "–"
        agree = f"{r['agreement']['d0']:.2f} / {r['agreement']['d1']:.2f}" if f else "–"
        lines.append(f"| {r['n']:,} | {r['fit_sample']:,} | {s['seconds']:.0f} ({steps}) | {full} | {ratio} "
                     f"| {s['peak_mib']:.0f} | {fpk} | {r['scale_truth']['d0']:.2f}/{r['scale_truth']['c1']:.2f} "
                     f"| {fari} | {agree} |")
    out = "\n".join(lines) + "\n"
    if b is not None:
        out += f"\nSlope of sample-fit + assign time vs N (log-log): {b:.2f}."
    if projected is not None:
        out += f" Projected to 1,000,000 from the largest size measured: {projected:.0f} s."
    out += f"\nLoad average (1, 5, 15 min) at the end: {', '.join(f'{x:.1f}' for x in load)}.\n"
    return out


def report(rows: list[dict], info: dict, cfg: ClusteringConfig, tag: str) -> None:
    b = slope(rows)
    biggest = max(rows, key=lambda r: r["n"])
    projected = None
    if biggest["n"] < 1_000_000 and b is not None:
        projected = biggest["scale"]["seconds"] * (1_000_000 / biggest["n"]) ** b
    info["loadavg_end"] = os.getloadavg()
    md = markdown(rows, b, projected, info["loadavg_end"])
    print(md)
    stamp = f"{datetime.date.today().isoformat()}-{info['git_sha']}-{tag}"
    atomic_write_json(RESULTS / f"{stamp}.json", {"machine": info, "clustering": to_dict(cfg), "rows": rows,
                                                  "slope": b, "projected_1m_s": projected})
    atomic_write_text(RESULTS / f"latest-{tag}.md", md)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    ap.add_argument("--full-at", type=int, nargs="*", default=[100_000], help="sizes at which the full fit runs too")
    ap.add_argument("--fit-sample", type=int, default=20_000)
    ap.add_argument("--tag", default="tree-scale")
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args.worker)
    cfg = ClusteringConfig(fit_sample=args.fit_sample)
    info = machine_info() | {"loadavg_start": os.getloadavg(), "niceness": os.nice(0)}
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-tree-scale-") as d:
        tmp = Path(d)
        for n in args.sizes:
            X, coarse, fine = planted_sphere(n)
            npy = tmp / "x.npy"
            np.save(npy, X)
            del X
            print(f"bench: N={n:,}: sample-fit + assign (fit_sample={args.fit_sample:,}) …", file=sys.stderr, flush=True)
            scale, ls = measure("scale", npy, cfg, tmp)
            row = {"n": n, "fit_sample": args.fit_sample, "scale": scale,
                   "scale_truth": {"d0": ari(coarse, ls["d0"]), "c1": ari(fine, ls["c1"])}}
            if n in args.full_at:
                print(f"bench: N={n:,}: full fit …", file=sys.stderr, flush=True)
                full, lf = measure("full", npy, dataclasses.replace(cfg, fit_sample=None), tmp)
                row |= {"full": full, "full_truth": {"d0": ari(coarse, lf["d0"]), "c1": ari(fine, lf["c1"])},
                        "agreement": {"d0": ari(lf["d0"], ls["d0"]), "d1": ari(lf["d1"], ls["d1"]),
                                      "c1": ari(lf["c1"], ls["c1"])}}
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
            report(rows, info, cfg, args.tag)  # after every size: a long run killed later keeps what it measured
    return 0


if __name__ == "__main__":
    sys.exit(main())
