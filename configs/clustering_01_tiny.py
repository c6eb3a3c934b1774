"""Tiny default: a deterministic slice of the embedded corpus (BBC News + stdlib docstrings).

About 1,000 chunks; chunk → embed → cluster in ~2 minutes cold on 2 cores, seconds when cached.
"""

from corpus_proximity.config import ClusteringConfig, CorpusConfig, ExperimentConfig

config = ExperimentConfig(
    name="tiny",
    corpus=CorpusConfig(
        default_bbc_per_topic=60,
        default_stdlib_packages=("asyncio", "email", "logging", "unittest", "xml", "http",
                                 "importlib", "tkinter", "typing"),
        default_stdlib_per_package=30,
    ),
    clustering=ClusteringConfig(max_depth=3),
)
