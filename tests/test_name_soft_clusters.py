"""Naming soft clusters from their exemplar contexts: offline (distinctive tokens), through an
OpenAI-compatible endpoint (a scripted server on 127.0.0.1: prompts, call cache, failures marked
and retried, never invented), and with the real local llama.cpp server (marker llm)."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re

import pytest
from rich.console import Console

import name_soft_clusters
from corpus_proximity import cli
from corpus_proximity.config import ActivationsConfig, NamingConfig, SoftClusterConfig
from corpus_proximity.errors import InputError
from corpus_proximity.naming import soft as nsc
from corpus_proximity.naming.stage import apply_local_llm
from corpus_proximity.soft import stage as soft_cluster
from corpus_proximity.soft.analyzer import ClusterAnalyzer
from corpus_proximity.soft.stream import GB, rss_bytes

from naming_fixtures import FakeLLM, local_llm_assets, naming_config, prompt_of


@pytest.fixture(scope="module")
def soft_cfg(tmp_path_factory):
    """A small soft clustering of real MiniLM activations of the default corpus (k = 4), done once."""
    from conftest import small_default_cfg

    cfg = dataclasses.replace(
        small_default_cfg.__wrapped__(tmp_path_factory.mktemp("softnames")),
        activations=ActivationsConfig(max_chunks=8, max_seq_length=32, sequences_per_file=4),
        soft_cluster=SoftClusterConfig(n_clusters=4, init_sample=100, max_points=100, n_epochs=2, lda_sample=200,
                                       n_exemplars=4, n_random_exemplars=2, context_window=4,
                                       memory_budget_gb=round(rss_bytes() / GB + 1.0, 2)))
    soft_cluster.run_soft_clustering(cfg, log=Console(file=io.StringIO()))
    return cfg


def with_naming(cfg, **kw):
    return dataclasses.replace(cfg, naming=naming_config(**kw))


def llm(base_url: str, **kw) -> dict:
    return dict(namer="llm", model="fake-model", base_url=base_url, max_retries=1,
                timeout_s=5.0, max_concurrency=2, n_samples=3, n_random=1, **kw)


def share_stages(cfg, cache_dir: str) -> None:
    """A cache dir with ``cfg``'s stages up to the soft clustering, but no names nor LLM calls."""
    os.makedirs(cache_dir)
    for sub in os.listdir(cfg.cache_dir):
        if not sub.startswith(("llm-calls", "softnames")):
            os.symlink(os.path.join(cfg.cache_dir, sub), os.path.join(cache_dir, sub))


def numbered(body: dict, n: int) -> dict:
    """A valid answer whose label is the request's number."""
    return {"content": json.dumps({"summary": "Tokens in one kind of context.", "label": f"marked token pattern {n}",
                                   "category": "test", "coherence": 6})}


def config_file(tmp_path, cfg) -> str:
    p = tmp_path / "soft_cfg.py"
    p.write_text(f"from corpus_proximity.config import *\nconfig = {cfg!r}\n")
    return str(p)


def test_samples_mark_the_token_and_offline_names_are_its_distinctive_tokens(soft_cfg):
    an = ClusterAnalyzer(soft_cluster.stage_dir(soft_cfg).path)
    c = an.clusters[an.ranked()[0]]
    ex = c["exemplars"]["top"][0]
    s = nsc.samples(c, NamingConfig(n_samples=3, n_random=1))
    assert 1 <= len(s) <= 3 and len(set(s)) == len(s)
    focus = ex["token"][2:] if ex["token"].startswith("##") else ex["token"]
    assert f"[[{focus}]]" in s[0] and s[0].count("[[") == 1
    cfg = with_naming(soft_cfg, namer="offline", n_keywords=3)
    sd, names = nsc.run_naming(cfg, Console(file=io.StringIO()))
    assert set(names) == set(range(4))
    for cl in an.clusters:
        want = [t["token"] for t in cl["distinctive_tokens"]][:3] or [t["token"] for t in cl["top_tokens"]][:3]
        assert names[cl["id"]].name == " · ".join(want) and names[cl["id"]].source == "offline"
    buf = io.StringIO()
    assert nsc.run_naming(cfg, Console(file=buf))[0].path == sd.path
    assert "cache hit" in buf.getvalue()


def test_llm_names_every_cluster_from_its_contexts_and_a_rerun_calls_nothing(soft_cfg, tmp_path):
    with FakeLLM(numbered) as fake:
        cfg = with_naming(soft_cfg, **llm(fake.base_url))
        sd, names = nsc.run_naming(cfg, Console(file=io.StringIO()))
        assert len(fake.requests) == 4
        for body in fake.requests:
            p = prompt_of(body)
            assert "a word in [[double brackets]]" in p and re.search(r"\] [^\n]*\[\[[^\]]+\]\]", p)
            assert 'Words most typical of the group: "' in p  # distinctive tokens, quoted, beside the contexts
        labels = [n.name for n in names.values()]
        assert sorted(labels) == [f"marked token pattern {i}" for i in range(4)]
        assert all(n.source == "llm" and n.coherence == 6 and n.summary for n in names.values())
        data = json.loads(sd.file("names.json").read_text())
        assert data["n_failed"] == 0 and data["model"] == "fake-model" and data["softclust"]
        # names dropped: naming again is served from the per-call cache
        import shutil

        shutil.rmtree(sd.path)
        _, again = nsc.run_naming(cfg, Console(file=io.StringIO()))
        assert len(fake.requests) == 4 and [n.name for n in again.values()] == labels


def test_generic_and_duplicate_labels_are_asked_again_once_then_flagged(soft_cfg, tmp_path):
    with FakeLLM(lambda body, n: {"content": json.dumps({"summary": "s", "label": "music player words",
                                                         "category": "topic", "coherence": 5})}) as fake:
        cfg = with_naming(dataclasses.replace(soft_cfg, cache_dir=str(tmp_path / "c")), **llm(fake.base_url))
        share_stages(soft_cfg, cfg.cache_dir)
        _, names = nsc.run_naming(cfg, Console(file=io.StringIO()))
        reasks = [p for p in fake.prompts() if "A first answer labelled" in p]
        assert len(fake.requests) == 7 and len(reasks) == 3  # the most used cluster keeps its label
        assert all('"music player words"' in p and "Labels already taken" in p for p in reasks)
        flagged = [n for n in names.values() if n.warnings]
        assert len(flagged) == 3 and all("same label as cluster" in n.warnings[0] for n in flagged)
        assert all(n.name == "music player words" for n in names.values())  # kept: nothing invented


def test_a_failing_cluster_is_marked_not_invented_and_a_rerun_asks_only_for_it(soft_cfg, tmp_path, monkeypatch):
    an = ClusterAnalyzer(soft_cluster.stage_dir(soft_cfg).path)
    victim = an.clusters[an.ranked()[-1]]
    needle = nsc.samples(victim, naming_config(**llm("http://x")))[0]
    cache = str(tmp_path / "cache2")
    share_stages(soft_cfg, cache)
    buf = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=buf, width=1000))
    with FakeLLM(lambda body, n: "500" if needle in prompt_of(body) else numbered(body, n)) as fake:
        cfg = with_naming(dataclasses.replace(soft_cfg, cache_dir=cache), **llm(fake.base_url))
        path = config_file(tmp_path, cfg)
        assert name_soft_clusters.main([path, "--quiet"]) == 1  # some clusters unnamed
        names = nsc.read_names(nsc.stage_dir(cfg))
        assert names[victim["id"]].name is None and "500" in names[victim["id"]].name_error
        assert sum(n.name is not None for n in names.values()) == 3
        assert "unnamed" in buf.getvalue() and "3/4 named" in buf.getvalue()
        n_before = len(fake.requests)
        fake.behave = numbered  # the endpoint recovers
        assert name_soft_clusters.main([path, "--quiet", "--cluster", str(victim["id"])]) == 0
        assert len(fake.requests) == n_before + 1  # only the failed cluster was asked again
        assert nsc.read_names(nsc.stage_dir(cfg))[victim["id"]].name


def test_unreachable_endpoint_and_missing_clustering_are_clear_errors(soft_cfg, tmp_path):
    from corpus_proximity.llm.local import free_port

    cfg = with_naming(dataclasses.replace(soft_cfg, cache_dir=str(tmp_path / "c3")), **llm(f"http://127.0.0.1:{free_port()}/v1"))
    with pytest.raises(InputError, match="no soft clustering for this config yet"):
        nsc.run_naming(cfg, Console(file=io.StringIO()))
    share_stages(soft_cfg, cfg.cache_dir)
    with pytest.raises(InputError, match="unreachable.*0 name\\(s\\) obtained are kept"):
        nsc.run_naming(cfg, Console(file=io.StringIO()))
    assert json.loads(nsc.stage_dir(cfg).file("names.json").read_text())["n_failed"] == 4


@pytest.mark.slow  # ~2-4 min; the local LLM stays in the default suite through test_naming_local_llm
@pytest.mark.llm
def test_local_llm_names_the_soft_clusters(soft_cfg, tmp_path, monkeypatch):
    local_llm_assets()
    buf = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=buf, width=1000))
    cfg = dataclasses.replace(soft_cfg, naming=naming_config(timeout_s=120.0))
    assert name_soft_clusters.main([config_file(tmp_path, cfg), "--local-llm", "--quiet"]) == 0, buf.getvalue()
    out = buf.getvalue()
    assert "local LLM at http://127.0.0.1:" in out and "4/4 named" in out
    names = nsc.read_names(nsc.stage_dir(apply_local_llm(cfg)))
    assert all(n.name and n.source == "llm" and 1 <= n.coherence <= 10 for n in names.values())
    assert all(n.name in out for n in names.values())
