"""Rollouts: ask a model an eval's questions and grade its answers.

Every question of the configured eval (GSM8K) is sent to an OpenAI-compatible chat endpoint
(OpenAI, vLLM, llama.cpp server, Ollama) through the one chat caller
(:class:`corpus_proximity.llm.caller.ChatCaller`: ``rollout.llm.max_concurrency`` calls in flight,
each cached under ``<cache_dir>/llm-calls/`` keyed on the messages, the model and the request
parameters, seed included, so an interrupted run resumes where it stopped and a rerun costs
nothing). Each answer is graded and written as one :class:`Rollout` per line of a JSONL file,
validated by pydantic when read back. A call that still fails after its retries is written with
``error`` set and ``completion``/``correct`` empty: never a made-up answer.

The rollouts then go to ``annotate_with_clusters.py CONFIG --results <file> --text-field prompt
--correct-field correct``.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from corpus_proximity import cli
from corpus_proximity.cache import atomic_writer
from corpus_proximity.config import ExperimentConfig, LLMConfig, RolloutConfig
from corpus_proximity.errors import InputError
from corpus_proximity.evals.gsm8k import Sample
from corpus_proximity.llm.caller import ChatCaller
from corpus_proximity.text.corpus import read_jsonl


class Rollout(BaseModel):
    """One model answer to one eval sample, graded."""

    model_config = ConfigDict(extra="forbid")
    sample_id: str
    prompt: str
    """The user message (the question as asked)."""
    completion: str | None
    """The model's answer; None when the call failed (see ``error``)."""
    model: str
    correct: bool | None
    """Graded against the reference; None when there is no answer to grade."""
    predicted: str | None = None
    """The final answer read from the completion."""
    reference: str | None = None
    tokens: int | None = None
    """Completion tokens, as the endpoint reports them."""
    error: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    """question, sample_index, finish_reason, prompt_tokens, system prompt, temperature, cached."""


def write_rollouts(path: Path, rollouts: Sequence[Rollout]) -> None:
    text = "".join(r.model_dump_json() + "\n" for r in rollouts)
    atomic_writer(path, lambda p: p.write_text(text, encoding="utf-8"))


def read_rollouts(path: Path) -> list[Rollout]:
    out = []
    for i, row in enumerate(read_jsonl(path), 1):
        try:
            out.append(Rollout.model_validate(row, strict=True))
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(map(str, err["loc"])) or "record"
            raise InputError(f"{path}: record {i} is not a rollout ({where}: {err['msg']})") from None
    return out


# --- calls -------------------------------------------------------------------------------------

TAG = "rollout-v1"
"""Part of every rollout call's cache key, beside the messages and the request parameters."""


def messages_for(sample: Sample, cfg: RolloutConfig, system: str | None = None) -> list[dict]:
    system = cfg.system_prompt if system is None else system
    user = cfg.prompt_template.replace("{question}", sample.question)
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]


def endpoint(cfg: RolloutConfig, model: str | None = None, base_url: str | None = None) -> LLMConfig:
    """``cfg.llm`` with the model and endpoint actually used (e.g. the bundled local model)."""
    return replace(cfg.llm, model=model or cfg.llm.model, base_url=base_url or cfg.llm.base_url)


def generate(samples: Sequence[Sample], cfg: RolloutConfig, *, cache_dir: Path, model: str | None = None,
             base_url: str | None = None, local: bool = False, connect: Callable[[], str] | None = None,
             progress: Callable[[int, int], None] | None = None) -> tuple[list[Rollout], Counter]:
    """Ask every sample ``cfg.n_samples`` times, concurrently; graded rollouts in sample order.

    The model and endpoint are ``cfg.llm``'s unless ``model`` / ``base_url`` say otherwise;
    ``connect`` starts a local server on the first call the cache cannot answer (``local``: a
    server that needs no API key)."""
    llm = endpoint(cfg, model, base_url)
    if connect is None and local:
        url = llm.base_url
        connect = lambda: url  # noqa: E731 (a local server: no API key needed)
    return asyncio.run(_generate(samples, cfg, llm, Path(cache_dir), connect, progress))


async def _generate(samples, cfg: RolloutConfig, llm: LLMConfig, cache_dir: Path, connect, progress):
    caller = ChatCaller(llm, cache_dir, tag=TAG, section="rollout", connect=connect,
                        alternative="point rollout.llm.base_url at a local server, or use --local-llm")
    jobs = [(s, k) for s in samples for k in range(cfg.n_samples)]
    done = 0

    async def one(sample: Sample, k: int) -> Rollout:
        nonlocal done
        msgs = messages_for(sample, cfg)
        res = await caller.ask(msgs, {"seed": cfg.seed + k})
        done += 1
        if progress:
            progress(done, len(jobs))
        meta = {"question": sample.question, "sample_index": k, "system": cfg.system_prompt,
                "temperature": llm.temperature}
        if not res.ok:
            return Rollout(sample_id=sample.id, prompt=msgs[-1]["content"], completion=None, model=llm.model,
                           correct=None, reference=sample.reference, error=res.error, metadata=meta)
        correct, predicted = sample.grade(res.content)
        usage = res.usage or {}
        meta.update(finish_reason=res.finish_reason, prompt_tokens=usage.get("prompt_tokens"), cached=res.cached)
        return Rollout(sample_id=sample.id, prompt=msgs[-1]["content"], completion=res.content, model=llm.model,
                       correct=correct, predicted=predicted, reference=sample.reference,
                       tokens=usage.get("completion_tokens"), metadata=meta)

    try:
        rollouts = await asyncio.gather(*(one(s, k) for s, k in jobs))
    finally:
        await caller.close()
    return list(rollouts), caller.stats


def stream_one(prompt: str, system: str | None, cfg: RolloutConfig, *, model: str | None = None,
               base_url: str | None = None, local: bool, stream: bool, out=None) -> str:
    """Interactive: one prompt, the answer printed (token by token with ``stream``); not cached."""
    from openai import OpenAI

    out = out or sys.stdout
    llm = endpoint(cfg, model, base_url)
    key = cli.api_key(llm.api_key_env, llm.base_url, local, "rollout.llm",
                      "point rollout.llm.base_url at a local server, or use --local-llm")
    client = OpenAI(base_url=llm.base_url, api_key=key, timeout=llm.timeout_s, max_retries=llm.max_retries)
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    kw = dict(model=llm.model, messages=msgs, temperature=llm.temperature, max_tokens=llm.max_tokens)
    parts: list[str] = []
    if stream:
        for ev in client.chat.completions.create(stream=True, **kw):
            delta = ev.choices[0].delta.content if ev.choices and ev.choices[0].delta else None
            if delta:
                parts.append(delta)
                out.write(delta)
                out.flush()
        out.write("\n")
    else:
        resp = client.chat.completions.create(**kw)
        parts.append(resp.choices[0].message.content or "")
        out.write(parts[0] + "\n")
    return "".join(parts)


# --- outputs -----------------------------------------------------------------------------------

def output_path(cfg: ExperimentConfig, model: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model).strip("_") or "model"
    return cfg.outputs / "rollouts" / f"{cfg.rollout.dataset}-{cfg.rollout.split}-{slug}.jsonl"


def summarize(rollouts: Sequence[Rollout]) -> dict:
    graded = [r for r in rollouts if r.correct is not None]
    n_ok = sum(bool(r.correct) for r in graded)
    return {"n": len(rollouts), "graded": len(graded), "correct": n_ok, "failed_calls": len(rollouts) - len(graded),
            "accuracy": n_ok / len(graded) if graded else None,
            "no_answer": sum(r.correct is not None and r.predicted is None for r in rollouts)}
