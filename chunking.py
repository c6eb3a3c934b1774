"""Chunk the corpus of a config into ``data/cache/chunks-<key>/chunks.parquet`` (cached).

    python chunking.py configs/clustering_01_tiny.py

Strategies and the chunk record: :mod:`corpus_proximity.text.chunking`.
"""

from __future__ import annotations

from corpus_proximity import cli
from corpus_proximity.errors import cli_errors
from corpus_proximity.text.chunking import run_chunking


@cli_errors
def main(argv: list[str] | None = None) -> int:
    args = cli.parser("Chunk the corpus of a config into chunks.parquet (cached).").parse_args(argv)
    run_chunking(cli.resolve(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
