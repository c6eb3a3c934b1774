"""Embed the chunks of a config into ``data/cache/embed-<key>/embeddings.npy`` (cached, resumable).

    python embed_chunks.py configs/clustering_01_tiny.py

Runs the chunking first when it is not cached; a run killed mid-way resumes from its last
finished shard (:mod:`corpus_proximity.text.embedding`).
"""

from __future__ import annotations

from corpus_proximity import cli
from corpus_proximity.errors import cli_errors
from corpus_proximity.text.embedding import run_embedding


@cli_errors
def main(argv: list[str] | None = None) -> int:
    args = cli.parser("Embed the chunks of a config (cached, resumable).").parse_args(argv)
    sd = run_embedding(cli.resolve(args))
    meta = sd.read_meta()
    cli.console.print(f"embeddings: {meta['n']} × {meta['dim']} in {sd.file('embeddings.npy')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
