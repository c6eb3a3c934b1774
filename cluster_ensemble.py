"""How stable is the taxonomy? An ensemble of tree runs on redrawn corpora and/or other seeds.

    python cluster_ensemble.py configs/clustering_01_tiny.py --runs 5 [--vary seed|bootstrap|both]
    python cluster_ensemble.py CONFIG --runs 20 --engine ray --ray-address auto

Writes ``data/cache/ensemble-<key>/`` (distances between runs per depth, per-node stability;
copies in ``data/outputs/<name>/ensemble/``): :mod:`corpus_proximity.ensemble.runs`.
"""

from __future__ import annotations

import json
import time

from corpus_proximity import cli
from corpus_proximity.ensemble.compare import Stability
from corpus_proximity.ensemble.runs import distance_table, publish, run_ensemble
from corpus_proximity.errors import cli_errors
from corpus_proximity.naming.stage import names_or_ids
from corpus_proximity.tree.stage import stage_dir as tree_dir
from corpus_proximity.tree.tree import ClusterTree, render


@cli_errors
def main(argv: list[str] | None = None) -> int:
    p = cli.parser("Stability of a config's taxonomy: an ensemble of tree runs, distances, per-node stability.")
    p.add_argument("--runs", type=int, default=None, help="number of runs (ensemble.runs)")
    p.add_argument("--vary", choices=["seed", "bootstrap", "both"], default=None, help="ensemble.vary")
    p.add_argument("--engine", choices=["local", "ray"], default=None, help="ensemble.engine")
    p.add_argument("--ray-address", default=None, help="ensemble.ray_address (e.g. auto)")
    p.add_argument("--n-jobs", type=int, default=None, help="ensemble.n_jobs (local engine)")
    args = p.parse_args(argv)
    for flag, field in (("runs", "runs"), ("vary", "vary"), ("engine", "engine"),
                        ("ray_address", "ray_address"), ("n_jobs", "n_jobs")):
        if getattr(args, flag) is not None:
            args.overrides.append(f"ensemble.{field}={getattr(args, flag)}")
    cfg = cli.resolve(args)
    t0 = time.perf_counter()
    sd = run_ensemble(cfg)
    meta = json.loads(sd.file("ensemble_meta.json").read_text())
    out = publish(cfg, sd)
    cli.console.print(distance_table(meta))
    tree_sd = tree_dir(cfg)
    stab = Stability.from_json(json.loads(sd.file("stability.json").read_text()))
    names = names_or_ids(cfg, compute_offline=False)
    cli.console.print(render(ClusterTree.load(tree_sd.path), names, stability=stab.mean,
                             stability_threshold=stab.threshold))
    cli.console.print(f"unstable nodes (stability < {stab.threshold}): {', '.join(stab.unstable()) or 'none'}")
    cli.console.print(f"ensemble: {sd.path} (copies in {out}); done in {time.perf_counter() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
