"""What every stage script shares on the command line: the config file and typed overrides."""

from __future__ import annotations

import argparse
import json
import os
import shlex

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from corpus_proximity.config import ExperimentConfig, apply_overrides, load_config, to_dict

console = Console(stderr=True)


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("config", help="a configs/*.py file exposing `config`")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override a config field, typed (repeatable), e.g. --set clustering.max_depth=4")
    p.add_argument("--quiet", action="store_true", help="do not print the resolved config")
    return p


def config_arg(args: argparse.Namespace) -> str:
    """The config and the user's ``--set`` overrides, shell-quoted: what printed hints repeat, so a
    copied command runs on the same corpus and settings (not the config file's defaults)."""
    return shlex.join([args.config] + [a for o in args.overrides for a in ("--set", o)])


def progress_bar() -> Progress:
    """The bar of long per-item work (embedding, extraction): done/total, a rate, time left.
    Each task sets its ``rate`` field (e.g. "23.5 texts/s")."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=console,
                    transient=False)


def resolve(args: argparse.Namespace) -> ExperimentConfig:
    """Load the config file, apply overrides, and print the resolved config."""
    from corpus_proximity import paths

    cfg = apply_overrides(load_config(args.config), args.overrides)
    paths.output_dir(cfg.cache_dir, "cache_dir")
    paths.output_dir(cfg.output_dir, "output_dir")
    if cfg.embedding.precomputed_path:
        paths.input_file(cfg.embedding.precomputed_path, "embedding.precomputed_path")
    if not args.quiet:
        console.print(f"[bold]config[/bold] {args.config}" + (f"  overrides: {args.overrides}" if args.overrides else ""))
        console.print_json(json.dumps(to_dict(cfg)))
    return cfg


def api_key(env_name: str, base_url: str | None, local: bool, what: str, alternative: str) -> str:
    """The API key from the environment or `.env` (never from a config). The OpenAI API (no
    ``base_url``) needs one; local servers (vLLM, llama.cpp, Ollama) accept any unless started
    with one. The error names ``what`` needs it and the ``alternative`` to a key."""
    from dotenv import load_dotenv

    load_dotenv(override=False)
    key = os.environ.get(env_name)
    if key:
        return key
    if base_url is None and not local:
        from corpus_proximity.errors import InputError

        raise InputError(f"{what} with the OpenAI API needs a key: set {env_name} in the environment or in .env "
                         f"(or {alternative})")
    return "not-needed"
