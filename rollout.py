"""Ask a model an eval's questions (GSM8K) through an OpenAI-compatible endpoint, and grade them.

    python rollout.py configs/clustering_01_tiny.py --local-llm --set rollout.data_path=PATH/test.jsonl
    python rollout.py CONFIG --set rollout.llm.model=gpt-4o-mini --set rollout.limit=200
    python rollout.py CONFIG --local-llm --prompt "What is 17 * 23?" --stream --system "Be brief."

Writes one graded record per answer to ``data/outputs/<name>/rollouts/*.jsonl``
(:mod:`corpus_proximity.evals.rollout`); a failed call is written with ``error`` set, never a
made-up answer. The rollouts then go to ``annotate_with_clusters.py CONFIG --results <file>
--text-field prompt --correct-field correct``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from corpus_proximity import cli
from corpus_proximity.errors import InputError, cli_errors
from corpus_proximity.evals.gsm8k import load_gsm8k
from corpus_proximity.evals.rollout import generate, output_path, stream_one, summarize, write_rollouts
from corpus_proximity.llm.caller import CALL_CACHE
from corpus_proximity.llm.local import MODEL_ID, lazy_server
from corpus_proximity.paths import output_file


@cli_errors
def main(argv: list[str] | None = None) -> int:
    p = cli.parser("Ask a model an eval's questions (GSM8K) through an OpenAI-compatible endpoint and grade them.")
    p.add_argument("--local-llm", action="store_true",
                   help="start the local llama.cpp server (Qwen2.5-Coder-0.5B from PyPI, no API key)")
    p.add_argument("--prompt", default=None, help="interactive: send this one prompt and print the answer")
    p.add_argument("--system", default=None, help="interactive: system message (default: rollout.system_prompt)")
    p.add_argument("--stream", action="store_true", help="interactive: print the answer as it is generated")
    p.add_argument("--out", type=Path, default=None, help="rollouts JSONL (default data/outputs/<name>/rollouts/)")
    args = p.parse_args(argv)
    if args.out is not None:
        output_file(args.out, "--out")
    cfg = cli.resolve(args)
    rc = cfg.rollout
    if args.local_llm:
        # a CPU server shared by `slots` sequences can take minutes per long answer, and a call that
        # times out is asked again from scratch: give it time
        rc = replace(rc, llm=replace(rc.llm, model=MODEL_ID, timeout_s=max(rc.llm.timeout_s, 900.0)))
    elif not rc.llm.model:
        raise InputError("rollout.llm.model is not set; --set rollout.llm.model=NAME (and rollout.llm.base_url=URL "
                         "for a local server), or use --local-llm")
    slots, ctx = rc.llm.max_concurrency, max(1024, rc.llm.max_tokens + 512)
    with lazy_server(slots, cli.console, "rollouts", ctx_per_slot=ctx, enabled=args.local_llm) as connect:
        if args.prompt is not None:
            system = args.system if args.system is not None else rc.system_prompt
            stream_one(args.prompt, system, rc, base_url=connect() if connect else None, local=args.local_llm,
                       stream=args.stream)
            return 0
        samples = load_gsm8k(rc.data_path, rc.split, rc.limit)
        out = args.out or output_path(cfg, rc.llm.model)
        cli.console.print(f"{len(samples)} GSM8K {rc.split} questions × {rc.n_samples} → {rc.llm.model}")
        with Progress("rollouts", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=cli.console) as bar:
            task = bar.add_task("rollouts", total=len(samples) * rc.n_samples)
            rollouts, stats = generate(samples, rc, cache_dir=Path(cfg.cache_dir) / CALL_CACHE, connect=connect,
                                       progress=lambda d, n: bar.update(task, completed=d))
    write_rollouts(out, rollouts)
    s = summarize(rollouts)
    acc = f"{s['accuracy']:.1%}" if s["accuracy"] is not None else "n/a"
    cli.console.print(f"wrote {s['n']} rollouts → {out}: {s['correct']}/{s['graded']} correct ({acc}), "
                      f"{s['failed_calls']} failed calls, {s['no_answer']} without a final number; "
                      f"calls: {stats['requests']} requests, {stats['cache_hits']} cached")
    if s["failed_calls"]:
        cli.console.print("[yellow]failed calls are written with `error` set and no answer; rerun to retry them[/yellow]")
    cli.console.print(f"next: python annotate_with_clusters.py {args.config} --results {out} "
                      f"--text-field prompt --correct-field correct")
    return 1 if s["failed_calls"] == s["n"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
