"""Hashed n-gram index of a corpus, and n-gram overlap of a text with it (contamination evidence).

Tokens are normalised (:func:`tokenize`): Unicode NFKC, lower case, a token is a run of word
characters (letters, digits, underscore: numbers are kept as tokens) or one punctuation
character, so "Natalia's 48 clips." gives ``natalia ' s 48 clips .``. Whitespace never matters.

Every n-gram of every chunk is hashed to 64 bits (per-token blake2b, a polynomial over the n
token hashes mod 2^64, then the splitmix64 finaliser). The index is the sorted array of the
distinct hashes (``uint64``) with the first chunk row holding each (``int32``): 12 bytes per
distinct n-gram, memory-mappable. It is built in batches of chunks streamed from the chunk
Parquet; each batch is reduced to its sorted distinct hashes before the next is read, so the
peak is the final index plus about twice one batch's n-grams during the final merge.

A lookup hashes a text's n-grams the same way and binary-searches them (:meth:`NgramIndex.match`):
the share of its n-grams found, the longest run of consecutive found n-grams (a shared span of
``run + n - 1`` tokens) and each run's token span with the chunk it came from. A 64-bit collision
among ~1e9 distinct n-grams has probability ~1e-10 per query n-gram, so matches are not re-verified.
Texts shorter than ``n`` tokens have no n-grams (share 0, no span).

Evidence is shown in the original text: :func:`tokenize_with_offsets` gives each token's
character range in the text before normalisation, and :func:`chunk_match` finds where a shared
span sits in the chunk it came from (the longest run of the span's tokens in the chunk's).
"""

from __future__ import annotations

import difflib
import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

NORMALISATION_VERSION = 1
_TOKEN = re.compile(r"\w+|[^\w\s]")
_P = np.uint64(0x100000001B3)  # FNV-64 prime: odd, so multiplication by it is a bijection mod 2^64
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def tokenize(text: str) -> list[str]:
    """Normalised tokens of ``text`` (see the module doc)."""
    return _TOKEN.findall(unicodedata.normalize("NFKC", text).lower())


def tokenize_with_offsets(text: str) -> tuple[list[str], list[tuple[int, int]] | None]:
    """:func:`tokenize`'s tokens and each one's ``(start, end)`` character range in ``text`` itself.

    The text is normalised a base character with its combining marks at a time (NFKC can merge or
    expand those, "ﬁ" → "fi"), so every normalised character maps back to the original range it
    came from. Where that piecewise normalisation would give other tokens than the whole text's
    (NFKC composing across such pieces, e.g. conjoining Hangul jamo), the offsets are None."""
    low = text.lower()
    if len(low) == len(text) and unicodedata.is_normalized("NFKC", text):
        # the common case: normalising changes no character's position (lower() never shortens a
        # character, so an equal length means one character for one)
        found = list(_TOKEN.finditer(low))
        return [m.group() for m in found], [m.span() for m in found]
    pieces, owner = [], []
    start = 0
    for i in range(1, len(text) + 1):
        if i == len(text) or not unicodedata.combining(text[i]):
            norm = unicodedata.normalize("NFKC", text[start:i]).lower()
            pieces.append(norm)
            owner += [(start, i)] * len(norm)
            start = i
    norm = "".join(pieces)
    tokens, offsets = [], []
    for m in _TOKEN.finditer(norm):
        tokens.append(m.group())
        offsets.append((owner[m.start()][0], owner[m.end() - 1][1]))
    whole = tokenize(text)
    return (tokens, offsets) if tokens == whole else (whole, None)


def chunk_match(span_tokens: list[str], chunk_text: str) -> tuple[int, int, int, int] | None:
    """Where a shared span sits in a chunk: ``(offset in the span's tokens, tokens matched, chunk
    char start, chunk char end)`` of the longest run of the span's tokens found in the chunk's
    (the whole span when one chunk holds it); None when nothing matches or offsets are unknown."""
    toks, offs = tokenize_with_offsets(chunk_text)
    if offs is None or not span_tokens or not toks:
        return None
    m = difflib.SequenceMatcher(None, span_tokens, toks, autojunk=False).find_longest_match(
        0, len(span_tokens), 0, len(toks))
    if m.size == 0:
        return None
    return m.a, m.size, offs[m.b][0], offs[m.b + m.size - 1][1]


class TokenHasher:
    """64-bit hash per distinct token, memoised (the vocabulary is small next to the token count)."""

    def __init__(self, max_memo: int = 2_000_000):
        self.memo: dict[str, int] = {}
        self.max_memo = max_memo

    def __call__(self, tokens: list[str]) -> np.ndarray:
        memo = self.memo
        if len(memo) > self.max_memo:
            memo.clear()
        for t in set(tokens).difference(memo):
            memo[t] = int.from_bytes(hashlib.blake2b(t.encode("utf-8"), digest_size=8).digest(), "little")
        return np.fromiter((memo[t] for t in tokens), dtype=np.uint64, count=len(tokens))


def ngram_hashes(token_hashes: np.ndarray, n: int) -> np.ndarray:
    """Hash of every n-gram (``len - n + 1`` of them; none when shorter than ``n``)."""
    m = len(token_hashes) - n + 1
    if m <= 0:
        return np.empty(0, dtype=np.uint64)
    with np.errstate(over="ignore"):
        h = np.zeros(m, dtype=np.uint64)
        for i in range(n):
            h = h * _P + token_hashes[i:i + m]
        h ^= h >> np.uint64(30)
        h *= _M1
        h ^= h >> np.uint64(27)
        h *= _M2
        h ^= h >> np.uint64(31)
    return h


def batch_ngram_hashes(token_lists: list[list[str]], hasher: TokenHasher, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The n-gram hashes of many texts at once, and the text each came from (both in text order).

    One rolling hash over the concatenated tokens, keeping the n-grams that do not cross a
    boundary between texts: the same hashes as :func:`ngram_hashes` per text, without a numpy
    call per text."""
    lengths = np.fromiter((len(t) for t in token_lists), dtype=np.int64, count=len(token_lists))
    flat = hasher([tok for toks in token_lists for tok in toks])
    h = ngram_hashes(flat, n)
    if not len(h):
        return h, np.empty(0, dtype=np.int64)
    owner = np.repeat(np.arange(len(token_lists)), lengths)
    keep = owner[: len(h)] == owner[n - 1:]
    return h[keep], owner[: len(h)][keep]


@dataclass
class Span:
    """One run of consecutive shared n-grams: item tokens ``[start, end)`` and the chunk row that
    holds most of its n-grams."""

    start: int
    end: int
    chunk_row: int

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass
class NgramMatch:
    n: int
    n_tokens: int
    n_ngrams: int
    n_found: int
    longest_span: int
    """Tokens in the longest shared span (``run + n - 1``; 0 when nothing is shared)."""
    spans: list[Span] = field(default_factory=list)
    """Shared spans, longest first."""

    @property
    def share(self) -> float:
        return self.n_found / self.n_ngrams if self.n_ngrams else 0.0


@dataclass
class NgramIndex:
    n: int
    hashes: np.ndarray
    """Sorted distinct n-gram hashes (uint64)."""
    rows: np.ndarray
    """First chunk row holding each hash (int32)."""
    n_chunks: int = 0
    n_tokens: int = 0

    def save(self, directory: Path) -> None:
        from corpus_proximity.cache import atomic_save_npy

        atomic_save_npy(directory / f"ngrams{self.n}_hashes.npy", self.hashes)
        atomic_save_npy(directory / f"ngrams{self.n}_rows.npy", self.rows)

    @classmethod
    def load(cls, directory: Path, n: int, n_chunks: int = 0, n_tokens: int = 0) -> "NgramIndex":
        return cls(n, np.load(directory / f"ngrams{n}_hashes.npy", mmap_mode="r"),
                   np.load(directory / f"ngrams{n}_rows.npy", mmap_mode="r"), n_chunks, n_tokens)

    @property
    def nbytes(self) -> int:
        return int(self.hashes.nbytes + self.rows.nbytes)

    def lookup(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found mask, chunk row or -1) per query hash."""
        if len(self.hashes) == 0 or len(hashes) == 0:
            return np.zeros(len(hashes), dtype=bool), np.full(len(hashes), -1, dtype=np.int64)
        pos = np.searchsorted(self.hashes, hashes)
        pos_c = np.minimum(pos, len(self.hashes) - 1)
        found = np.asarray(self.hashes[pos_c] == hashes)
        rows = np.where(found, np.asarray(self.rows[pos_c], dtype=np.int64), -1)
        return found, rows

    def match(self, tokens: list[str], hasher: TokenHasher | None = None, max_spans: int = 5) -> NgramMatch:
        """Overlap of one tokenised text with the corpus (see the module doc)."""
        h = ngram_hashes((hasher or TokenHasher())(tokens), self.n)
        found, rows = self.lookup(h)
        return self._matched(len(tokens), found, rows, max_spans)

    def match_many(self, token_lists: list[list[str]], hasher: TokenHasher | None = None,
                   max_spans: int = 5) -> list[NgramMatch]:
        """:meth:`match` for many texts, with one hashing pass and one binary search for all."""
        h, owner = batch_ngram_hashes(token_lists, hasher or TokenHasher(), self.n)
        found, rows = self.lookup(h)
        bounds = np.searchsorted(owner, np.arange(len(token_lists) + 1))
        return [self._matched(len(toks), found[a:b], rows[a:b], max_spans)
                for toks, a, b in zip(token_lists, bounds[:-1], bounds[1:])]

    def _matched(self, n_tokens: int, found: np.ndarray, rows: np.ndarray, max_spans: int) -> NgramMatch:
        runs = _runs(found)
        spans = []
        for a, b in sorted(runs, key=lambda r: (r[0] - r[1], r[0]))[:max_spans]:
            vals, counts = np.unique(rows[a:b], return_counts=True)
            spans.append(Span(int(a), int(b + self.n - 1), int(vals[np.argmax(counts)])))
        longest = max((b - a for a, b in runs), default=0)
        return NgramMatch(self.n, n_tokens, len(found), int(found.sum()), longest + self.n - 1 if longest else 0, spans)


def _runs(found: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True."""
    if not found.any():
        return []
    d = np.diff(np.r_[0, found.astype(np.int8), 0])
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


def _reduce(h: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct hashes, sorted, each with its first (smallest) row; ``r`` must be non-decreasing."""
    order = np.argsort(h, kind="stable")
    h, r = h[order], r[order]
    keep = np.r_[True, h[1:] != h[:-1]] if len(h) else np.zeros(0, dtype=bool)
    return h[keep], r[keep]


def build_index(batches: Iterable[list[str]], n: int, progress=None) -> NgramIndex:
    """Index the n-grams of chunk texts given in row order, a batch (list of texts) at a time."""
    if n < 1:
        raise ValueError("n must be >= 1")
    hasher = TokenHasher()
    parts_h, parts_r = [], []
    row, n_tokens = 0, 0
    for texts in batches:
        toks = [tokenize(t) for t in texts]
        n_tokens += sum(len(t) for t in toks)
        h, owner = batch_ngram_hashes(toks, hasher, n)
        if len(h):
            bh, br = _reduce(h, (owner + row).astype(np.int32))
            parts_h.append(bh)
            parts_r.append(br)
        row += len(texts)
        if progress is not None:
            progress(row, n_tokens)
    if not parts_h:
        return NgramIndex(n, np.empty(0, np.uint64), np.empty(0, np.int32), row, n_tokens)
    h, r = _reduce(np.concatenate(parts_h), np.concatenate(parts_r))
    return NgramIndex(n, h, r, row, n_tokens)


def parquet_rows(path: Path, rows: Iterable[int], column: str = "text", batch_rows: int = 20_000) -> dict[int, str]:
    """The ``column`` value of the given rows of a Parquet file, read a batch at a time."""
    import pyarrow.parquet as pq

    wanted, out, base = sorted(set(rows)), {}, 0
    if not wanted:
        return out
    k = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=[column]):
        col = batch.column(0)
        while k < len(wanted) and wanted[k] < base + len(col):
            out[wanted[k]] = col[wanted[k] - base].as_py() or ""
            k += 1
        base += len(col)
        if k == len(wanted):
            break
    return out


def parquet_batches(path: Path, column: str = "text", batch_rows: int = 20_000) -> Iterator[list[str]]:
    """Chunk texts from a Parquet file, ``batch_rows`` at a time (only that column is read)."""
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=[column]):
        yield [t or "" for t in batch.column(0).to_pylist()]
