import pytest

from corpus_proximity.config import PACKAGED_MINILM, ChunkingConfig
from corpus_proximity.text.chunking import HFTokenCounter, chunk_documents, chunk_text
from corpus_proximity.text.embedders import load_tokenizer


@pytest.fixture(scope="module")
def counter():
    return HFTokenCounter(load_tokenizer(PACKAGED_MINILM))


TEXT = " ".join(f"Sentence number {i} talks about topic {i % 7}." for i in range(60))


def test_fixed_tokens_respects_budget_and_overlap(counter):
    cfg = ChunkingConfig(strategy="fixed_tokens", chunk_overlap_pct=0.25)
    pieces = chunk_text(TEXT, cfg, counter, budget=40)
    assert len(pieces) > 5
    spans = counter.spans(TEXT)
    starts = [next(i for i, s in enumerate(spans) if s[0] == a) for a, _, _ in pieces]
    assert all(n <= 40 for _, _, n in pieces)
    assert all(b - a == 30 for a, b in zip(starts, starts[1:]))  # step = 40 - round(0.25*40)
    assert pieces[0][0] == 0 and pieces[-1][1] == len(TEXT)      # covers the whole text
    for a, b, n in pieces:
        assert len(counter.spans(TEXT[a:b])) == n               # the span re-tokenises to n tokens


@pytest.mark.parametrize("strategy", ["sentences", "paragraphs"])
def test_unit_packing_keeps_whole_units(counter, strategy):
    text = TEXT if strategy == "sentences" else "\n\n".join(f"Para {i}. " + "word " * (5 + i) for i in range(12))
    pieces = chunk_text(text, ChunkingConfig(strategy=strategy), counter, budget=50)
    assert len(pieces) > 1 and all(n <= 50 for *_, n in pieces)
    for a, b, _ in pieces:
        chunk = text[a:b]
        assert chunk == chunk.strip()
        if strategy == "sentences":
            assert chunk.startswith("Sentence") and chunk.endswith(".")
        else:
            assert chunk.startswith("Para")


def test_overlong_unit_is_windowed(counter):
    text = "Short one.\n\n" + "long " * 300
    pieces = chunk_text(text, ChunkingConfig(strategy="paragraphs"), counter, budget=64)
    assert text[pieces[0][0]:pieces[0][1]] == "Short one."
    assert len(pieces) >= 5 and all(n <= 64 for *_, n in pieces)


def test_chunk_ids_and_metadata(counter):
    docs = [{"doc_id": "short", "text": "A short document about cats and dogs.", "metadata": {"k": 1}},
            {"doc_id": "long", "text": TEXT, "metadata": {"k": 2}}]
    rows = chunk_documents(docs, ChunkingConfig(), counter, budget=64)
    assert rows[0]["chunk_id"] == "short" and rows[0]["chunk_index"] == 0
    long_rows = [r for r in rows if r["doc_id"] == "long"]
    assert [r["chunk_id"] for r in long_rows] == [f"long#{k}" for k in range(len(long_rows))]
    for r in rows:
        src = docs[0] if r["doc_id"] == "short" else docs[1]
        assert src["text"][r["char_start"]:r["char_end"]] == r["text"]
        assert '"k"' in r["metadata"]


def test_none_strategy_is_one_chunk_per_doc(counter):
    docs = [{"doc_id": "d", "text": "  " + TEXT + "\n", "metadata": {}}]
    rows = chunk_documents(docs, ChunkingConfig(strategy="none"), counter, budget=64)
    assert len(rows) == 1 and rows[0]["chunk_id"] == "d" and rows[0]["text"] == TEXT


def test_chunks_parquet_written_in_batches_is_the_all_at_once_one(counter, tmp_path):
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from corpus_proximity.config import CorpusConfig
    from corpus_proximity.text.chunking import CHUNK_SCHEMA, write_chunks
    from corpus_proximity.text.corpus import iter_corpus, load_corpus

    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"id": f"d{i}", "text": TEXT[: 40 + 97 * i], "n": i if i != 5 else None}) + "\n"
                           for i in range(31)))
    corpus, cfg = CorpusConfig(path=str(src)), ChunkingConfig(chunk_overlap_pct=0.2)
    docs = load_corpus(corpus)
    before = pa.Table.from_pylist(chunk_documents(docs, cfg, counter, 48))  # the pre-streaming writer's table
    pq.write_table(before, tmp_path / "before.parquet")
    for name, batches, row_group, row_chars in (("all", [docs], 65_536, 10 ** 9), ("b7", iter_corpus(corpus, 7), 10, 10 ** 9),
                                                ("c2k", iter_corpus(corpus, 7), 65_536, 2000)):
        sources, n = write_chunks(batches, cfg, counter, 48, tmp_path / f"{name}.parquet", row_group=row_group,
                                  row_chars=row_chars)
        assert sources == {"file": 31} and n == before.num_rows > 31
    b7 = pq.read_table(tmp_path / "b7.parquet")
    assert pq.ParquetFile(tmp_path / "b7.parquet").metadata.num_row_groups == (n + 9) // 10
    chars = sum(len(t) + len(m) for t, m in zip(before.column("text").to_pylist(), before.column("metadata").to_pylist()))
    assert pq.ParquetFile(tmp_path / "c2k.parquet").metadata.num_row_groups >= chars // 2200
    for name in ("all", "c2k", "before"):
        assert b7.equals(pq.read_table(tmp_path / f"{name}.parquet")), name
    assert b7.schema.equals(CHUNK_SCHEMA) and b7.column("metadata")[0].as_py() == '{"n": 0.0}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all.parquet", "b7.parquet", "before.parquet", "c2k.parquet",
                                                             "docs.jsonl"]
