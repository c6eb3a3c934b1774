"""Name the soft clusters (features) of a config's token activations from their exemplar contexts.

    python name_soft_clusters.py configs/soft_cluster_01_tiny.py --local-llm   # bundled local model
    python name_soft_clusters.py configs/soft_cluster_01_tiny.py --set naming.namer=llm \
        --set naming.llm.model=gpt-4o-mini                                          # any OpenAI-compatible endpoint
    python name_soft_clusters.py configs/soft_cluster_01_tiny.py               # offline: distinctive tokens
    python name_soft_clusters.py configs/soft_cluster_01_tiny.py --cluster 17  # one named cluster, exemplars

Names are cached in ``data/cache/softnames-<key>/names.json`` (:mod:`corpus_proximity.naming.soft`).
"""

from __future__ import annotations

from corpus_proximity import cli
from corpus_proximity.errors import InputError, cli_errors
from corpus_proximity.naming.soft import names_table, run_naming
from corpus_proximity.naming.stage import apply_local_llm, local_llm_connect
from corpus_proximity.soft.analyzer import ClusterAnalyzer
from corpus_proximity.soft.stage import stage_dir as soft_stage_dir


@cli_errors
def main(argv: list[str] | None = None) -> int:
    p = cli.parser("Name the soft clusters (features) of a config's activations from their exemplar contexts.")
    p.add_argument("--local-llm", action="store_true",
                   help="name with the bundled local model (llama.cpp server on 127.0.0.1); sets naming.namer=llm")
    p.add_argument("--cluster", type=int, default=None, help="print this cluster's name and exemplar contexts")
    p.add_argument("--show", type=int, default=None, help="list only the N most used clusters")
    args = p.parse_args(argv)
    cfg = cli.resolve(args)
    log = cli.console
    if args.show is not None and args.show < 1:
        raise InputError(f"--show {args.show}: must be >= 1")
    if args.local_llm:
        cfg = apply_local_llm(cfg, log, quiet=args.quiet)
    with local_llm_connect(cfg, log, enabled=args.local_llm) as connect:
        sd, names = run_naming(cfg, log, connect)
    an = ClusterAnalyzer(soft_stage_dir(cfg).path)
    if args.cluster is not None:
        an.get_cluster_summary(args.cluster)  # a cluster that does not exist: one clear error
        nm = names.get(args.cluster)
        log.rule(f"cluster {args.cluster}: {nm.name if nm and nm.name else 'unnamed'}"
                 + (f" ({nm.summary})" if nm and nm.summary else ""))
        an.print_summary(args.cluster, console=log)
    else:
        log.print(names_table(an, names, args.show))
    failed = sum(1 for n in names.values() if n.name is None)
    log.print(f"soft-cluster names: {len(names) - failed}/{len(names)} named → {sd.file('names.json')}")
    if failed:
        log.print(f"[yellow]{failed} cluster(s) have no name (see above); rerun to retry only those[/yellow]")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
