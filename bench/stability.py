"""Stability of the tree over seeds: pairwise ARI between the labels of 3 seeds at depths 0 and 1,
on the quality bench's corpora (same embeddings, same loaders as ``bench/quality.py``).

A point whose branch stopped at depth 0 keeps its depth-0 label at depth 1; noise is one label.

    .venv/bin/python bench/stability.py --quick             # the --quick corpora of bench/quality.py
    .venv/bin/python bench/stability.py --quick --seeds 42 1 2 --set clustering.root_clusterer=hybrid

Writes ``bench/results/<date>-<git sha>-stability.json`` and ``bench/results/latest-stability.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import itertools
import os
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score

from corpus_proximity.cache import atomic_write_json, atomic_write_text
from corpus_proximity.config import ExperimentConfig, apply_overrides, load_config
from corpus_proximity.evals import labelled
from corpus_proximity.tree.build import recursive_cluster

from bench_tree import machine_info

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
CORPORA = ("default", "pylibs", "synthetic", "pywide", "debian")


def run_ours(X, cfg):
    """Depth-0 and depth-1 labels (a point whose branch stopped at depth 0 keeps its depth-0 label)."""
    tree = recursive_cluster(X, cfg)
    d0 = tree.labels_at_depth(0).astype(str)
    d1 = tree.labels_at_depth(1).astype(str) if tree.n_depths > 1 else np.full(len(X), "", dtype=object)
    return d0, np.where(d1 == "", d0, d1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="the corpora sizes of bench/quality.py --quick")
    p.add_argument("--corpora", nargs="*", default=list(CORPORA), choices=CORPORA)
    p.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="clustering.F=V")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cfg_path = ROOT / "configs" / ("clustering_01_tiny.py" if args.quick else "clustering_02_full.py")
    tiny = load_config(cfg_path)
    loaders = {"default": lambda: labelled.load_default(str(cfg_path)),
               "pylibs": lambda: labelled.load_pylibs(25 if args.quick else 150, tiny),
               "synthetic": lambda: labelled.load_synthetic(100 if args.quick else 333, tiny.clustering),
               "pywide": lambda: labelled.load_pywide(40 if args.quick else 150, tiny),
               "debian": lambda: labelled.load_debian(60 if args.quick else 150, tiny)}
    started, rows = datetime.datetime.now(), []
    for name in args.corpora:
        data = loaders[name]()
        exp = ExperimentConfig(clustering=dataclasses.replace(data.clustering, n_jobs=1))
        base = apply_overrides(exp, args.overrides).clustering
        runs, secs = {}, []
        for seed in args.seeds:
            t0 = time.perf_counter()
            runs[seed] = run_ours(data.X, dataclasses.replace(base, seed=seed))
            secs.append(time.perf_counter() - t0)
        row = {"data": data.name, "n": len(data.X), "seeds": args.seeds, "seconds": [round(s, 1) for s in secs]}
        for depth in (0, 1):
            aris = [adjusted_rand_score(runs[a][depth], runs[b][depth]) for a, b in itertools.combinations(args.seeds, 2)]
            ks = [len(set(runs[s][depth].tolist()) - {"", "-1"}) for s in args.seeds]
            row[f"depth{depth}"] = {"ari_min": round(min(aris), 3), "ari_mean": round(float(np.mean(aris)), 3), "k": ks}
        print(f"stability: {row}", file=sys.stderr, flush=True)
        rows.append(row)
    machine = machine_info()
    lines = ["| data | n | depth-0 ARI min / mean | depth-0 k per seed | depth-1 ARI min / mean | depth-1 k per seed |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        d0, d1 = r["depth0"], r["depth1"]
        lines.append(f"| {r['data']} | {r['n']} | {d0['ari_min']:.2f} / {d0['ari_mean']:.2f} | {d0['k']} "
                     f"| {d1['ari_min']:.2f} / {d1['ari_mean']:.2f} | {d1['k']} |")
    table = "\n".join(lines) + "\n"
    sha = machine["git_sha"]
    atomic_write_json(RESULTS / f"{started:%Y-%m-%d}-{sha}-stability.json",
                      {"started": started.isoformat(timespec="seconds"), "argv": sys.argv[1:], "machine": machine,
                       "rows": rows})
    atomic_write_text(RESULTS / "latest-stability.md", (
        f"# Stability over seeds: {started:%Y-%m-%d} {sha}{' (dirty)' if machine['git_dirty'] else ''}, "
        f"`{' '.join(sys.argv[1:])}`\n\nPairwise ARI between the labels of seeds {args.seeds} (ours, corpus "
        f"config's clustering).\n\n{table}"))
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
