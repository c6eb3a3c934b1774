"""Chunk, embed and recursively cluster a corpus; every stage is cached.

    python cluster_corpus.py configs/clustering_01_tiny.py [--export-labels labels.csv]

Writes ``data/cache/tree-<key>/tree.json`` + ``tree_arrays.npz`` and copies them, with
``labels.csv``, to ``data/outputs/<name>/``. The algorithm is
:func:`corpus_proximity.tree.build.recursive_cluster`.
"""

from __future__ import annotations

import time
from pathlib import Path

from corpus_proximity import cli
from corpus_proximity.errors import cli_errors
from corpus_proximity.paths import output_file
from corpus_proximity.tree.stage import publish, run_clustering
from corpus_proximity.tree.tree import render


@cli_errors
def main(argv: list[str] | None = None) -> int:
    p = cli.parser("Chunk, embed and recursively cluster a corpus (every stage cached).")
    p.add_argument("--export-labels", type=Path, default=None, metavar="CSV",
                   help="where to write one row per chunk with its cluster id at each depth "
                        "(default: <output_dir>/<name>/labels.csv)")
    args = p.parse_args(argv)
    if args.export_labels is not None:
        output_file(args.export_labels, "--export-labels")
    cfg = cli.resolve(args)
    t0 = time.perf_counter()
    sd = run_clustering(cfg)
    tree, labels_path = publish(cfg, sd, args.export_labels)
    cli.console.print(render(tree))
    cli.console.print(f"tree: {sd.file('tree.json')} (copy in {cfg.outputs / 'tree.json'})")
    cli.console.print(f"labels: {labels_path}")
    cli.console.print(f"done in {time.perf_counter() - t0:.1f}s")
    if tree.n_depths == 0:
        cli.console.print("[yellow]warning: the root was not split "
                          f"({tree.root.leaf_reason}); try clustering.root_clusterer=kmeans[/yellow]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
