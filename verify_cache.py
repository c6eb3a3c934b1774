"""Check every finished result in a config's cache against the sizes and sha256 recorded in its
``config.json`` (loads check sizes always, and hash only artifacts up to 64 MB).

    python verify_cache.py configs/clustering_01_tiny.py

Prints one line per corrupt result (the file, and "delete DIR and rerun") and exits 2 if any.
"""

from __future__ import annotations

from pathlib import Path

from corpus_proximity import cli
from corpus_proximity.cache import verify_all
from corpus_proximity.errors import cli_errors
from corpus_proximity.untrusted import term


@cli_errors
def main(argv: list[str] | None = None) -> int:
    args = cli.parser("Check every finished result in the cache against its recorded checksums.").parse_args(argv)
    cfg = cli.resolve(args)
    n_ok, bad = verify_all(Path(cfg.cache_dir))
    for line in bad:
        cli.console.print(f"[red]corrupt:[/red] {term(line)}", soft_wrap=True, highlight=False)
    cli.console.print(f"{n_ok} result(s) verified, {len(bad)} corrupt in {cfg.cache_dir}")
    return 2 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
