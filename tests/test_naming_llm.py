"""The LLM namer against a scripted OpenAI-compatible HTTP server on 127.0.0.1: breadth-first
prompts, the per-call cache, retries on 429/500/garbage/empty/slow answers, failures marked
and never invented, re-asks of generic and duplicate labels, and the key kept off disk."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

import name_clusters
from corpus_proximity import cli
from corpus_proximity.config import NamingConfig
from corpus_proximity.errors import InputError
from corpus_proximity.llm.caller import CallCache
from corpus_proximity.llm.local import free_port
from corpus_proximity.naming import llm as naming_llm
from corpus_proximity.naming import stage as naming_stage
from corpus_proximity.naming.llm import LLMNamer, is_generic, parse_answer, same_label
from corpus_proximity.naming.offline import OfflineNamer

from naming_fixtures import (
    FakeLLM,
    experiment,
    good_answer,
    keywords_in,
    naming_config,
    prompt_of,
    topic_tree,
    write_config_file,
    write_fake_cache,
)


@pytest.fixture(scope="module")
def small():
    return topic_tree(["sport", "python"], per_fine=10)


def llm_cfg(base_url: str, **kw) -> NamingConfig:
    base = dict(namer="llm", model="fake-model", base_url=base_url, max_retries=2,
                timeout_s=5.0, max_concurrency=3, n_samples=3, n_random=1, max_sample_chars=120)
    base.update(kw)
    return naming_config(**base)


def name(small, cfg: NamingConfig, cache_dir: Path):
    tree, texts, X, _ = small
    return LLMNamer(cfg, cache_dir).name_tree(tree, texts, X)


def node_of(small, topic: str) -> str:
    return next(nid for nid, t in small[3].items() if t == topic)


_HINTS = {}


def is_for(body: dict, small, topic: str) -> bool:
    """Whether a request asks about the node whose ground-truth topic is ``topic`` (its keyword
    hints, as the offline namer gives them, head the prompt's keyword line)."""
    if id(small) not in _HINTS:
        _HINTS[id(small)] = OfflineNamer().name_tree(small[0], small[1]).names
    return keywords_in(body)[:3] == _HINTS[id(small)][node_of(small, topic)].keywords[:3]


def test_every_node_named_breadth_first_with_parent_names(small, tmp_path):
    tree = small[0]
    with FakeLLM() as fake:
        res = name(small, llm_cfg(fake.base_url), tmp_path)
    assert res.fatal is None and res.n_failed == 0
    assert {r.source for r in res.names.values()} == {"llm"}
    assert set(res.names) == {n for n in tree.nodes if n != "root"}
    prompts = fake.prompts()
    assert len(prompts) == len(res.names)  # one call per node: no retries, no re-asks
    depth1 = [i for i, p in enumerate(prompts) if "one part of the larger group" in p]
    assert len(depth1) == 4 and min(depth1) == 2  # both top-level nodes were asked first
    for nid, rec in res.names.items():
        node = tree.nodes[nid]
        if node.depth == 1:  # the parent's LLM name is in the child's prompt
            parent = res.names[node.parent].name
            assert any(f'one part of the larger group "{parent}"' in p and rec.keywords[0] in p for p in prompts)
        assert rec.summary and rec.category == "Test" and rec.coherence == 7
    assert all(b["model"] == "fake-model" and b["temperature"] == 0.0 for b in fake.requests)
    assert fake.requests[0]["response_format"]["type"] == "json_schema"


def test_rerun_makes_zero_calls_and_prompt_edits_repay(small, tmp_path, monkeypatch):
    with FakeLLM() as fake:
        first = name(small, llm_cfg(fake.base_url), tmp_path)
        n = len(fake.requests)
        again = name(small, llm_cfg(fake.base_url), tmp_path)
        assert len(fake.requests) == n  # everything from the per-call cache
        assert again.stats.get("cache_hits") == n and not again.stats.get("requests")
        assert {k: v.name for k, v in again.names.items()} == {k: v.name for k, v in first.names.items()}
        # the key covers the temperature, the model and the prompt template
        name(small, llm_cfg(fake.base_url, temperature=0.5), tmp_path)
        assert len(fake.requests) == 2 * n
        monkeypatch.setattr(naming_llm, "SYSTEM_PROMPT", naming_llm.SYSTEM_PROMPT + " Be brief.")
        name(small, llm_cfg(fake.base_url), tmp_path)
        assert len(fake.requests) == 3 * n
        monkeypatch.undo()
        name(small, llm_cfg(fake.base_url), tmp_path)
        assert len(fake.requests) == 3 * n  # the original prompt's answers are still cached


def test_429_and_500_are_retried(small, tmp_path):
    script = {0: "429", 1: "500", 2: "429"}
    with FakeLLM(lambda body, n: script.get(n)) as fake:
        res = name(small, llm_cfg(fake.base_url, max_retries=3), tmp_path)
    assert res.n_failed == 0
    assert len(fake.requests) == len(res.names) + 3
    assert res.stats["retries"] == 3


def test_persistent_500_marks_the_node_and_its_children_and_invents_nothing(small, tmp_path):
    sport = node_of(small, "sport")
    with FakeLLM(lambda body, n: "500" if is_for(body, small, "sport") else None) as fake:
        res = name(small, llm_cfg(fake.base_url), tmp_path)
        failed_requests = [b for b in fake.requests if is_for(b, small, "sport")]
    assert res.fatal is None
    rec = res.names[sport]
    assert rec.name is None and rec.summary is None and rec.coherence is None
    assert "HTTP 500" in rec.name_error and "after 3 attempts" in rec.name_error
    assert len(failed_requests) == 3  # 1 + max_retries
    for child in small[0].nodes[sport].children:  # no prompt without the parent's name
        assert res.names[child].name is None and "parent" in res.names[child].name_error
    named = [r for r in res.names.values() if r.name]
    assert len(named) == 3
    # only successful calls are cached: a healthy server later fills in exactly the missing ones
    assert len(list(tmp_path.glob("*.json"))) == len(named)
    with FakeLLM() as healthy:
        again = name(small, llm_cfg(healthy.base_url), tmp_path)
    assert again.n_failed == 0 and len(healthy.requests) == 1 + len(small[0].nodes[sport].children)
    assert all(again.names[r.id].name == r.name for r in named)


@pytest.mark.parametrize("action, needle", [("garbage", "bad response"), ("empty", "empty answer"),
                                            ("prose", "no JSON object"),
                                            ({"content": '{"label": "Football", "coherence": 42}'}, "coherence")])
def test_unusable_answers_are_retried_then_marked(small, tmp_path, action, needle):
    with FakeLLM(lambda body, n: action if is_for(body, small, "tennis") else None) as fake:
        res = name(small, llm_cfg(fake.base_url), tmp_path)
    tennis = res.names[node_of(small, "tennis")]
    assert tennis.name is None and needle in tennis.name_error, tennis.name_error
    assert sum(is_for(b, small, "tennis") for b in fake.requests) == 3
    if action != "garbage":  # the retry shows the model its bad reply and asks for JSON only
        retry = [b for b in fake.requests if is_for(b, small, "tennis")][1]
        assert retry["messages"][-1]["role"] == "user" and "not usable" in retry["messages"][-1]["content"]
    assert res.n_failed == 1 and not CallCache(tmp_path).get("0" * 64)


def test_a_bad_answer_then_a_good_one_is_cached_under_the_original_call(small, tmp_path):
    seen = set()

    def behave(body, n):
        if is_for(body, small, "asyncio") and "asyncio" not in seen:
            seen.add("asyncio")
            return "empty"
        return None

    with FakeLLM(behave) as fake:
        res = name(small, llm_cfg(fake.base_url), tmp_path)
        n = len(fake.requests)
        assert res.n_failed == 0 and n == len(res.names) + 1
        name(small, llm_cfg(fake.base_url), tmp_path)
        assert len(fake.requests) == n


def test_slow_answers_time_out_and_are_marked(small, tmp_path):
    with FakeLLM(lambda body, n: "slow" if is_for(body, small, "email") else None, delay=1.5) as fake:
        res = name(small, llm_cfg(fake.base_url, timeout_s=0.3, max_retries=1), tmp_path)
    email = res.names[node_of(small, "email")]
    assert email.name is None and "timed out" in email.name_error
    assert sum(is_for(b, small, "email") for b in fake.requests) == 2
    assert res.n_failed == 1


def test_generic_and_duplicate_labels_are_reasked_once(small, tmp_path):
    def behave(body, n):
        p = prompt_of(body)
        if "A first answer labelled" in p:
            return None  # the sharper prompt gets a specific label
        if is_for(body, small, "tennis") or is_for(body, small, "football"):
            return {"content": json.dumps({"summary": "s", "label": "Sport", "category": "c", "coherence": 5})}
        if is_for(body, small, "asyncio"):
            return {"content": json.dumps({"summary": "s", "label": "Text", "category": "c", "coherence": 5})}
        if is_for(body, small, "email"):  # the parent's own label, as good_answer gives it
            python_kws = _HINTS[id(small)][node_of(small, "python")].keywords
            return {"content": json.dumps({"summary": "s", "label": " ".join(k.title() for k in python_kws[:2]),
                                           "category": "c", "coherence": 5})}
        return None

    with FakeLLM(behave) as fake:
        res = name(small, llm_cfg(fake.base_url), tmp_path)
    reasks = [p for p in fake.prompts() if "A first answer labelled" in p]
    labels = {small[3][k]: v.name for k, v in res.names.items()}
    # football and tennis are siblings under sport only if they share a parent; asyncio's "Text" is generic
    assert any('"Text", which is too generic' in p for p in reasks)
    assert not is_generic(labels["asyncio"])
    sport_kids = small[0].nodes[node_of(small, "sport")].children
    assert not same_label(res.names[sport_kids[0]].name, res.names[sport_kids[1]].name)
    dup = [p for p in reasks if "same as its sibling" in p]
    assert len(dup) == 1 and 'Labels already taken: "Sport"' in dup[0]
    as_parent = [p for p in reasks if "same as the larger group's label" in p]
    assert len(as_parent) == 1
    assert not same_label(labels["email"], labels["python"])
    assert len(reasks) == 3 and len(fake.requests) == len(res.names) + 3


def test_unreachable_base_url_is_one_fatal_error(small, tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"
    res = name(small, llm_cfg(url, max_retries=1), tmp_path)
    assert res.fatal and "unreachable" in res.fatal and "cannot connect" in res.fatal
    assert res.n_failed == len(res.names)
    assert all("not attempted" in r.name_error for r in res.names.values() if small[0].nodes[r.id].depth == 1)


def test_rejected_key_is_fatal_without_retries(small, tmp_path):
    with FakeLLM(lambda body, n: "401") as fake:
        res = name(small, llm_cfg(fake.base_url, max_retries=3), tmp_path)
    assert res.fatal and "HTTP 401" in res.fatal
    assert len(fake.requests) == 2  # one per top-level node, none retried, depth 1 not attempted


def quiet(monkeypatch) -> io.StringIO:
    buf = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=buf, width=200))
    return buf


def test_cli_keeps_names_obtained_when_the_server_goes_away(small, tmp_path, monkeypatch, capsys):
    tree, texts, X, truth = small
    cfg = experiment(tmp_path)
    write_fake_cache(cfg, tree, texts, X)
    path = write_config_file(tmp_path, cfg)
    out = quiet(monkeypatch)
    sets = ["--set", "naming.namer=llm", "--set", "naming.llm.model=fake-model", "--set", "naming.llm.max_retries=1"]
    # the server answers the top level, then stops answering (connections dropped)
    with FakeLLM(lambda body, n: "drop" if "one part of the larger group" in prompt_of(body) else None) as fake:
        rc = name_clusters.main([str(path), "--name", "--quiet", *sets, "--set", f"naming.llm.base_url={fake.base_url}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "unreachable" in err[0] and "2 name(s) obtained are kept" in err[0] and "retry the 4 other(s)" in err[0]
    names = json.loads(next(Path(cfg.cache_dir).glob("names-*/names.json")).read_text())
    assert names["n_failed"] == 4 and [n["name"] is not None for n in names["nodes"]].count(True) == 2
    # the next run retries only what failed; the tree shows every name
    with FakeLLM() as fake:
        rc = name_clusters.main([str(path), "--name", "--quiet", *sets, "--set", f"naming.llm.base_url={fake.base_url}"])
        assert rc == 0 and len(fake.requests) == 4
    text = out.getvalue()
    assert "retrying them" in text and "6/6 nodes named" in text
    for rec in json.loads(next(Path(cfg.cache_dir).glob("names-*/names.json")).read_text())["nodes"]:
        assert rec["source"] == "llm" and rec["name"] and rec["name"] in text


def test_api_key_comes_from_the_environment_and_never_reaches_disk(small, tmp_path, monkeypatch):
    secret = "sk-test-0123456789-never-on-disk"
    monkeypatch.setenv("CP_TEST_KEY", secret)
    with FakeLLM() as fake:
        name(small, llm_cfg(fake.base_url, api_key_env="CP_TEST_KEY"), tmp_path / "calls")
    assert set(fake.auth) == {f"Bearer {secret}"}
    cfg = experiment(tmp_path, namer="llm", model="m", api_key_env="CP_TEST_KEY")
    tree, texts, X, _ = small
    write_fake_cache(cfg, tree, texts, X)
    with FakeLLM() as fake:
        naming_stage.run_naming(replace(cfg, naming=replace(cfg.naming, llm=replace(cfg.naming.llm, base_url=fake.base_url))),
                                 log=Console(file=io.StringIO()))
    for p in tmp_path.rglob("*"):
        if p.is_file():
            assert secret.encode() not in p.read_bytes(), p
    with pytest.raises(InputError, match="naming.llm.api_key_env"):
        naming_config(api_key_env="sk-abcdef")


def test_openai_api_without_a_key_is_a_clear_error(small, tmp_path, monkeypatch):
    monkeypatch.delenv("CP_ABSENT_KEY", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env here
    res_cfg = llm_cfg(None, api_key_env="CP_ABSENT_KEY")
    with pytest.raises(InputError, match="CP_ABSENT_KEY"):
        name(small, res_cfg, tmp_path)


def test_parse_and_judge_answers():
    a = parse_answer('```json\n{"summary": "s", "label": "\\"Premier League.\\"", "category": "Sport", '
                     '"coherence": "8/10"}\n```')
    assert a.label == "Premier League" and a.coherence == 8
    assert parse_answer('{"label": "football transfers, strikers, clubs", "coherence": 5}').label == \
        "football transfers"
    for bad, needle in [("", "empty"), ("hello", "no JSON"), ('{"label": "", "coherence": 3}', "label"),
                        ('{"label": "x"}', "coherence"), ('{"label": "2-5 words", "coherence": 3}', "copies"),
                        ('{"label": "a b c d e f g h i", "coherence": 3}', "words")]:
        with pytest.raises(naming_llm.AnswerError, match=needle):
            parse_answer(bad)
    assert is_generic("Text") and is_generic("Cluster 3") and is_generic("Miscellaneous documents")
    assert not is_generic("Football transfers") and not is_generic("Email headers")
    assert same_label("Football Clubs", "football club") and not same_label("Tennis", "Football")
    assert json.loads(good_answer({"messages": [{"content": "Keywords of this group: a, b"}]}))["label"] == "A B"


def test_a_retry_run_asks_only_the_unnamed_and_never_renames_a_named_node(small, tmp_path):
    tree, texts, X, _ = small
    cfg = experiment(tmp_path, namer="llm", model="fake-model", max_retries=0, timeout_s=5.0)
    write_fake_cache(cfg, tree, texts, X)
    log = Console(file=io.StringIO())
    with FakeLLM(lambda body, n: "500" if is_for(body, small, "tennis") else None) as fake:
        run = replace(cfg, naming=replace(cfg.naming, llm=replace(cfg.naming.llm, base_url=fake.base_url)))
        sd, first = naming_stage.run_naming(run, log=log)
    assert first.n_failed == 1
    good = {nid: r.name for nid, r in first.names.items() if r.name}
    # the calls' cache is gone and the endpoint now answers everything differently
    for p in Path(cfg.cache_dir, "llm-calls").glob("*.json"):
        p.unlink()
    changed = {"content": json.dumps({"summary": "s", "label": "Something Else Entirely", "category": "c",
                                      "coherence": 3})}
    with FakeLLM(lambda body, n: changed) as fake:
        run = replace(cfg, naming=replace(cfg.naming, llm=replace(cfg.naming.llm, base_url=fake.base_url)))
        _, second = naming_stage.run_naming(run, log=log)
        assert len(fake.requests) == 1 and is_for(fake.requests[0], small, "tennis")
    assert second.n_failed == 0
    assert {nid: second.names[nid].name for nid in good} == good
    assert second.names[node_of(small, "tennis")].name == "Something Else Entirely"
