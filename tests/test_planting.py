"""The planted positive control: which items are planted how, the paraphrase shares no 8-gram, the
script's output and its bad-input line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from corpus_proximity.analysis.ngrams import tokenize
from corpus_proximity.analysis.planting import plant, swap_words
from plant_benchmark import main as plant_main

ITEMS = [f"Item {i}: Janet has {i} ducks that lay sixteen eggs every single morning near the old farm." for i in range(30)]
DOCS = [{"doc_id": f"d{i}", "text": f"document {i} text", "metadata": {"source": "news", "topic": "t"}} for i in range(5)]


def test_plant_kinds_rows_and_paraphrase():
    rows, kinds = plant(DOCS, ITEMS, 4, 6, ["filler one", "filler two"], seed=3)
    assert kinds.count("verbatim") == 4 and kinds.count("paraphrased") == 6 and kinds.count("absent") == 20
    assert [r["id"] for r in rows[:5]] == [f"d{i}" for i in range(5)] and all(r["stage"] == "pretrain" for r in rows[:5])
    planted = {r["text"] for r in rows[5:]}
    assert len(rows) == 5 + 4 + 6 + 2 and all(r["stage"] == "sft" for r in rows[5:])
    for item, kind in zip(ITEMS, kinds):
        grams = lambda t: {tuple(tokenize(t)[k:k + 8]) for k in range(len(tokenize(t)) - 7)}  # noqa: E731
        if kind == "verbatim":
            assert item in planted
        elif kind == "paraphrased":
            p = swap_words(item)
            assert p in planted and item not in planted and not grams(item) & grams(p)
        else:
            assert item not in planted and swap_words(item) not in planted
    assert plant(DOCS, ITEMS, 4, 6, seed=3)[1] == kinds and plant(DOCS, ITEMS, 4, 6, seed=4)[1] != kinds
    with pytest.raises(ValueError):
        plant(DOCS, ITEMS, 20, 11)


def test_script_writes_corpus_and_truth_and_refuses_too_many(tmp_path, capsys):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": d["doc_id"], "text": d["text"] + " and more words here"}) + "\n"
                              for d in DOCS))
    bench = tmp_path / "bench.jsonl"
    bench.write_text("".join(json.dumps({"question": q}) + "\n" for q in ITEMS))
    cfg = tmp_path / "cfg.py"
    cfg.write_text("from corpus_proximity.config import CorpusConfig, ExperimentConfig\n"
                   f"config = ExperimentConfig(cache_dir={str(tmp_path / 'c')!r}, output_dir={str(tmp_path / 'o')!r}, "
                   f"corpus=CorpusConfig(path={str(corpus)!r}))\n")
    out = tmp_path / "planted.jsonl"
    args = [str(cfg), "--quiet", "--benchmark", str(bench), "--text-field", "question", "--out", str(out)]
    assert plant_main([*args, "--verbatim", "3", "--paraphrased", "2"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    truth = (tmp_path / "planted.truth.csv").read_text().splitlines()
    assert len(rows) == 5 + 5 and truth[0] == "item,kind" and len(truth) == 31
    kinds = np.array([t.split(",")[1] for t in truth[1:]])
    assert (kinds == "verbatim").sum() == 3 and {ITEMS[i] for i in np.flatnonzero(kinds == "verbatim")} <= {
        r["text"] for r in rows}
    capsys.readouterr()
    assert plant_main([*args, "--verbatim", "25", "--paraphrased", "10"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--verbatim 25 + --paraphrased 10" in err[0] and "30 items" in err[0]
