"""Plant benchmark items into a copy of a config's corpus: a positive control for contamination.py.

    python plant_benchmark.py configs/clustering_01_tiny.py \
        --benchmark ../shared/data/gsm8k/example_model_solutions.jsonl --text-field question \
        --verbatim 100 --paraphrased 100 --filler ../shared/data/gsm8k/train.jsonl --filler-n 300 \
        --out data/demo/gsm8k_planted.jsonl

Writes the config's documents (``stage = pretrain``) and, as an extra source (``stage = sft``), a
seeded choice of items verbatim, others paraphrased by word swaps and the filler documents, to
``--out`` (JSONL: id, text, stage, source, topic), and ``<out stem>.truth.csv`` (item, kind:
verbatim / paraphrased / absent). ``configs/contamination_01_gsm8k.py`` reads that file
(``make demo-contamination``). :mod:`corpus_proximity.analysis.planting` does the work.
"""

from __future__ import annotations

import json
from pathlib import Path

from corpus_proximity import cli
from corpus_proximity.errors import InputError, cli_errors


@cli_errors
def main(argv: list[str] | None = None) -> int:
    p = cli.parser("Plant benchmark items (verbatim, paraphrased) into a copy of a config's corpus.")
    p.add_argument("--benchmark", type=Path, required=True, help="JSONL/CSV/Parquet of benchmark items")
    p.add_argument("--text-field", required=True, help="the item text field")
    p.add_argument("--verbatim", type=int, default=100, help="items planted as they are")
    p.add_argument("--paraphrased", type=int, default=100, help="items planted paraphrased by word swaps")
    p.add_argument("--filler", type=Path, default=None, help="extra documents of the planted stage (e.g. train split)")
    p.add_argument("--filler-field", default=None, help="the filler's text field (default --text-field)")
    p.add_argument("--filler-n", type=int, default=300, help="filler documents kept (the first N)")
    p.add_argument("--corpus-stage", default="pretrain", help="stage of the config's own documents")
    p.add_argument("--planted-stage", default="sft", help="stage of the planted items and the filler")
    p.add_argument("--seed", type=int, default=0, help="seed of the choice of planted items")
    p.add_argument("--out", type=Path, required=True, help="the corpus JSONL to write")
    args = p.parse_args(argv)
    cfg = cli.resolve(args)
    from corpus_proximity.analysis.contamination import load_items
    from corpus_proximity.analysis.planting import plant
    from corpus_proximity.cache import atomic_write_text
    from corpus_proximity.text.corpus import load_corpus

    _, items, _ = load_items(args.benchmark, args.text_field, None)
    filler = []
    if args.filler is not None:
        _, filler, _ = load_items(args.filler, args.filler_field or args.text_field, None)
        filler = filler[: args.filler_n]
    if min(args.verbatim, args.paraphrased, args.filler_n) < 0 or args.verbatim + args.paraphrased > len(items):
        raise InputError(f"--verbatim {args.verbatim} + --paraphrased {args.paraphrased}: must be >= 0 and at most "
                         f"the {len(items)} items of {args.benchmark}")
    rows, kinds = plant(load_corpus(cfg.corpus), items, args.verbatim, args.paraphrased, filler,
                        cfg.contamination.stage_field, args.corpus_stage, args.planted_stage, args.seed)
    atomic_write_text(args.out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    truth = args.out.with_name(f"{args.out.stem}.truth.csv")
    atomic_write_text(truth, "item,kind\n" + "".join(f"{i},{k}\n" for i, k in enumerate(kinds)))
    cli.console.print(f"{len(rows)} documents ({len(rows) - args.verbatim - args.paraphrased - len(filler)} of the "
                      f"corpus, {args.verbatim} items verbatim, {args.paraphrased} paraphrased, {len(filler)} filler) "
                      f"→ {args.out}; truth → {truth}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
