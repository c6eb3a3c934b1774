"""Rollouts against a real OpenAI-compatible HTTP server on 127.0.0.1: a scripted stdlib server
for grading, faults, caching and streaming; the local llama.cpp server (marker llm) end to end,
its rollouts then annotated against a small default-corpus tree."""

import contextlib
import io
import json
import os
import re
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

import rollout as rollout_cli
from corpus_proximity import cli
from corpus_proximity.config import ExperimentConfig, RolloutConfig
from corpus_proximity.evals import rollout
from corpus_proximity.evals.gsm8k import GSM8KSample

from naming_fixtures import FakeLLM, rollout_config

SAMPLES = [GSM8KSample(f"gsm8k-test-{i}", f"What is {i} + {i}?", f"{i}+{i}=<<{i}+{i}={2 * i}>>{2 * i}\n#### {2 * i}")
           for i in range(6)]


def answer_by_question(wrong: set[int] = frozenset()):
    def behave(body, n):
        i = int(re.search(r"What is (\d+)", body["messages"][-1]["content"]).group(1))
        return {"content": f"{i} plus {i} makes {2 * i + (1 if i in wrong else 0)}.\n#### {2 * i + (i in wrong)}"}
    return behave


def cfg_for(server: FakeLLM, **kw) -> RolloutConfig:
    return rollout_config(base_url=server.base_url, model="fake-model", timeout_s=5, **kw)


def test_rollouts_are_graded_and_round_trip_through_jsonl(tmp_path):
    with FakeLLM(answer_by_question(wrong={2, 5})) as llm:
        rollouts, stats = rollout.generate(SAMPLES, cfg_for(llm), model="fake-model", base_url=llm.base_url,
                                           cache_dir=tmp_path / "calls")
    assert [r.sample_id for r in rollouts] == [s.id for s in SAMPLES]
    assert [r.correct for r in rollouts] == [True, True, False, True, True, False]
    assert rollouts[2].predicted == "5" and rollouts[2].reference == "4"
    assert rollouts[0].tokens == 1 and rollouts[0].metadata["finish_reason"] == "stop"
    assert llm.requests[0]["messages"][0]["role"] == "system" and "####" in llm.requests[0]["messages"][0]["content"]
    rollout.write_rollouts(tmp_path / "r.jsonl", rollouts)
    assert rollout.read_rollouts(tmp_path / "r.jsonl") == rollouts


def test_rerun_is_served_from_the_call_cache(tmp_path):
    cfg = None
    with FakeLLM(answer_by_question()) as llm:
        cfg = cfg_for(llm)
        first, _ = rollout.generate(SAMPLES, cfg, model="fake-model", base_url=llm.base_url, cache_dir=tmp_path)
        again, stats = rollout.generate(SAMPLES, cfg, model="fake-model", base_url=llm.base_url, cache_dir=tmp_path)
        assert len(llm.requests) == len(SAMPLES) and stats["cache_hits"] == len(SAMPLES)
        # another temperature or sample count is another call
        more, _ = rollout.generate(SAMPLES[:2], replace(cfg, n_samples=2), model="fake-model", base_url=llm.base_url,
                                   cache_dir=tmp_path)
        assert len(llm.requests) == len(SAMPLES) + 2 and [r.metadata["sample_index"] for r in more] == [0, 1, 0, 1]
    assert [r.completion for r in again] == [r.completion for r in first]


def test_faults_are_retried_and_a_failed_call_is_marked_never_invented(tmp_path):
    seen: dict[str, int] = {}

    def behave(body, n):
        q = body["messages"][-1]["content"]
        seen[q] = seen.get(q, 0) + 1
        if "What is 1 " in q:
            return "500"  # always failing
        if "What is 2 " in q and seen[q] == 1:
            return "429"  # fails once, then answers
        if "What is 3 " in q and seen[q] <= 2:
            return "empty"  # twice an empty answer, then a real one
        return answer_by_question()(body, n)

    with FakeLLM(behave) as llm:
        rollouts, stats = rollout.generate(SAMPLES[:4], cfg_for(llm, max_retries=2, max_concurrency=1),
                                           model="fake-model", base_url=llm.base_url, cache_dir=tmp_path)
    failed = rollouts[1]
    assert failed.completion is None and failed.correct is None and failed.predicted is None
    assert "HTTP 500" in failed.error and "after 3 attempts" in failed.error
    assert rollouts[2].correct is True and stats["retries"] >= 3
    assert not list(tmp_path.rglob("*.json")) or all("What is 1 " not in p.read_text() for p in tmp_path.rglob("*.json"))
    s = rollout.summarize(rollouts)
    assert s["failed_calls"] == 1 and s["graded"] == 3


def test_401_is_not_retried(tmp_path):
    with FakeLLM(lambda body, n: "401") as llm:
        rollouts, stats = rollout.generate(SAMPLES[:1], cfg_for(llm, max_retries=3), model="fake-model",
                                           base_url=llm.base_url, cache_dir=tmp_path)
    assert len(llm.requests) == 1 and "HTTP 401" in rollouts[0].error


def _write_cfg(tmp_path: Path, rc: RolloutConfig, gsm8k: Path) -> Path:
    cfg = ExperimentConfig(name="r", cache_dir=str(tmp_path / "cache"), output_dir=str(tmp_path / "out"),
                           rollout=replace(rc, data_path=str(gsm8k)))
    p = tmp_path / "cfg.py"
    p.write_text(f"from corpus_proximity.config import *\nconfig = {cfg!r}\n")
    return p


def _gsm8k_file(tmp_path: Path) -> Path:
    p = tmp_path / "test.jsonl"
    p.write_text("".join(json.dumps({"question": s.question, "answer": s.answer}) + "\n" for s in SAMPLES))
    return p


def run_main(args) -> tuple[int, str, str]:
    buf, out, err = io.StringIO(), io.StringIO(), io.StringIO()
    old = cli.console
    cli.console = Console(file=buf, width=300)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = rollout_cli.main([str(a) for a in args])
    finally:
        cli.console = old
    return rc, out.getvalue(), buf.getvalue() + err.getvalue()


def test_cli_writes_graded_rollouts_and_says_what_next(tmp_path):
    with FakeLLM(answer_by_question(wrong={0})) as llm:
        cfg_file = _write_cfg(tmp_path, cfg_for(llm), _gsm8k_file(tmp_path))
        rc, _, log = run_main([cfg_file, "--quiet"])
    assert rc == 0, log
    out = tmp_path / "out" / "r" / "rollouts" / "gsm8k-test-fake-model.jsonl"
    got = rollout.read_rollouts(out)
    assert len(got) == 6 and sum(r.correct for r in got) == 5
    assert "5/6 correct" in log and "annotate_with_clusters.py" in log


def test_cli_prompt_streams_tokens(tmp_path):
    with FakeLLM(lambda body, n: {"content": "Seventeen times twenty-three is 391."}) as llm:
        cfg_file = _write_cfg(tmp_path, cfg_for(llm), _gsm8k_file(tmp_path))
        rc, out, log = run_main([cfg_file, "--quiet", "--prompt", "What is 17 * 23?", "--stream",
                                 "--system", "Be brief."])
    assert rc == 0, log
    assert out.strip() == "Seventeen times twenty-three is 391."
    body = llm.requests[0]
    assert body["stream"] is True and body["messages"][0] == {"role": "system", "content": "Be brief."}


@pytest.mark.parametrize("overrides, needle", [
    (["--set", "rollout.llm.model=none"], "rollout.llm.model is not set"),
    (["--set", "rollout.data_path=/no/such/gsm8k.jsonl"], "/no/such/gsm8k.jsonl does not exist"),
    (["--set", "rollout.prompt_template=Solve it"], "rollout.prompt_template: must contain {question}"),
])
def test_cli_bad_input_is_one_line(tmp_path, overrides, needle):
    cfg_file = _write_cfg(tmp_path, rollout_config(model="m", base_url="http://127.0.0.1:9/v1"), _gsm8k_file(tmp_path))
    rc, _, log = run_main([cfg_file, "--quiet", *overrides])
    assert rc == 2 and needle in log


# --- the real thing: a local llama.cpp server, then annotation of its rollouts -----------------

@pytest.mark.slow  # ~2-4 min; the local LLM stays in the default suite through test_naming_local_llm
@pytest.mark.llm
def test_local_llm_rollouts_are_graded_then_annotated(built_default, tmp_path):
    if os.environ.get("CP_SKIP_LLM") == "1":
        pytest.skip("CP_SKIP_LLM=1")
    from corpus_proximity.llm.local import LocalLLMUnavailable, ensure_model

    try:
        ensure_model()
    except LocalLLMUnavailable as e:
        pytest.skip(f"local LLM assets cannot be installed here: {e}")
    import annotate_with_clusters
    real = [{"question": "A robe takes 2 bolts of blue fiber and half that much white fiber. How many bolts in "
                         "total does it take?", "answer": "2/2=<<2/2=1>>1\n2+1=<<2+1=3>>3\n#### 3"},
            {"question": "Tom has 3 boxes with 4 apples in each box. How many apples does he have?",
             "answer": "3*4=<<3*4=12>>12\n#### 12"},
            {"question": "A shirt costs $20 and is on sale for 25% off. What is the sale price in dollars?",
             "answer": "20*0.25=<<20*0.25=5>>5\n20-5=<<20-5=15>>15\n#### 15"},
]
    gsm8k = tmp_path / "test.jsonl"
    gsm8k.write_text("".join(json.dumps(r) + "\n" for r in real))
    base = built_default
    cfg = replace(base, output_dir=str(tmp_path / "outputs"),
                  rollout=replace(base.rollout, data_path=str(gsm8k),
                                  llm=replace(base.rollout.llm, max_tokens=256, max_concurrency=2)))
    cfg_file = tmp_path / "cfg.py"
    cfg_file.write_text(f"from corpus_proximity.config import *\nconfig = {cfg!r}\n")
    rc, _, log = run_main([cfg_file, "--quiet", "--local-llm"])
    assert rc == 0, log
    (out,) = (tmp_path / "outputs" / "test" / "rollouts").glob("*.jsonl")
    got = rollout.read_rollouts(out)
    assert len(got) == 3 and all(r.error is None and r.completion for r in got)
    assert all(r.correct == (r.predicted == r.reference) for r in got)
    assert sum(r.correct for r in got) >= 1  # a 0.5B coder model still gets 3 * 4 right
    rc = annotate_with_clusters.main([str(cfg_file), "--quiet", "--results", str(out), "--text-field", "prompt",
                                      "--correct-field", "correct", "--out", str(tmp_path / "ann")])
    assert rc == 0
    a = json.loads((tmp_path / "ann" / "analysis.json").read_text())
    assert a["analyses"][0]["n_graded"] == 3 and a["analyses"][0]["correct_field"] == "correct"
