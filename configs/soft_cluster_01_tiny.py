"""Soft clustering of token activations on a slice of the tiny default corpus.

300 chunks of configs/clustering_01_tiny.py × 128 tokens through MiniLM's last layer (PCA-whitened),
k = 32 soft clusters; extraction ~1 minute and clustering ~5 s on 2 cores, seconds when cached.
"""

import dataclasses
from pathlib import Path

from corpus_proximity.config import ActivationsConfig, SoftClusterConfig, load_config

config = dataclasses.replace(
    load_config(Path(__file__).with_name("clustering_01_tiny.py")),
    activations=ActivationsConfig(max_chunks=300, max_seq_length=128, whiten=True, whiten_sample=20000),
    soft_cluster=SoftClusterConfig(n_clusters=32, temperature=0.05, memory_budget_gb=1.0),
)
