"""Extract per-token hidden states of a config's corpus chunks as NPZ chunk files (cached, resumable).

    python extract_activations.py configs/soft_cluster_01_tiny.py

Writes ``data/cache/activations-<key>/chunks/chunk-XXXXX.npz`` and, with ``activations.whiten``,
``whitening.npz`` (:mod:`corpus_proximity.soft.extract`); ``soft_cluster.py`` reads them.
"""

from __future__ import annotations

from corpus_proximity import cli
from corpus_proximity.errors import cli_errors
from corpus_proximity.soft.extract import run_extraction


@cli_errors
def main(argv: list[str] | None = None) -> int:
    args = cli.parser("Extract per-token hidden states of the corpus chunks (cached, resumable).").parse_args(argv)
    sd = run_extraction(cli.resolve(args))
    cli.console.print(f"activations: {sd.file('chunks')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
