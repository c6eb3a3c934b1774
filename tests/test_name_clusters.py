"""Naming without a network: representative sampling, the offline c-TF-IDF namer, the names
stage (cache keys, files) and the inspection CLI, on a topic tree of real sentences."""

from __future__ import annotations

import io
import json
import re
from dataclasses import replace

import numpy as np
import pytest
from rich.console import Console

import name_clusters
from corpus_proximity import cli
from corpus_proximity.config import ExperimentConfig, NamingConfig, apply_overrides
from corpus_proximity.errors import InputError
from corpus_proximity.naming import stage as naming_stage
from corpus_proximity.naming.base import representative_indices, sample_cluster_texts
from corpus_proximity.naming.offline import OfflineNamer, pick_terms
from corpus_proximity.tree.tree import ClusterTree

from naming_fixtures import experiment, naming_config, topic_tree, write_config_file, write_fake_cache


@pytest.fixture(scope="module")
def three():
    return topic_tree(["sport", "python", "cooking"], per_fine=14)


@pytest.fixture
def cached(three, tmp_path, monkeypatch):
    """A config whose chunks/embeddings/tree are in the cache, its config file, and the CLI's output."""
    tree, texts, X, truth = three
    cfg = experiment(tmp_path)
    write_fake_cache(cfg, tree, texts, X)
    buf = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=buf, width=1000))
    return cfg, write_config_file(tmp_path, cfg), buf


# --- sampling --------------------------------------------------------------------------------

def test_representative_samples_are_near_the_centroid_diverse_and_seeded():
    centroid = np.eye(8, dtype=np.float32)[0]
    # five copies of the point nearest the centroid, then points ever farther away
    near = np.array([0.99, 0.14, 0, 0, 0, 0, 0, 0], dtype=np.float32)
    others = [np.cos(a) * centroid + np.sin(a) * np.eye(8, dtype=np.float32)[1 + i % 7]
              for i, a in enumerate(np.linspace(0.3, 1.2, 20))]
    X = np.vstack([np.tile(near, (5, 1))] + others).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    members = np.arange(len(X))
    plain = representative_indices(X, members, centroid, 4, mmr_lambda=1.0, dup_threshold=1.01)
    assert plain == [0, 1, 2, 3]  # relevance only, duplicates allowed: the copies, nearest first
    no_dups = representative_indices(X, members, centroid, 4, mmr_lambda=1.0)
    assert no_dups[0] == 0 and not set(no_dups) & {1, 2, 3, 4}  # near-duplicates are never both shown
    mmr = representative_indices(X, members, centroid, 4, mmr_lambda=0.7)
    assert mmr[0] == 0 and len(set(mmr) & {0, 1, 2, 3, 4}) == 1  # one of the copies, then others
    assert len(set(mmr)) == 4
    with_random = representative_indices(X, members, centroid, 4, n_random=3, seed=1)
    assert with_random[:4] == mmr and len(set(with_random)) == 7
    assert with_random == representative_indices(X, members, centroid, 4, n_random=3, seed=1)
    assert any(representative_indices(X, members, centroid, 4, n_random=3, seed=s)[4:] != with_random[4:]
               for s in range(2, 6))
    sub = np.array([3, 7, 9, 11])
    assert set(representative_indices(X, sub, centroid, 3, n_random=5, seed=0)) <= set(sub.tolist())
    assert representative_indices(X, np.array([], dtype=np.int64), centroid, 3) == []


def test_sample_cluster_texts_come_from_the_node(three):
    tree, texts, X, truth = three
    node = tree.nodes["1.0"]
    got = sample_cluster_texts(node, texts, X, 4, n_random=2, seed=3, max_chars=40)
    members = {texts[i] for i in node.members}
    assert len(got) == 6 and all(len(t) <= 42 for t in got)
    assert all(any(m.startswith(t.rstrip(" …")) for m in members) for t in got)
    assert got == sample_cluster_texts(node, texts, X, 4, n_random=2, seed=3, max_chars=40)


# --- the offline namer -----------------------------------------------------------------------

def test_offline_names_say_what_each_node_is_about(three):
    tree, texts, X, truth = three
    res = OfflineNamer().name_tree(tree, texts)
    assert res.n_failed == 0 and set(res.names) == {n for n in tree.nodes if n != "root"}
    # each fine node is named by its own vocabulary, not its sibling's
    vocab = {"football": {"football", "league", "club", "goal", "striker", "chelsea", "arsenal", "penalty"},
             "tennis": {"tennis", "serve", "wimbledon", "slam", "seed", "set", "final"},
             "asyncio": {"asyncio", "coroutine", "coroutines", "loop", "event", "task", "tasks", "await"},
             "email": {"email", "mime", "header", "headers", "message", "rfc", "charset"},
             "baking": {"bake", "baking", "oven", "bread", "dough", "cake", "flour"},
             "grilling": {"grill", "grilling", "barbecue", "charcoal", "steak", "grilled"}}
    for nid, topic in truth.items():
        label = res.names[nid].name
        assert " · " in label and label == label.strip()
        words = {w.lower() for w in label.replace("·", " ").split()}
        if topic in vocab:
            assert words & vocab[topic], (topic, label)
            sibling = next(t for t in vocab if t != topic and truth[nid[:-1] + str(1 - int(nid[-1]))] == t)
            assert not words & (vocab[sibling] - vocab[topic]), (topic, label)
    # deterministic, and siblings never share a label
    again = OfflineNamer().name_tree(tree, texts)
    assert {k: v.name for k, v in again.names.items()} == {k: v.name for k, v in res.names.items()}
    for parent in (n for n in tree.nodes.values() if n.children):
        labels = [res.names[c].name for c in parent.children]
        assert len(set(labels)) == len(labels)


def test_pick_terms_merges_phrases_and_plurals():
    terms = np.array(["league", "premier league", "awards", "award", "chelsea", "data data"])
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.95])
    assert pick_terms(terms, scores, 3) == ["premier league", "awards", "chelsea"]


def test_offline_namer_without_words_marks_nodes_instead_of_inventing(three):
    tree = three[0]
    res = OfflineNamer().name_tree(tree, ["12 34 !!"] * tree.n_points)
    assert all(r.name is None and "no distinctive terms" in r.name_error for r in res.names.values())


# --- the names stage -------------------------------------------------------------------------

def test_names_key_ignores_endpoint_and_concurrency_but_not_what_names(tmp_path):
    cfg = experiment(tmp_path)
    key = naming_stage.stage_dir(cfg).key

    def k(*sets):
        return naming_stage.stage_dir(apply_overrides(cfg, list(sets))).key

    assert k("naming.llm.model=gpt-x") == key  # the offline namer does not read the model
    llm = k("naming.namer=llm", "naming.llm.model=m")
    assert llm != key
    assert k("naming.namer=llm", "naming.llm.model=m", "naming.llm.base_url=http://127.0.0.1:9/v1",
             "naming.llm.max_concurrency=9", "naming.llm.api_key_env=OTHER", "naming.llm.timeout_s=5") == llm
    assert k("naming.namer=llm", "naming.llm.model=m2") != llm
    assert k("naming.namer=llm", "naming.llm.model=m", "naming.llm.temperature=0.7") != llm
    assert k("naming.n_keywords=2") != key
    assert k("clustering.max_depth=3") != key  # another tree, other names


def test_missing_tree_names_the_command_that_builds_it(tmp_path, capsys):
    cfg = experiment(tmp_path)
    path = write_config_file(tmp_path, cfg)
    assert name_clusters.main([str(path), "--tree", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no tree for this config" in err
    assert f"python cluster_corpus.py {path}" in err
    with pytest.raises(InputError, match="cluster_corpus.py"):
        naming_stage.load_names(cfg)


def test_tree_names_offline_on_first_use_and_reads_the_cache_after(cached, three):
    cfg, path, buf = cached
    assert name_clusters.main([str(path), "--tree", "--quiet"]) == 0
    out = buf.getvalue()
    names = naming_stage.load_names(cfg)
    assert len(names) == 9 and "names: naming 9 nodes with the offline namer" in out
    for nid, label in names.items():
        assert label in out
    sd = naming_stage.stage_dir(cfg)
    data = json.loads(sd.file("names.json").read_text())
    assert data["tree"] == naming_stage.tree_stage(cfg).key and data["n_failed"] == 0
    rec = data["nodes"][0]
    assert set(rec) >= {"id", "name", "source", "name_error", "summary", "category", "coherence", "keywords"}
    assert sd.complete and json.loads(sd.file("config.json").read_text())["upstream"]["tree"] == data["tree"]
    buf.truncate(0)
    assert name_clusters.main([str(path), "--name", "--quiet"]) == 0
    assert "names: cache hit" in buf.getvalue()


def test_list_inspect_and_noise(cached, three):
    cfg, path, buf = cached
    tree, texts = three[0], three[1]
    assert name_clusters.main([str(path), "--list", "--quiet"]) == 0
    listing = buf.getvalue()
    assert all(nid in listing for nid in tree.nodes if nid != "root")
    names = naming_stage.load_names(cfg)
    buf.truncate(0)
    buf.seek(0)
    assert name_clusters.main([str(path), "--inspect", "0.1", "--samples", "3", "--quiet"]) == 0
    first = buf.getvalue()
    assert names["0.1"] in first and names["0"] in first and "3 random member(s)" in first
    shown = [re.match(r"\s*chunk (\S+) · doc (\S+) (.*)", ln).groups() for ln in first.splitlines()
             if ln.strip().startswith("chunk ")]
    member_texts = {texts[i] for i in tree.nodes["0.1"].members}
    assert len(shown) == 3 and all(s[2] in member_texts for s in shown)
    ids = naming_stage.chunk_ids(cfg, naming_stage.tree_stage(cfg))
    by_text = {texts[i]: ids[i] for i in tree.nodes["0.1"].members}
    assert all(by_text[t] == (c, d) for c, d, t in shown)  # the printed ids are the member's own
    buf.truncate(0)
    buf.seek(0)
    name_clusters.main([str(path), "--inspect", "0.1", "--samples", "3", "--quiet"])
    assert buf.getvalue() == first  # seeded
    buf.truncate(0)
    buf.seek(0)
    assert name_clusters.main([str(path), "--show-noise", "--samples", "2", "--quiet"]) == 0
    noise = buf.getvalue()
    for nid in ("0", "1", "2"):
        assert f"{nid} {names[nid]}: 2 noise point(s) of {tree.nodes[nid].size}" in noise
    assert "corpus (root)" not in noise


def test_unknown_inspect_id_lists_nearby_ids(cached, capsys):
    cfg, path, buf = cached
    assert name_clusters.main([str(path), "--inspect", "0.7", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "unknown node id '0.7'" in err and "nearby ids: 0.0, 0.1" in err
    assert name_clusters.main([str(path), "--inspect", "9", "--quiet"]) == 2
    assert "nearby ids: 0, 1, 2" in capsys.readouterr().err


def test_llm_names_not_made_yet_are_announced_not_invented(cached, capsys):
    cfg, path, buf = cached
    assert name_clusters.main([str(path), "--tree", "--quiet", "--set", "naming.namer=llm",
                               "--set", "naming.llm.model=m"]) == 0
    assert "no LLM names for this config yet" in buf.getvalue()
    with pytest.raises(InputError, match="no llm names"):
        naming_stage.load_names(apply_overrides(cfg, ["naming.namer=llm", "naming.llm.model=m"]))


def test_namer_none_names_nodes_by_id(cached):
    cfg, path, buf = cached
    names = naming_stage.load_names(replace(cfg, naming=NamingConfig(namer="none")))
    assert names == {nid: nid for nid in ClusterTree.load(naming_stage.tree_stage(cfg).path).nodes if nid != "root"}


def test_naming_config_validation():
    for kw, field in [({"namer": "gpt"}, "naming.namer"), ({"max_concurrency": 0}, "naming.llm.max_concurrency"),
                      ({"temperature": 3.0}, "naming.llm.temperature"),
                      ({"base_url": "localhost:8080"}, "naming.llm.base_url"),
                      ({"n_samples": 10, "sample_pool": 5}, "naming.sample_pool"),
                      ({"api_key_env": "MY KEY=abc"}, "naming.llm.api_key_env")]:
        with pytest.raises(InputError, match=field):
            naming_config(**kw)
    assert ExperimentConfig().naming.namer == "offline"
