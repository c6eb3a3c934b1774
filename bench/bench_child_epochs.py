"""Time-to-tree and planted recovery of ``recursive_cluster`` under ``clustering.umap_child_epochs``.

One process, the planted 384-d sphere of bench_tree.py (10 regions × 5 blobs), every value of
``--epochs`` timed once per round, rounds interleaved with the order rotated, after a warm-up
that compiles numba's kernels: on a shared, loaded machine compare each value's time as a ratio
to the first value (the baseline) within the same round, not the seconds.

    .venv/bin/python bench/bench_child_epochs.py --n 10000 --epochs 200 100 50 --rounds 2

Writes ``bench/results/<date>-<git sha>-child-epochs.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import normalized_mutual_info_score as nmi

from corpus_proximity.cache import atomic_write_json
from corpus_proximity.config import ClusteringConfig
from corpus_proximity.tree.build import recursive_cluster

from bench_tree import machine_info, planted_sphere

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"


def carried(tree, depth: int) -> np.ndarray:
    """labels_at_depth(depth), where a point whose branch stopped higher keeps its leaf's label."""
    out = tree.labels_at_depth(0)
    for d in range(1, depth + 1):
        out = np.where(tree.labels_at_depth(d) == "", out, tree.labels_at_depth(d))
    return out.astype(str)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--epochs", type=int, nargs="+", default=[200, 100, 50], help="first = baseline")
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args(argv)
    base = ClusteringConfig()
    X, coarse, fine = planted_sphere(args.n)
    t0 = time.perf_counter()
    recursive_cluster(planted_sphere(4500, seed=1)[0], base)  # > 4096: NN-descent's kernels compile too
    print(f"warm-up {time.perf_counter() - t0:.1f} s, load {os.getloadavg()[0]:.1f}", file=sys.stderr)
    rows = []
    for r in range(args.rounds):
        order = args.epochs[r % len(args.epochs):] + args.epochs[:r % len(args.epochs)]
        for v in order:
            cfg = dataclasses.replace(base, umap_child_epochs=v)
            load = os.getloadavg()[0]
            t = time.perf_counter()
            tree = recursive_cluster(X, cfg)
            s = time.perf_counter() - t
            row = {"round": r, "child_epochs": v, "seconds": round(s, 2), "load1": round(load, 1),
                   "nodes": len(tree.nodes) - 1,
                   "nmi_coarse": round(nmi(coarse, carried(tree, 0)), 4),
                   "nmi_fine": round(nmi(fine, carried(tree, 1)), 4)}
            rows.append(row)
            print(row, file=sys.stderr, flush=True)
    for r in range(args.rounds):
        ref = next(x["seconds"] for x in rows if x["round"] == r and x["child_epochs"] == args.epochs[0])
        for x in rows:
            if x["round"] == r:
                x["ratio_to_baseline"] = round(x["seconds"] / ref, 3)
    machine = machine_info()
    out = RESULTS / f"{datetime.date.today()}-{machine['git_sha']}-child-epochs.json"
    atomic_write_json(out, {"argv": sys.argv[1:], "n": args.n, "machine": machine, "rows": rows})
    print("| round | child epochs | s | ratio | load | nodes | NMI coarse | NMI fine |\n|---|---|---|---|---|---|---|---|")
    for x in rows:
        print(f"| {x['round']} | {x['child_epochs']} | {x['seconds']:.1f} | {x['ratio_to_baseline']:.2f} | "
              f"{x['load1']} | {x['nodes']} | {x['nmi_coarse']:.3f} | {x['nmi_fine']:.3f} |")
    print(f"child-epochs: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
