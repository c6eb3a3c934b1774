"""The chunking stage: corpus → chunks (``chunks.parquet``).

Strategies: ``fixed_tokens`` (sliding windows of the embedding model's own tokens, with
overlap), ``sentences`` and ``paragraphs`` (whole units packed up to the token budget; a unit
longer than the budget is cut into token windows), ``none`` (one chunk per document).
A chunk keeps its document id, index, character span and the document's metadata; its id is
the document id when the document is one chunk, else ``<doc id>#<k>``.

    python chunking.py configs/clustering_01_tiny.py
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from corpus_proximity import cli
from corpus_proximity.cache import StageDir, atomic_writer, stage_key
from corpus_proximity.config import ChunkingConfig, ExperimentConfig, semantic_dict, to_dict
from corpus_proximity.errors import InputError
from corpus_proximity.text.corpus import corpus_identity, count_sources, describe, iter_corpus
from corpus_proximity.text.embedders import (
    load_tokenizer,
    model_max_seq_length,
    resolve_model_dir,
    tokenizer_fingerprint,
)

STAGE = "chunks"
STAGE_VERSION = 1

CHUNK_SCHEMA = pa.schema([("chunk_id", pa.string()), ("doc_id", pa.string()), ("chunk_index", pa.int64()),
                          ("char_start", pa.int64()), ("char_end", pa.int64()), ("n_tokens", pa.int64()),
                          ("text", pa.string()), ("metadata", pa.string())])
ROW_GROUP_ROWS = 65_536
"""Chunks per row group of chunks.parquet at most: what chunking holds before writing, and what a
reader of a row range (the Ray embedding actors) reads at least."""
ROW_GROUP_CHARS = 16_000_000
"""Characters of chunk text per row group at most (long chunks: fewer rows per group), so the rows
held before a write stay within ~100 MB whatever the chunk length."""
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[A-Z0-9\"'(\[])|\n+")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


class TokenCounter(Protocol):
    def spans(self, text: str) -> list[tuple[int, int]]:
        """Character span of every token of ``text`` (no special tokens)."""
        ...


class HFTokenCounter:
    def __init__(self, tokenizer):
        self.tok = tokenizer

    def spans(self, text: str) -> list[tuple[int, int]]:
        enc = self.tok(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        return [(int(a), int(b)) for a, b in enc["offset_mapping"] if b > a]


@dataclass(frozen=True)
class Chunk:
    doc_id: str
    chunk_index: int
    char_start: int
    char_end: int
    n_tokens: int
    text: str


def _windows(spans: list[tuple[int, int]], size: int, overlap: int) -> list[tuple[int, int, int]]:
    """(start token, end token, n tokens) windows of ``size`` tokens advancing by size-overlap."""
    if not spans:
        return []
    step = max(1, size - overlap)
    out = []
    start = 0
    while True:
        end = min(start + size, len(spans))
        out.append((start, end, end - start))
        if end >= len(spans):
            return out
        start += step


def _units(text: str, strategy: str) -> list[tuple[int, int]]:
    """Character spans of sentences or paragraphs, whitespace trimmed."""
    pattern = _SENTENCE_END if strategy == "sentences" else _PARAGRAPH_BREAK
    spans, pos = [], 0
    for m in pattern.finditer(text):
        spans.append((pos, m.start()))
        pos = m.end()
    spans.append((pos, len(text)))
    out = []
    for a, b in spans:
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        if b > a:
            out.append((a, b))
    return out


def chunk_text(text: str, cfg: ChunkingConfig, counter: TokenCounter | None, budget: int) -> list[tuple[int, int, int]]:
    """(char_start, char_end, n_tokens) of each chunk of one document."""
    if cfg.strategy == "none":
        stripped = text.strip()
        start = text.find(stripped) if stripped else 0
        n = len(counter.spans(text)) if counter else 0
        return [(start, start + len(stripped), n)] if stripped else []
    assert counter is not None
    overlap = int(round(budget * cfg.chunk_overlap_pct))
    if cfg.strategy == "fixed_tokens":
        spans = counter.spans(text)
        return [(spans[a][0], spans[b - 1][1], n) for a, b, n in _windows(spans, budget, overlap)]
    chunks: list[tuple[int, int, int]] = []
    cur_start, cur_end, cur_n = -1, -1, 0
    for a, b in _units(text, cfg.strategy):
        spans = counter.spans(text[a:b])
        n = len(spans)
        if n > budget:  # one over-long unit: flush, then cut it into token windows
            if cur_n:
                chunks.append((cur_start, cur_end, cur_n))
                cur_start, cur_n = -1, 0
            chunks.extend((a + spans[s][0], a + spans[e - 1][1], k) for s, e, k in _windows(spans, budget, overlap))
            continue
        if cur_n and cur_n + n > budget:
            chunks.append((cur_start, cur_end, cur_n))
            cur_start, cur_n = -1, 0
        if cur_start < 0:
            cur_start = a
        cur_end, cur_n = b, cur_n + n
    if cur_n:
        chunks.append((cur_start, cur_end, cur_n))
    return chunks


def chunk_documents(docs: list[dict], cfg: ChunkingConfig, counter: TokenCounter | None, budget: int) -> list[dict]:
    """Chunk every document; records ready for ``chunks.parquet``."""
    rows = []
    for d in docs:
        pieces = [p for p in chunk_text(d["text"], cfg, counter, budget) if p[1] - p[0] >= cfg.min_chunk_chars]
        meta = json.dumps(d["metadata"], sort_keys=True, ensure_ascii=False)
        for k, (a, b, n) in enumerate(pieces):
            rows.append({"chunk_id": d["doc_id"] if len(pieces) == 1 else f"{d['doc_id']}#{k}",
                         "doc_id": d["doc_id"], "chunk_index": k, "char_start": a, "char_end": b,
                         "n_tokens": n, "text": d["text"][a:b], "metadata": meta})
    return rows


def _tokenizer_name(cfg: ExperimentConfig) -> str:
    return cfg.chunking.tokenizer or cfg.embedding.model


def stage_dir(cfg: ExperimentConfig) -> StageDir:
    """The cache directory of this config's chunks (the key needs no chunking work)."""
    sem = semantic_dict(cfg.chunking)
    # Chunks depend on the tokenizer's behaviour, not on the model's name: two models sharing
    # a tokenizer and a token budget share chunks.
    sem["tokenizer"] = tokenizer_fingerprint(resolve_model_dir(_tokenizer_name(cfg)))
    sem["chunk_max_tokens"] = _budget(cfg)
    sem["corpus"] = {**semantic_dict(cfg.corpus), **corpus_identity(cfg.corpus)}
    return StageDir.for_key(cfg.cache_dir, STAGE, stage_key(STAGE, STAGE_VERSION, sem, {}))


def _budget(cfg: ExperimentConfig) -> int:
    if cfg.chunking.chunk_max_tokens:
        return cfg.chunking.chunk_max_tokens
    if cfg.embedding.max_seq_length:
        return cfg.embedding.max_seq_length
    return model_max_seq_length(resolve_model_dir(cfg.embedding.model))


def run_chunking(cfg: ExperimentConfig, log=cli.console) -> StageDir:
    """Produce (or reuse) ``chunks.parquet`` for ``cfg``; returns its cache directory. The corpus is
    read and chunked ``corpus.batch_size`` documents at a time (:func:`write_chunks`)."""
    sd = stage_dir(cfg)
    if sd.complete:
        log.print(f"[green]chunks: cache hit[/green] {sd.path}")
        return sd
    log.print(f"chunks: computing → {sd.path}")
    tok = load_tokenizer(_tokenizer_name(cfg))
    # Room for the special tokens the model adds around every input ([CLS] ... [SEP]).
    budget = max(8, _budget(cfg) - tok.num_special_tokens_to_add())
    if not sd.begin():  # a concurrent run of this config finished it while we waited
        return sd
    try:
        sources, n_chunks = write_chunks(iter_corpus(cfg.corpus), cfg.chunking, HFTokenCounter(tok), budget,
                                         sd.file("chunks.parquet"))
    except BaseException:
        sd.release()
        raise
    n_docs = sum(sources.values())
    log.print(f"corpus: {describe(sources)}")
    sd.finish({"corpus": to_dict(cfg.corpus), "chunking": to_dict(cfg.chunking),
               "tokenizer": _tokenizer_name(cfg), "token_budget": budget}, {},
              {"n_docs": n_docs, "n_chunks": n_chunks})
    log.print(f"chunks: {n_docs} documents → {n_chunks} chunks")
    return sd


def write_chunks(batches: Iterable[list[dict]], cfg: ChunkingConfig, counter: TokenCounter | None, budget: int,
                 path: Path, row_group: int = ROW_GROUP_ROWS,
                 row_chars: int = ROW_GROUP_CHARS) -> tuple[dict[str, int], int]:
    """Chunk batches of documents into the Parquet file ``path`` (written under a temp name, renamed
    when complete), holding at most one row group of chunks and one batch of documents at a time.
    Returns (documents per source, number of chunks). The rows are :func:`chunk_documents`' over
    all the documents at once, whatever the batches."""
    sources: dict[str, int] = {}
    n = 0

    def write(tmp: Path) -> None:
        nonlocal n
        with pq.ParquetWriter(tmp, CHUNK_SCHEMA) as w:
            rows: list[dict] = []
            chars = 0

            def flush() -> None:
                nonlocal rows, chars, n
                w.write_table(pa.Table.from_pylist(rows, CHUNK_SCHEMA))
                n, rows, chars = n + len(rows), [], 0

            for docs in batches:
                count_sources(docs, sources)
                for row in chunk_documents(docs, cfg, counter, budget):
                    rows.append(row)
                    chars += len(row["text"]) + len(row["metadata"])
                    if len(rows) >= row_group or chars >= row_chars:
                        flush()
            if rows:
                flush()
        if not n:
            raise InputError(f"corpus: chunking left no chunk of at least chunking.min_chunk_chars="
                             f"{cfg.min_chunk_chars} characters; lower it or use longer texts")

    atomic_writer(path, write)
    return sources, n


def read_chunks(sd: StageDir, columns: list[str] | None = None):
    return pq.read_table(sd.file("chunks.parquet"), columns=columns)
