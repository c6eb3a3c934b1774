"""Contamination: n-gram overlap (exact against brute force), verdicts on planted items, stage × node
tests (power and calibration), joins with outcomes, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from corpus_proximity.analysis.ngrams import NgramIndex, TokenHasher, build_index, ngram_hashes, tokenize

WORDS = ("apple banana cherry delta echo fox golf hotel india juliet kilo lima mike november oscar papa "
         "quebec romeo sierra tango uniform victor whiskey xray yankee zulu one two three four").split()


def _brute(chunks: list[str], item: str, n: int):
    grams = set()
    for c in chunks:
        t = tokenize(c)
        grams |= {tuple(t[i:i + n]) for i in range(len(t) - n + 1)}
    t = tokenize(item)
    found = [tuple(t[i:i + n]) in grams for i in range(len(t) - n + 1)]
    best = run = 0
    for f in found:
        run = run + 1 if f else 0
        best = max(best, run)
    return sum(found), len(found), (best + n - 1 if best else 0)


def test_tokenize_normalises():
    assert tokenize("Natalia’s 48 CLIPS,\u00a0ﬁne!") == ["natalia", "’", "s", "48", "clips", ",", "fine", "!"]
    assert tokenize("a  b\n\tc") == tokenize("A b c")


@pytest.mark.parametrize("n", [1, 3, 8, 13])
def test_ngram_counts_exact_against_brute_force(n):
    rng = np.random.default_rng(n)
    chunks = [" ".join(rng.choice(WORDS[:12], size=rng.integers(5, 60))) for _ in range(80)]
    items = [" ".join(rng.choice(WORDS[:12], size=rng.integers(3, 50))) for _ in range(40)]
    # planted overlaps of known length
    for k in range(10):
        c = tokenize(chunks[k])
        items.append("zulu xray " + " ".join(c[: 5 + 3 * k]) + " yankee")
    idx = build_index(iter([chunks[:30], chunks[30:55], chunks[55:]]), n)
    assert idx.n_chunks == 80
    for item in items:
        m = idx.match(tokenize(item))
        found, total, longest = _brute(chunks, item, n)
        assert (m.n_found, m.n_ngrams, m.longest_span) == (found, total, longest), item
        for s in m.spans:  # the chunk named as a span's source holds n-grams of it
            span = tokenize(item)[s.start:s.end]
            src = tokenize(chunks[s.chunk_row])
            assert s.length == len(span) >= n
            src_grams = {tuple(src[i:i + n]) for i in range(len(src) - n + 1)}
            assert any(tuple(span[i:i + n]) in src_grams for i in range(len(span) - n + 1))


def test_first_row_kept_and_batches_agree():
    chunks = ["a b c d e", "x a b c d e", "q r s t"]
    one = build_index(iter([chunks]), 3)
    split = build_index(iter([[c] for c in chunks]), 3)
    assert np.array_equal(one.hashes, split.hashes) and np.array_equal(one.rows, split.rows)
    found, rows = one.lookup(ngram_hashes(TokenHasher()(tokenize("a b c")), 3))
    assert found.all() and rows.tolist() == [0]
    assert np.all(np.diff(one.hashes.astype(np.float64)) > 0)


def test_index_roundtrip(tmp_path):
    idx = build_index(iter([["one two three four five"]]), 2)
    idx.save(tmp_path)
    back = NgramIndex.load(tmp_path, 2)
    assert back.match(tokenize("two three four")).longest_span == 3
    empty = build_index(iter([]), 2)
    assert empty.match(tokenize("a b c")).share == 0.0
