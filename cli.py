"""What every stage script shares on the command line: the config file and typed overrides."""

from __future__ import annotations

import argparse
import json

from rich.console import Console

from config import ExperimentConfig, apply_overrides, load_config, to_dict

console = Console(stderr=True)


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("config", help="a configs/*.py file exposing `config`")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override a config field, typed (repeatable), e.g. --set clustering.max_depth=4")
    p.add_argument("--quiet", action="store_true", help="do not print the resolved config")
    return p


def resolve(args: argparse.Namespace) -> ExperimentConfig:
    """Load the config file, apply overrides, and print the resolved config."""
    cfg = apply_overrides(load_config(args.config), args.overrides)
    if not args.quiet:
        console.print(f"[bold]config[/bold] {args.config}" + (f"  overrides: {args.overrides}" if args.overrides else ""))
        console.print_json(json.dumps(to_dict(cfg)))
    return cfg
