"""The one chat caller (corpus_proximity.llm.caller) against a scripted OpenAI-compatible server on
127.0.0.1: the per-call cache and its key, transport retries by the openai client, semantic
re-asks, the deadline on a whole exchange, and the API key kept out of stored errors."""

from __future__ import annotations

import asyncio
import json
import time

from corpus_proximity.config import LLMConfig
from corpus_proximity.llm.caller import AnswerError, ChatCaller

from naming_fixtures import FakeLLM

MESSAGES = [{"role": "user", "content": "What is 2 + 2?"}]


def ask(llm: LLMConfig, cache_dir, messages=MESSAGES, params=None, validate=None, connect=None):
    async def run():
        caller = ChatCaller(llm, cache_dir, tag="test-v1", section="test", connect=connect)
        try:
            return await caller.ask(messages, params, validate=validate), caller.stats
        finally:
            await caller.close()
    return asyncio.run(run())


def local(url: str, **kw) -> LLMConfig:
    return LLMConfig(base_url=url, **{"model": "fake-model", "timeout_s": 5.0, "max_retries": 2, **kw})


def test_answers_are_cached_under_everything_that_shapes_them(tmp_path):
    with FakeLLM(lambda body, n: {"content": "4"}) as fake:
        first, _ = ask(local(fake.base_url), tmp_path)
        again, stats = ask(local(fake.base_url), tmp_path)
        assert first.ok and first.content == "4" and not first.cached
        assert again.cached and again.content == "4" and stats["cache_hits"] == 1 and not stats["requests"]
        assert len(fake.requests) == 1
        # another seed, temperature, model or caller tag is another call
        ask(local(fake.base_url), tmp_path, params={"seed": 1})
        ask(local(fake.base_url, temperature=0.5), tmp_path)
        ask(local(fake.base_url, model="other"), tmp_path)
        assert len(fake.requests) == 4
        assert fake.requests[1]["seed"] == 1 and fake.requests[2]["temperature"] == 0.5
    rec = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert rec["messages"] == MESSAGES and rec["response"]["content"] == "4" and rec["tag"] == "test-v1"


def test_transport_faults_are_the_clients_retries_and_counted(tmp_path):
    script = {0: "429", 1: "500"}
    with FakeLLM(lambda body, n: script.get(n) or {"content": "4"}) as fake:
        ans, stats = ask(local(fake.base_url, max_retries=3), tmp_path)
    assert ans.ok and len(fake.requests) == 3
    assert stats["requests"] == 3 and stats["retries"] == 2 and not stats.get("reasks")


def test_an_unusable_answer_is_asked_again_and_only_a_valid_one_is_cached(tmp_path):
    def numeric(content, finish):
        if not (content or "").strip().isdigit():
            raise AnswerError(f"not a number: {content!r}")
        return int(content)

    answers = iter([{"content": "four"}, "empty", {"content": "4"}])
    with FakeLLM(lambda body, n: next(answers)) as fake:
        ans, stats = ask(local(fake.base_url), tmp_path, validate=numeric)
    assert ans.value == 4 and stats["reasks"] == 2 and len(fake.requests) == 3
    assert len(list(tmp_path.glob("*.json"))) == 1
    with FakeLLM(lambda body, n: {"content": "four"}) as fake:
        bad, _ = ask(local(fake.base_url, max_retries=1), tmp_path / "other", validate=numeric)
    assert bad.value is None and "not a number" in bad.error and "after 2 attempts" in bad.error
    assert bad.kind == "failed" and not list((tmp_path / "other").glob("*.json"))


def test_a_trickling_server_cannot_outlast_the_deadline(tmp_path):
    # a valid ~300-byte answer at one byte per 0.2 s would take a minute; each read is quick, so
    # only a deadline on the whole exchange stops it
    with FakeLLM(lambda body, n: "trickle", delay=0.2) as fake:
        t0 = time.perf_counter()
        ans, _ = ask(local(fake.base_url, timeout_s=1.0, max_retries=1), tmp_path)
        took = time.perf_counter() - t0
    assert not ans.ok and ans.kind == "failed" and "timed out after 1s" in ans.error
    assert "after 2 attempts" in ans.error and len(fake.requests) == 2
    assert took < 6.0, took
    assert not list(tmp_path.glob("*.json"))


def test_the_api_key_never_reaches_a_stored_error(tmp_path, monkeypatch):
    secret = "sk-test-echoed-by-the-server-42"
    monkeypatch.setenv("CP_ECHO_KEY", secret)
    with FakeLLM(lambda body, n: "echo-auth") as fake:
        ans, _ = ask(LLMConfig(base_url=fake.base_url, model="m", api_key_env="CP_ECHO_KEY"), tmp_path)
    assert fake.auth == [f"Bearer {secret}"]  # 400: not retried
    assert ans.kind == "fatal" and "HTTP 400" in ans.error and "Bearer ***" in ans.error
    assert secret not in ans.error


def test_an_unreachable_endpoint_is_one_clear_outcome(tmp_path):
    from corpus_proximity.llm.local import free_port

    ans, stats = ask(local(f"http://127.0.0.1:{free_port()}/v1", max_retries=1), tmp_path)
    assert ans.kind == "unreachable" and "cannot connect" in ans.error and stats["requests"] == 2


def test_connect_is_called_only_when_the_cache_cannot_answer(tmp_path):
    calls = []
    with FakeLLM(lambda body, n: {"content": "4"}) as fake:
        def connect():
            calls.append(1)
            return fake.base_url
        ask(LLMConfig(model="m"), tmp_path, connect=connect)
        ask(LLMConfig(model="m"), tmp_path, connect=connect)
    assert calls == [1]  # the second run was served from the cache and started nothing
