"""Contamination: n-gram overlap (exact against brute force), verdicts on planted items, stage × node
tests (power and calibration), joins with outcomes, bad input."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from scipy import stats

from contamination import main as contamination_main
from corpus_proximity.analysis.contamination import corpus_nn_similarities, corpus_stages, run_contamination
from corpus_proximity.analysis.contamination_outcomes import accuracy_by_level, node_mass, stage_by_node
from corpus_proximity.analysis.ngrams import NgramIndex, TokenHasher, build_index, ngram_hashes, tokenize
from corpus_proximity.analysis.stats import wilson_interval
from corpus_proximity.config import load_config

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
    many = idx.match_many([tokenize(t) for t in items])
    for item, mm in zip(items, many):
        one = idx.match(tokenize(item))
        assert (mm.n_found, mm.n_ngrams, mm.longest_span, mm.spans) == (one.n_found, one.n_ngrams, one.longest_span,
                                                                          one.spans)
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


# --- planted items, end to end (real model, tiny corpus) ---------------------------------------

GSM8K = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k"
if not GSM8K.is_dir():
    GSM8K = Path("/work/shared/data/gsm8k")


def _swap_words(text: str) -> str:
    """A word-swap paraphrase: adjacent words swapped every four words (no 8-gram survives)."""
    w = text.split()
    for i in range(1, len(w) - 1, 4):
        w[i], w[i + 1] = w[i + 1], w[i]
    return " ".join(w)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    if not (GSM8K / "train.jsonl").is_file():
        pytest.skip("GSM8K data not present")
    tmp = tmp_path_factory.mktemp("contam")
    qs = [json.loads(line)["question"] for line in (GSM8K / "train.jsonl").read_text().splitlines()[:1200]]
    corpus = [{"id": f"d{i}", "text": q, "stage": "sft" if i % 2 else "pretrain"} for i, q in enumerate(qs[:200])]
    write_jsonl(tmp / "corpus.jsonl", corpus)
    items = ([{"q": qs[i], "kind": "verbatim"} for i in range(40)]
             + [{"q": _swap_words(qs[i]), "kind": "near"} for i in range(40, 80)]
             + [{"q": qs[i], "kind": "far"} for i in range(1000, 1040)])
    write_jsonl(tmp / "bench.jsonl", items)
    cfg_file = tmp / "cfg.py"
    cfg_file.write_text(
        "from corpus_proximity.config import CorpusConfig, ExperimentConfig\n"
        f"config = ExperimentConfig(name='contam', cache_dir={str(tmp / 'cache')!r}, "
        f"output_dir={str(tmp / 'out')!r}, corpus=CorpusConfig(path={str(tmp / 'corpus.jsonl')!r}))\n")
    return tmp, cfg_file, items


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_planted_items_classified(planted):
    tmp, cfg_file, items = planted
    cfg = load_config(cfg_file)
    _, df, summary, emb = run_contamination(cfg, tmp / "bench.jsonl", "q", log=Console(file=io.StringIO()))
    truth = np.array([it["kind"] for it in items])
    got = df["verdict"].to_numpy()
    for kind in ("verbatim", "near", "far"):
        assert (got[truth == kind] == kind).mean() >= 0.95, (kind, df[truth == kind][["similarity", "verdict"]])
    v = df[truth == "verbatim"]
    assert (v["ngram13_share"] == 1.0).all() and (v["ngram13_longest_span"] == v["n_tokens"]).all()
    assert [c.split(";")[0] for c in v["evidence_chunks"]] == [f"d{i}" for i in range(40)]
    assert (df[truth == "near"]["ngram8_share"] < 0.2).all()  # near by meaning, not by text
    assert summary["counts"]["verbatim"] >= 38 and emb.shape == (120, 384)


def test_script_outputs_and_accuracy_join(planted):
    tmp, cfg_file, items = planted
    results = [{"question": it["q"], "m": {"is_correct": it["kind"] == "verbatim" or k % 3 == 0}}
               for k, it in enumerate(items)]
    write_jsonl(tmp / "results.jsonl", results[::-1])  # another order: joined on the text
    rc = contamination_main([str(cfg_file), "--quiet", "--benchmark", str(tmp / "bench.jsonl"), "--text-field", "q",
                             "--results", str(tmp / "results.jsonl"), "--results-text-field", "question",
                             "--correct-field", "*.is_correct"])
    assert rc == 0
    out = tmp / "out" / "contam" / "contamination" / "bench"
    df = pd.read_parquet(out / "items.parquet")
    assert len(pd.read_csv(out / "items.csv")) == len(df) == 120
    s = json.loads((out / "summary.json").read_text())
    acc = s["outcomes"]["accuracy"]["m.is_correct"]
    by = {r["level"]: r for r in acc["levels"]}
    assert by["verbatim"]["accuracy"] >= 0.95 and by["far"]["accuracy"] < 0.5
    assert acc["test"]["p"] < 1e-6 and s["outcomes"]["joined"] == 120


def test_bad_input_one_line_errors(planted, capsys):
    tmp, cfg_file, _ = planted
    (tmp / "empty.jsonl").write_text("")
    for bench, field, needle in ((tmp / "empty.jsonl", "q", "has no rows"),
                                 (tmp / "bench.jsonl", "question", "has no field 'question'"),
                                 (tmp / "missing.jsonl", "q", "does not exist")):
        rc = contamination_main([str(cfg_file), "--quiet", "--benchmark", str(bench), "--text-field", field])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and needle in err[0], err
        assert "--benchmark" in err[0] or "--text-field" in err[0]


# --- statistics: stage × node, accuracy × level, node mass --------------------------------------

def _stage_draw(rng, planted: bool, n_nodes: int = 6, per_node: int = 100):
    labels = np.repeat([str(k) for k in range(n_nodes)], per_node).astype(object)
    p = np.where((labels == "3") & planted, 0.75, 0.5)
    stages = np.where(rng.random(len(labels)) < p, "sft", "pretrain")
    noise = rng.random(len(labels)) < 0.05  # noise points are left out of the test
    labels[noise] = "-1"
    return labels, stages


def test_stage_by_node_power_and_calibration():
    rng = np.random.default_rng(0)
    hits = found = 0
    for _ in range(200):
        labels, stages = _stage_draw(rng, True)
        r = stage_by_node([labels], stages)["depths"]["depth_0"]
        hits += r["p"] <= 0.05
        found += r["most_different"]["node"] == "3"
    assert hits / 200 >= 0.9 and found / 200 >= 0.9
    null = [stage_by_node([labels], stages)["depths"]["depth_0"]["p"]
            for labels, stages in (_stage_draw(rng, False) for _ in range(400))]
    assert 0.02 <= np.mean(np.array(null) <= 0.05) <= 0.085


def test_stage_by_node_table_matches_scipy():
    labels = np.array(["0", "0", "1", "1", "1", "2", "", "-1"] * 10, dtype=object)
    stages = np.array(["a", "b", "a", "a", "b", "b", "a", "b"] * 10)
    r = stage_by_node([labels], stages)
    e = r["depths"]["depth_0"]
    keep = (labels != "") & (labels != "-1")
    table = pd.crosstab(labels[keep], stages[keep]).to_numpy()
    chi2, p, dof, _ = stats.chi2_contingency(table, correction=False)
    assert np.isclose(e["chi2"], chi2) and np.isclose(e["p"], p) and e["dof"] == dof
    assert [nd["n.a"] for nd in e["nodes"]] == table[:, 0].tolist()
    assert r["totals"] == {"a": 40, "b": 40}


def test_accuracy_by_level_exact():
    levels = ["verbatim"] * 20 + ["near"] * 30 + ["far"] * 50 + ["far"]
    correct = [True] * 18 + [False] * 2 + [True] * 15 + [False] * 15 + [True] * 20 + [False] * 30 + [None]
    a = accuracy_by_level(levels, correct)
    by = {r["level"]: r for r in a["levels"]}
    assert a["n_graded"] == 100 and by["far"]["n"] == 50 and by["verbatim"]["accuracy"] == 0.9
    lo, hi = wilson_interval(18, 20)
    assert (by["verbatim"]["ci_low"], by["verbatim"]["ci_high"]) == (lo, hi)
    chi2, p, dof, _ = stats.chi2_contingency([[18, 2], [15, 15], [20, 30]], correction=False)
    assert a["test"]["test"] == "chi2" and np.isclose(a["test"]["p"], p) and a["test"]["dof"] == 2
    small = accuracy_by_level(["verbatim"] * 4 + ["far"] * 6, [True] * 4 + [False] * 5 + [True])
    assert small["test"]["test"] == "fisher"
    assert np.isclose(small["test"]["p"], stats.fisher_exact([[4, 0], [1, 5]])[1])
    assert accuracy_by_level(["far"] * 5, [True] * 5)["test"]["p"] is None


def test_node_mass_counts():
    paths = np.array([["0", "0.1"], ["0", ""], ["1", "1.0"], ["1", "1.0"]], dtype=object)
    rows = node_mass(paths, ["verbatim", "far", "near", "far"], {"m": np.array([True, False, None, False], dtype=object)})
    by = {(r["depth"], r["node"]): r for r in rows}
    assert by[(0, "0")]["verbatim"] == 1 and by[(0, "0")]["error_rate.m"] == 0.5
    assert by[(1, "0")]["n_items"] == 1  # carried into its shallower leaf at depth 1
    assert by[(1, "1.0")]["contaminated_share"] == 0.5 and by[(1, "1.0")]["error_rate.m"] == 1.0


def test_corpus_nn_similarities_leave_one_document_out():
    X = np.eye(4, dtype=np.float32)[[0, 0, 1, 1, 2]]
    X[4] = (X[0] + X[4]) / np.sqrt(2)
    sims = corpus_nn_similarities(X, ["a", "a", "b", "b", "c"], sample=10, seed=0)
    # rows of a: nearest other-document chunk is c (0.707); b: a or c at 0 / 0; c: a at 0.707
    assert np.allclose(sims, sorted([0.7071, 0.7071, 0.0, 0.0, 0.7071]), atol=1e-3)
    assert np.array_equal(corpus_nn_similarities(X, list("aabbc"), 3, 1), corpus_nn_similarities(X, list("aabbc"), 3, 1))


@pytest.mark.slow
def test_corpus_stages_on_a_real_tree(built_default):
    """The default corpus's two sources (BBC News, Python docs) as two "stages": the tree separates
    them, so stage × node is significant with a large Cramér's V at depth 0."""
    from dataclasses import replace

    cfg = replace(built_default, contamination=replace(built_default.contamination, stage_field="source"))
    r = corpus_stages(cfg)
    assert r is not None and set(r["stages"]) == {"bbc-news", "python-docs"}
    d0 = r["depths"]["depth_0"]
    assert d0["p"] < 1e-6 and d0["cramers_v"] > 0.5
    assert corpus_stages(replace(cfg, contamination=replace(cfg.contamination, stage_field="nope"))) is None


def test_report_section_escapes_and_shows_items(planted):
    tmp, cfg_file, _ = planted
    from corpus_proximity.explore.contamination_view import contamination_section

    out = tmp / "out" / "contam" / "contamination"
    if not (out / "bench" / "summary.json").is_file():
        assert contamination_main([str(cfg_file), "--quiet", "--benchmark", str(tmp / "bench.jsonl"),
                                   "--text-field", "q"]) == 0
    evil = out / "evil"
    evil.mkdir(exist_ok=True)
    df = pd.read_parquet(out / "bench" / "items.parquet").head(3)
    df.loc[df.index[0], "text"] = "<script>alert(1)</script>"
    df.to_parquet(evil / "items.parquet")
    (evil / "summary.json").write_text((out / "bench" / "summary.json").read_text())
    page = contamination_section(out)
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Contamination: benchmark items in the corpus" in page and "Contaminated items" in page


@pytest.mark.slow
def test_demo_gsm8k_train_planted_into_default_corpus(tmp_path):
    """The demo: 50 GSM8K train questions planted into a copy of the embedded default corpus are
    found (verbatim), 50 other train questions are not (far), and the corpus itself stays far."""
    if not (GSM8K / "train.jsonl").is_file():
        pytest.skip("GSM8K data not present")
    from corpus_proximity.config import CorpusConfig
    from corpus_proximity.text.corpus import load_default_corpus

    docs = load_default_corpus(CorpusConfig(default_bbc_per_topic=16, default_stdlib_packages=("email", "asyncio"),
                                            default_stdlib_per_package=20))
    qs = [json.loads(line)["question"] for line in (GSM8K / "train.jsonl").read_text().splitlines()[:100]]
    rows = [{"id": d["doc_id"], "text": d["text"], "stage": "pretrain"} for d in docs]
    rows += [{"id": f"gsm8k-train-{i}", "text": q, "stage": "sft"} for i, q in enumerate(qs[:50])]
    write_jsonl(tmp_path / "corpus.jsonl", rows)
    write_jsonl(tmp_path / "bench.jsonl", [{"question": q} for q in qs])
    cfg = load_config_text(tmp_path, f"CorpusConfig(path={str(tmp_path / 'corpus.jsonl')!r})")
    _, df, summary, _ = run_contamination(cfg, tmp_path / "bench.jsonl", "question", log=Console(file=io.StringIO()))
    assert (df["verdict"][:50] == "verbatim").mean() >= 0.95
    assert (df["verdict"][50:] == "far").mean() >= 0.95
    assert all(c.split(";")[0] == f"gsm8k-train-{i}" for i, c in enumerate(df["evidence_chunks"][:50]))


def load_config_text(tmp: Path, corpus_expr: str):
    f = tmp / "cfg.py"
    f.write_text("from corpus_proximity.config import CorpusConfig, ExperimentConfig\n"
                 f"config = ExperimentConfig(name='demo', cache_dir={str(tmp / 'cache')!r}, "
                 f"output_dir={str(tmp / 'out')!r}, corpus={corpus_expr})\n")
    return load_config(f)


def _tab_script(root: str) -> None:
    from pathlib import Path

    from corpus_proximity.explore.contamination_view import contamination_tab

    contamination_tab(Path(root))


def test_dashboard_tab(planted):
    from streamlit.testing.v1 import AppTest

    tmp, cfg_file, _ = planted
    out = tmp / "out" / "contam" / "contamination"
    if not (out / "bench" / "summary.json").is_file():
        assert contamination_main([str(cfg_file), "--quiet", "--benchmark", str(tmp / "bench.jsonl"),
                                   "--text-field", "q"]) == 0
    at = AppTest.from_function(_tab_script, args=(str(out),), default_timeout=60).run()
    assert not at.exception
    assert [m.label for m in at.metric] == ["verbatim", "near", "far"]
    items = at.dataframe[-1].value  # the items table comes last
    assert set(items["verdict"]) <= {"verbatim", "near"} and len(items) >= 76
    empty = AppTest.from_function(_tab_script, args=(str(tmp / "nothing"),), default_timeout=60).run()
    assert not empty.exception and "No contamination results" in empty.info[0].value


def test_config_rejects_impossible_values():
    from corpus_proximity.config import ContaminationConfig, ExperimentConfig, apply_overrides
    from corpus_proximity.errors import InputError

    with pytest.raises(InputError, match="contamination.ngram_sizes"):
        ContaminationConfig(ngram_sizes=())
    with pytest.raises(InputError, match="contamination.verbatim_share"):
        ContaminationConfig(verbatim_share=0.0)
    cfg = apply_overrides(ExperimentConfig(), ["contamination.ngram_sizes=13,10", "contamination.near_percentile=95"])
    assert cfg.contamination.ngram_sizes == (13, 10) and cfg.contamination.near_percentile == 95.0


def test_near_threshold_ignores_exact_duplicates():
    from corpus_proximity.analysis.contamination import near_threshold
    from corpus_proximity.config import ContaminationConfig

    cal = np.sort(np.r_[np.linspace(0.3, 0.9, 980), np.ones(20)])
    t = near_threshold(cal, ContaminationConfig(near_percentile=99.0, near_min_similarity=0.5))
    assert 0.88 < t < 0.9


# --- character spans, the cached stage, the n-gram checksums (fast; no ../shared) ----------------

def test_evidence_character_offsets_exact():
    """A span planted with other case, spacing and a ligature: its characters in the item text and
    in the chunk text are where it was planted."""
    from corpus_proximity.analysis.contamination import score_items
    from corpus_proximity.config import ContaminationConfig

    chunks = ["Nothing to see here at all, only other words about golf and kilo.",
              "Alpha beta. The QUICK  brown fox jumps over the ﬁne lazy dog, said Natalia today. Omega."]
    item = "Question: the quick brown\nfox JUMPS over the fine lazy dog, said natalia? Answer it."
    idx = build_index(iter([chunks]), 3)
    df, _ = score_items([item, "nothing shared"], [idx], np.array([np.nan, np.nan]), np.array([-1, -1]),
                        np.linspace(0, 0.5, 10), ["c0", "c1"], ContaminationConfig(ngram_sizes=(3,)),
                        chunk_texts=lambda rows: {r: chunks[r] for r in rows})
    r = df.iloc[0]
    i0, c0 = item.index("the quick"), chunks[1].index("The QUICK")
    i1, c1 = item.index("natalia") + len("natalia"), chunks[1].index("Natalia") + len("Natalia")
    assert (r["span_chunk"], r["span_item_char_start"], r["span_item_char_end"]) == ("c1", i0, i1)
    assert (r["span_chunk_char_start"], r["span_chunk_char_end"]) == (c0, c1)
    assert chunks[1][c0:c1] == "The QUICK  brown fox jumps over the ﬁne lazy dog, said Natalia"
    ev = json.loads(r["evidence_spans"])[0]
    assert ev["item_chars"] == [i0, i1] and ev["chunk_chars"] == [c0, c1] and ev["chunk_tokens"] == ev["end"] - ev["start"]
    none = df.iloc[1]
    assert none["span_chunk"] == "" and none["span_item_char_start"] == -1 and json.loads(none["evidence_spans"]) == []


def test_tokenize_with_offsets_maps_back():
    from corpus_proximity.analysis.ngrams import tokenize_with_offsets

    for text in ("Natalia’s 48 CLIPS,\u00a0ﬁne!", "e\u0301te  x", "İstanbul ½ cup", "", "  a  "):
        toks, offs = tokenize_with_offsets(text)
        assert toks == tokenize(text) and len(offs) == len(toks)
        assert all(tokenize(text[a:b])[0] == t or t in tokenize(text[a:b]) for t, (a, b) in zip(toks, offs))
    assert tokenize_with_offsets("a ﬁne day")[1] == [(0, 1), (2, 5), (6, 9)]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A 40-document corpus of seeded word salad, with two documents holding known sentences."""
    tmp = tmp_path_factory.mktemp("contam-syn")
    rng = np.random.default_rng(3)
    docs = [{"id": f"d{i}", "text": " ".join(rng.choice(WORDS, size=40)), "stage": "sft" if i < 10 else "pretrain"}
            for i in range(40)]
    docs[3]["text"] += " Janet has sixteen ducks that lay eggs every single morning near the old farm house."
    write_jsonl(tmp / "corpus.jsonl", docs)
    write_jsonl(tmp / "bench.jsonl", [{"q": "Janet has sixteen ducks that lay eggs every single morning near the old "
                                            "farm house.", "ok": True},
                                      {"q": "A question that is nowhere in this corpus of words at all.", "ok": False}])
    cfg = load_config_text(tmp, f"CorpusConfig(path={str(tmp / 'corpus.jsonl')!r})")
    return tmp, cfg


def test_contamination_stage_cache_hit_and_miss(synthetic):
    from dataclasses import replace

    from corpus_proximity.analysis.contamination import contamination_stage_dir

    tmp, cfg = synthetic
    bench = tmp / "bench.jsonl"
    log = io.StringIO()
    _, df, summary, emb = run_contamination(cfg, bench, "q", log=Console(file=log, width=300))
    assert "contamination: cache hit" not in log.getvalue() and df["verdict"].tolist() == ["verbatim", "far"]
    sd = contamination_stage_dir(cfg, bench, "q")
    meta = sd.read_meta()
    assert sd.complete and set(meta["artifacts"]) == {"items.parquet", "item_embeddings.npy", "summary.json"}
    assert meta["config"]["text_field"] == "q" and set(meta["upstream"]) == {"ngrams13", "ngrams8", "embed"}
    log = io.StringIO()
    _, again, summary2, emb2 = run_contamination(cfg, bench, "q", log=Console(file=log, width=300))
    assert "contamination: cache hit" in log.getvalue() and "embed:" not in log.getvalue()
    pd.testing.assert_frame_equal(df, again)
    assert summary2 == summary and np.array_equal(emb, emb2)
    # what changes the result changes the key; what does not, does not
    same = [replace(cfg, contamination=replace(cfg.contamination, alpha=0.01, stage_field="x", batch_size=7))]
    other = [replace(cfg, contamination=replace(cfg.contamination, verbatim_share=0.9)),
             replace(cfg, contamination=replace(cfg.contamination, ngram_sizes=(10,)))]
    assert all(contamination_stage_dir(c, bench, "q").key == sd.key for c in same)
    assert all(contamination_stage_dir(c, bench, "q").key != sd.key for c in other)
    assert contamination_stage_dir(cfg, bench, "q", "ok").key != sd.key
    # another benchmark file's bytes: a miss, then its own hit
    changed = tmp / "bench2.jsonl"
    changed.write_text(bench.read_text().replace("nowhere", "absent"))
    assert contamination_stage_dir(cfg, changed, "q").key != sd.key
    log = io.StringIO()
    _, df3, _, _ = run_contamination(cfg, changed, "q", log=Console(file=log, width=300))
    assert "contamination: cache hit" not in log.getvalue() and "absent" in df3["text"][1]
    copy = tmp / "copy.jsonl"
    copy.write_bytes(bench.read_bytes())  # the same bytes elsewhere: a hit, reported under its own path
    log = io.StringIO()
    _, _, s4, _ = run_contamination(cfg, copy, "q", log=Console(file=log, width=300))
    assert "cache hit" in log.getvalue() and s4["benchmark"] == str(copy)


def test_corrupt_ngram_index_is_one_line_naming_the_file(synthetic, tmp_path, capsys):
    import shutil
    from dataclasses import replace

    from corpus_proximity.analysis.contamination import ngram_stage_dir, run_ngram_index

    src, cfg = synthetic
    run_ngram_index(cfg, 13, Console(file=io.StringIO()))
    built = ngram_stage_dir(cfg, 13)
    assert set(built.read_meta()["artifacts"]) == {"ngrams13_hashes.npy", "ngrams13_rows.npy"}
    for name, how in (("ngrams13_hashes.npy", "flip"), ("ngrams13_rows.npy", "truncate")):
        cache = tmp_path / f"cache-{how}"  # a fresh copy: a path this process has not verified yet
        shutil.copytree(cfg.cache_dir, cache, ignore=shutil.ignore_patterns("contamination-*"))  # no result to reuse
        c = replace(cfg, cache_dir=str(cache))
        sd = ngram_stage_dir(c, 13)
        raw = bytearray(sd.file(name).read_bytes())
        if how == "flip":
            raw[-1] ^= 0xFF
        else:
            raw = raw[: len(raw) // 2]
        sd.file(name).write_bytes(bytes(raw))
        cfg_file = tmp_path / f"cfg-{how}.py"
        cfg_file.write_text((src / "cfg.py").read_text().replace(repr(cfg.cache_dir), repr(str(cache))))
        rc = contamination_main([str(cfg_file), "--quiet", "--benchmark", str(src / "bench.jsonl"), "--text-field", "q"])
        err = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.startswith("error")]
        assert rc == 2 and len(err) == 1, err  # one error line (after the cache-hit lines of the stages upstream)
        assert err[0].startswith(f"error: {sd.file(name)} is corrupt") and err[0].endswith(f"delete {sd.path} and rerun")


def test_matches_html_marks_the_span_and_escapes():
    from corpus_proximity.explore.contamination_view import highlight_spans, matches_html

    item = "Q: <b>the quick brown fox</b> jumps?"
    chunk = "Intro & <i>more</i>: The quick brown FOX</b> jumps over."
    i0, i1 = item.index("the quick"), item.index("fox") + 3
    c0, c1 = chunk.index("The quick"), chunk.index("FOX") + 3
    items = pd.DataFrame({"item": [0, 1, 2], "verdict": ["verbatim", "near", "far"], "text": [item, "x y", "z"],
                          "span_chunk": ["c<1>", "gone", ""], "span_item_char_start": [i0, 0, -1],
                          "span_item_char_end": [i1, 3, -1], "span_chunk_char_start": [c0, 0, -1],
                          "span_chunk_char_end": [c1, 3, -1]})
    page = matches_html(items, {"c<1>": chunk})
    assert "<mark>the quick brown fox</mark>" in page and "<mark>The quick brown FOX</mark>" in page
    assert "&lt;b&gt;" in page and "&lt;i&gt;more&lt;/i&gt;" in page and "<b>c&lt;1&gt;</b>" in page
    assert "<i>more" not in page and page.count("<tr>") == 2  # the header and item 0 (item 1's chunk is unknown)
    assert highlight_spans(item, chunk, i0, i1, 0, 5) is None  # offsets that do not fit the texts: not shown
    assert matches_html(items.iloc[1:], {"c<1>": chunk}) == ""


def _tab_with_chunks(root: str, chunks: dict) -> None:
    from pathlib import Path

    from corpus_proximity.explore.contamination_view import contamination_tab

    contamination_tab(Path(root), chunks)


def test_dashboard_tab_marks_the_matching_text(synthetic):
    from streamlit.testing.v1 import AppTest

    from corpus_proximity.text import chunking

    tmp, cfg = synthetic
    assert contamination_main([str(tmp / "cfg.py"), "--quiet", "--benchmark", str(tmp / "bench.jsonl"),
                               "--text-field", "q"]) == 0
    t = chunking.read_chunks(chunking.stage_dir(cfg), ["chunk_id", "text"])
    chunks = dict(zip(t.column("chunk_id").to_pylist(), t.column("text").to_pylist()))
    at = AppTest.from_function(_tab_with_chunks, args=(str(cfg.outputs / "contamination"), chunks),
                               default_timeout=60).run()
    assert not at.exception
    shown = [m.value for m in at.markdown]
    # the whole planted sentence is the match, bold (its "." escaped), in the item and in chunk d3's text
    assert any(v.startswith("**item:** **Janet has sixteen ducks") and v.endswith("farm house\\.**") for v in shown)
    assert any(v.startswith("**chunk** d3") and "**Janet has sixteen ducks" in v for v in shown), shown
