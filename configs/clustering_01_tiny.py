"""Tiny default: a deterministic slice of the embedded corpus (BBC News + stdlib docstrings + maths
problems with worked solutions, CHAMP).

About 1,200 chunks; chunk → embed → cluster in a few minutes cold on 2 cores, seconds when cached.
The maths region is what GSM8K questions belong to (``GSM8K=… make demo``).
"""

from corpus_proximity.config import ClusteringConfig, CorpusConfig, ExperimentConfig

config = ExperimentConfig(
    name="tiny",
    corpus=CorpusConfig(
        default_bbc_per_topic=40,
        default_stdlib_packages=("asyncio", "email", "logging", "unittest", "xml", "http",
                                 "importlib", "tkinter", "typing"),
        default_stdlib_per_package=25,
        default_maths_per_category=None,  # all 270 CHAMP problems
    ),
    clustering=ClusteringConfig(max_depth=3),
)
