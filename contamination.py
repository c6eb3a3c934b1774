"""How much of a benchmark sits in the corpus, verbatim or near, and where.

    python contamination.py configs/clustering_01_tiny.py \
        --benchmark ../shared/data/gsm8k/test.jsonl --text-field question --answer-field answer

Writes ``items.parquet`` / ``items.csv`` (per item: n-gram share and longest shared span per n,
nearest chunk, similarity and its corpus percentile, verdict, evidence), ``nodes.*`` (per tree
node: contamination mass and each model's error rate) and ``summary.json`` to
``data/outputs/<name>/contamination/<benchmark stem>/``, and ``stages.json`` (stage × node) next to
them when the corpus has a ``contamination.stage_field``. The per-item result is cached in
``data/cache/contamination-<key>/`` (keyed on the benchmark file's bytes, its fields, the thresholds
and the corpus's n-gram and embedding keys): a rerun with the same inputs only redoes the join
with the outcomes. Columns and verdicts: :mod:`corpus_proximity.analysis.contamination`.
"""

from __future__ import annotations

from pathlib import Path

from corpus_proximity import cli
from corpus_proximity.analysis.contamination import (
    LEVELS,
    corpus_stages,
    default_out,
    join_outcomes,
    run_contamination,
    write_outputs,
)
from corpus_proximity.cache import atomic_write_json
from corpus_proximity.errors import cli_errors


@cli_errors
def main(argv: list[str] | None = None) -> int:
    p = cli.parser("Contamination: which benchmark items sit in the corpus, verbatim or near, and where.")
    p.add_argument("--benchmark", type=Path, required=True, help="JSONL/CSV/Parquet of benchmark items")
    p.add_argument("--text-field", required=True, help="the item text field (dotted paths reach into nested JSON)")
    p.add_argument("--answer-field", default=None, help="the reference answer field, checked by n-grams too")
    p.add_argument("--results", type=Path, default=None,
                   help="model results with correctness fields, joined to the items on the normalised text of "
                        "--results-text-field (default: the correctness fields of the benchmark file itself)")
    p.add_argument("--results-text-field", default=None, help="the results' item text field (default --text-field)")
    p.add_argument("--correct-field", action="append", default=None,
                   help="boolean correctness field(s), * globs (default: annotation.correct_fields)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default data/outputs/<name>/contamination/<stem>)")
    args = p.parse_args(argv)
    cfg = cli.resolve(args)
    rows, df, summary, item_emb = run_contamination(cfg, args.benchmark, args.text_field, args.answer_field)
    if args.results is not None:
        from corpus_proximity.analysis.annotate import load_results

        source_rows, source, join = load_results(args.results), args.results, args.results_text_field or args.text_field
    else:
        source_rows, source, join = rows, args.benchmark, None
    patterns = args.correct_field or list(cfg.annotation.correct_fields)
    df, outcomes = join_outcomes(cfg, df, item_emb, source_rows, source, patterns, join)
    summary["outcomes"] = {k: v for k, v in outcomes.items() if k != "nodes"}
    out_dir = args.out or default_out(cfg, args.benchmark)
    import pandas as pd

    extra = {"nodes": pd.DataFrame(outcomes["nodes"])} if outcomes["nodes"] else {}
    write_outputs(out_dir, df, summary, extra)
    stages = corpus_stages(cfg)
    if stages is not None:
        atomic_write_json(out_dir / "stages.json", stages)
    _print(summary, stages, out_dir)
    return 0


def _print(summary: dict, stages: dict | None, out_dir: Path) -> None:
    from rich.markup import escape
    from rich.table import Table

    c = summary["counts"]
    cli.console.print(f"{summary['n_items']} items: " + ", ".join(f"{lv} {c[lv]} ({summary['shares'][lv]:.1%})"
                                                                   for lv in LEVELS)
                      + f"  (near by meaning at cosine >= {summary['calibration']['near_threshold']:.3f})")
    acc = summary["outcomes"]["accuracy"]
    if acc:
        t = Table(title="accuracy by contamination level (Wilson 95% CI)")
        for col in ["model", *LEVELS, "test", "p"]:
            t.add_column(col, no_wrap=True)
        for field, a in acc.items():
            cells = [f"{r['accuracy']:.0%} [{r['ci_low']:.0%}, {r['ci_high']:.0%}] n={r['n']}" if r["n"] else "-"
                     for r in a["levels"]]
            p = a["test"]["p"]
            t.add_row(escape(field), *cells, a["test"]["test"], "n/a" if p is None else f"{p:.3g}")
        cli.console.print(t)
    if stages is not None:
        for d, e in stages["depths"].items():
            if e["p"] is not None:
                md = e["most_different"]
                cli.console.print(f"stage × node {d}: chi2 = {e['chi2']:.1f}, p = {e['p']:.3g}, Cramér's V = "
                                  f"{e['cramers_v']:.2f}; most different: {escape(md['node'])} ({escape(md['stage'])})")
    cli.console.print(f"→ {escape(str(out_dir))}")


if __name__ == "__main__":
    raise SystemExit(main())
