"""The contamination demo: the tiny default corpus with GSM8K test questions planted into it.

``make demo-contamination GSM8K_DIR=path/to/gsm8k`` writes ``data/demo/gsm8k_planted.jsonl`` with
``plant_benchmark.py`` (the tiny corpus as ``stage = pretrain``; 100 test questions verbatim, 100
paraphrased and 300 train questions as ``stage = sft``), then builds this config's tree,
contamination and report. Chunking, embedding and clustering are the tiny config's.
"""

from dataclasses import replace
from pathlib import Path

from corpus_proximity.config import CorpusConfig, load_config

config = replace(load_config(Path(__file__).with_name("clustering_01_tiny.py")), name="contamination-gsm8k",
                 corpus=CorpusConfig(path="data/demo/gsm8k_planted.jsonl", id_field="id"))
