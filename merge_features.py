"""Which features belong together: greedy MDL merging of components by coactivation, and an
ensemble of merge runs over data draws.

    python merge_features.py configs/soft_cluster_01_tiny.py          # the config's soft clusters
    python merge_features.py CONFIG --input acts.npz [--key activations]  # any [samples, components] array

Writes ``data/cache/merge-<key>/`` (copies in ``data/outputs/<name>/merge/``):
:mod:`corpus_proximity.ensemble.merge_stage`.
"""

from __future__ import annotations

import json
from pathlib import Path

from corpus_proximity import cli
from corpus_proximity.ensemble.merge_stage import cluster_words, print_history, publish, read_history, run_merge
from corpus_proximity.errors import cli_errors


@cli_errors
def main(argv: list[str] | None = None) -> int:
    p = cli.parser("Greedy MDL merging of soft clusters (or any component activations) by coactivation.")
    p.add_argument("--input", type=Path, default=None, help="a .npz with a dense [samples, components] array "
                   "(default: the config's soft-cluster memberships)")
    p.add_argument("--key", default=None, help="the array's name in --input (default: activations, or the only one)")
    args = p.parse_args(argv)
    cfg = cli.resolve(args)
    sd = run_merge(cfg, args.input, args.key)
    h = read_history(sd)
    meta = json.loads(sd.file("ensemble_meta.json").read_text())
    words = cluster_words(Path(meta["source"]) if "softclust" in meta["upstream"] else None)
    cli.console.print(f"merge: {meta['n_samples']} samples × {meta['n_components']} components "
                      f"({meta['active_share']:.2%} active at threshold {cfg.merge.activation_threshold})")
    print_history(h, meta, words, cli.console)
    out = publish(cfg, sd)
    cli.console.print(f"merge history: {sd.file('merge_history.npz')} (copies in {out})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
