"""Full default corpus: all 2,225 BBC News articles + docstrings of 29 stdlib packages.

Point it at your own corpus with --set corpus.path=PATH (JSONL/CSV/Parquet or a folder of
.txt/.md files) and --set corpus.text_field=FIELD.
"""

from corpus_proximity.config import ClusteringConfig, CorpusConfig, ExperimentConfig

config = ExperimentConfig(
    name="full",
    corpus=CorpusConfig(),
    clustering=ClusteringConfig(max_depth=3, n_jobs=-1),
)
