"""Soft-cluster the token activations of a config: streaming, cached, resumable, in fixed memory.

    python soft_cluster.py configs/soft_cluster_01_tiny.py            # extracts activations first if needed
    python soft_cluster.py configs/soft_cluster_01_tiny.py --resume   # continue an interrupted run
    python soft_cluster.py configs/soft_cluster_01_tiny.py --cluster 3 --html c3.html

Writes ``data/cache/softclust-<key>/`` (``summary.json``, ``centres.npz``, ``memberships/``; see
:mod:`corpus_proximity.soft.model`).
"""

from __future__ import annotations

from pathlib import Path

from corpus_proximity import cli
from corpus_proximity.errors import InputError, cli_errors
from corpus_proximity.soft.analyzer import ClusterAnalyzer
from corpus_proximity.soft.stage import run_soft_clustering


@cli_errors
def main(argv: list[str] | None = None) -> int:
    p = cli.parser("Soft-cluster the token activations of a config (cached, resumable, fixed memory).")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoint")
    p.add_argument("--fresh", action="store_true", help="discard an interrupted run and start over")
    p.add_argument("--show", type=int, default=3, help="print this many clusters (most used first)")
    p.add_argument("--cluster", type=int, default=None, help="print this cluster (and --html it)")
    p.add_argument("--examples", type=int, default=3, help="exemplar contexts printed per cluster")
    p.add_argument("--html", default=None, help="write the shown clusters' exemplar contexts as HTML here")
    args = p.parse_args(argv)
    if args.resume and args.fresh:
        raise InputError("--resume and --fresh contradict each other; pass one")
    sd = run_soft_clustering(cli.resolve(args), resume=args.resume, fresh=args.fresh)
    an = ClusterAnalyzer(sd.path)
    ids = [args.cluster] if args.cluster is not None else an.ranked()[:args.show]
    html = [an.print_summary(c, n_examples=args.examples, console=cli.console) for c in ids]
    if args.html:
        Path(args.html).write_text(an.html_page(html))
        cli.console.print(f"html: {args.html}")
    cli.console.print(f"soft clusters: {sd.path} (summary.json, centres.npz, memberships/)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
