"""Place model outputs (and eval questions) in the config's tree, and test where errors concentrate.

    python annotate_with_clusters.py configs/clustering_01_tiny.py \
        --results example_model_solutions.jsonl --text-field question --correct-field '*.is_correct'

Writes ``annotated.csv``, ``annotated.parquet`` and ``analysis.json`` to
``data/outputs/<name>/annotations/<results stem>/`` (columns and tests:
:mod:`corpus_proximity.analysis.annotate`).
"""

from __future__ import annotations

from pathlib import Path

from corpus_proximity import cli
from corpus_proximity.analysis.annotate import (
    HOW_TO,
    annotate,
    default_out,
    load_results,
    previous_run,
    print_analysis,
    tree_for,
    write_outputs,
)
from corpus_proximity.errors import InputError, cli_errors
from corpus_proximity.explore.data import find_annotations
from corpus_proximity.paths import input_dir, input_file, output_dir
from corpus_proximity.untrusted import term


@cli_errors
def main(argv: list[str] | None = None) -> int:
    p = cli.parser("Annotate model outputs with their corpus cluster path and test where errors concentrate.")
    p.add_argument("--results", type=Path, default=None,
                   help="JSONL/CSV/Parquet of model outputs (default: annotation.results_path)")
    p.add_argument("--text-field", action="append", default=None,
                   help="text field(s) to embed; dotted paths and * globs (default: annotation.text_fields)")
    p.add_argument("--correct-field", action="append", default=None,
                   help="boolean correctness field(s), one analysis each (default: annotation.correct_fields)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default data/outputs/<name>/annotations/<stem>)")
    p.add_argument("--tree", type=Path, default=None, help="a tree folder to use instead of the config's own tree "
                                                           "(refused unless built from this config)")
    p.add_argument("--limit", type=int, default=None, help="annotate only the first N rows")
    p.add_argument("--if-configured", action="store_true",
                   help="without --results and annotation.results_path, print how to annotate and exit 0")
    args = p.parse_args(argv)
    if args.out is not None:
        output_dir(args.out, "--out")
    if args.tree is not None:
        input_dir(args.tree, "--tree")
    cfg = cli.resolve(args)
    results = args.results or (Path(cfg.annotation.results_path) if cfg.annotation.results_path else None)
    if results is None:
        if args.if_configured:
            cli.console.print(HOW_TO.format(config=cli.config_arg(args)))
            return 0
        raise InputError("--results is required (or set annotation.results_path); "
                         + HOW_TO.format(config=cli.config_arg(args)))
    input_file(results, "--results" if args.results else "annotation.results_path")
    tree_sd = tree_for(cfg, args.tree, cli.config_arg(args))
    rows = load_results(results)[: args.limit]
    df, analysis = annotate(cfg, rows, results, args.text_field or list(cfg.annotation.text_fields),
                            args.correct_field or list(cfg.annotation.correct_fields), tree_sd)
    out_dir = args.out or default_out(cfg, results)
    replaced = previous_run(out_dir)
    write_outputs(out_dir, df, analysis)  # the folder as a whole: one run's files, never two runs' mixed
    cli.console.print(f"annotated {len(df)} rows → {out_dir}/annotated.csv, annotated.parquet, analysis.json")
    if replaced:
        cli.console.print(f"[yellow]replaced the earlier run in {out_dir} ({term(replaced)}); give --out to keep "
                          f"runs side by side[/yellow]")
    runs = find_annotations(cfg)
    if runs:
        cli.console.print("annotation runs of this config (newest first): " + ", ".join(p.name for p in runs))
    print_analysis(analysis)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
