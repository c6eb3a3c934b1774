"""Rollouts: ask a model an eval's questions and grade its answers.

Every question of the configured eval (GSM8K) is sent to an OpenAI-compatible chat endpoint
(OpenAI, vLLM, llama.cpp server, Ollama) with ``max_concurrency`` calls in flight; each answer is
graded and written as one :class:`Rollout` per line of a JSONL file (dacite reads it back).
Calls are cached one file per call under ``<cache_dir>/rollout-calls/`` (keyed on the messages,
model, temperature, max_tokens, seed and sample index), so an interrupted run resumes where it
stopped and a rerun costs nothing. A call that still fails after its retries is written with
``error`` set and ``completion``/``correct`` empty: never a made-up answer.

    python rollout.py configs/clustering_01_tiny.py --local-llm --set rollout.data_path=PATH/test.jsonl
    python rollout.py CONFIG --set rollout.model=gpt-4o-mini --set rollout.limit=200
    python rollout.py CONFIG --local-llm --prompt "What is 17 * 23?" --stream --system "Be brief."

The rollouts then go to ``annotate_with_clusters.py CONFIG --results <file> --text-field prompt
--correct-field correct``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import dacite

from corpus_proximity import cli
from corpus_proximity.cache import atomic_write_json, atomic_writer, canonical_json
from corpus_proximity.config import ExperimentConfig, RolloutConfig
from corpus_proximity.errors import InputError
from corpus_proximity.evals.gsm8k import Sample
from corpus_proximity.text.corpus import read_jsonl

CALL_VERSION = 1


@dataclass
class Rollout:
    """One model answer to one eval sample, graded."""

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
    metadata: dict[str, Any] = field(default_factory=dict)
    """question, sample_index, finish_reason, prompt_tokens, system prompt, temperature, cached."""


def write_rollouts(path: Path, rollouts: Sequence[Rollout]) -> None:
    text = "".join(json.dumps(dataclasses.asdict(r), ensure_ascii=False) + "\n" for r in rollouts)
    atomic_writer(path, lambda p: p.write_text(text, encoding="utf-8"))


def read_rollouts(path: Path) -> list[Rollout]:
    out = []
    for i, row in enumerate(read_jsonl(path), 1):
        try:
            out.append(dacite.from_dict(Rollout, row, config=dacite.Config(strict=True)))
        except dacite.DaciteError as e:
            raise InputError(f"{path}: record {i} is not a rollout ({e})") from None
    return out


# --- calls -------------------------------------------------------------------------------------

def messages_for(sample: Sample, cfg: RolloutConfig, system: str | None = None) -> list[dict]:
    system = cfg.system_prompt if system is None else system
    user = cfg.prompt_template.replace("{question}", sample.question)
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]


def call_key(messages: list[dict], cfg: RolloutConfig, model: str, sample_index: int) -> str:
    payload = {"v": CALL_VERSION, "messages": messages, "model": model, "temperature": float(cfg.temperature),
               "max_tokens": cfg.max_tokens, "seed": cfg.seed, "sample_index": sample_index}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def resolve_api_key(cfg: RolloutConfig, local: bool) -> str:
    return cli.api_key(cfg.api_key_env, cfg.base_url, local, "rollout.model",
                       "point rollout.base_url at a local server, or use --local-llm")


class _Caller:
    def __init__(self, cfg: RolloutConfig, model: str, base_url: str | None, cache_dir: Path, local: bool):
        from openai import AsyncOpenAI

        self.cfg, self.model, self.cache_dir = cfg, model, cache_dir
        self.client = AsyncOpenAI(base_url=base_url, api_key=resolve_api_key(cfg, local), timeout=cfg.timeout_s,
                                  max_retries=0)
        self.sem = asyncio.Semaphore(cfg.max_concurrency)
        self.stats: Counter[str] = Counter()

    async def ask(self, messages: list[dict], sample_index: int) -> dict:
        """{"content", "finish_reason", "usage", "cached"} or {"error"}; only answers are cached."""
        import openai

        key = call_key(messages, self.cfg, self.model, sample_index)
        path = self.cache_dir / key[:2] / f"{key}.json"
        if path.is_file():
            try:
                rec = json.loads(path.read_text())
                self.stats["cache_hits"] += 1
                return {**rec["response"], "cached": True}
            except (OSError, ValueError, KeyError):
                pass  # unreadable: ask again and overwrite
        async with self.sem:
            error, delay = "no attempt", self.cfg.retry_backoff_s
            for attempt in range(self.cfg.max_retries + 1):
                if attempt:
                    self.stats["retries"] += 1
                    await asyncio.sleep(delay)
                    delay *= 2
                self.stats["requests"] += 1
                kw: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": self.cfg.temperature,
                                      "max_tokens": self.cfg.max_tokens, "seed": self.cfg.seed + sample_index}
                try:
                    resp = await self.client.chat.completions.create(**kw)
                except openai.APITimeoutError:
                    error = f"timed out after {self.cfg.timeout_s:g}s"
                    continue
                except openai.APIConnectionError as e:
                    error = f"cannot connect to {self.client.base_url} ({e.__cause__ or e})"
                    continue
                except openai.APIStatusError as e:
                    error = f"HTTP {e.status_code}: {str(e.message)[:160]}"
                    if e.status_code in (408, 409, 429) or e.status_code >= 500:
                        continue
                    break  # 400/401/403/404: asking again will not help
                except Exception as e:  # a body that is not a chat completion
                    error = f"bad response ({type(e).__name__}: {str(e)[:160]})"
                    continue
                choice = resp.choices[0] if resp.choices else None
                content = choice.message.content if choice and choice.message else None
                if not content or not content.strip():
                    error = "empty answer"
                    continue
                usage = resp.usage.model_dump() if resp.usage else {}
                out = {"content": content, "finish_reason": choice.finish_reason, "usage": usage}
                atomic_write_json(path, {"key": key, "model": self.model, "messages": messages,
                                         "sample_index": sample_index, "response": out,
                                         "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
                return {**out, "cached": False}
            self.stats["failed_calls"] += 1
            return {"error": f"{error} (after {attempt + 1} attempts)"}


def generate(samples: Sequence[Sample], cfg: RolloutConfig, *, model: str, base_url: str | None,
             cache_dir: Path, local: bool = False,
             progress: Callable[[int, int], None] | None = None) -> tuple[list[Rollout], Counter]:
    """Ask every sample ``cfg.n_samples`` times, concurrently; graded rollouts in sample order."""
    return asyncio.run(_generate(samples, cfg, model, base_url, Path(cache_dir), local, progress))


async def _generate(samples, cfg, model, base_url, cache_dir, local, progress):
    caller = _Caller(cfg, model, base_url, cache_dir, local)
    jobs = [(s, k) for s in samples for k in range(cfg.n_samples)]
    done = 0

    async def one(sample: Sample, k: int) -> Rollout:
        nonlocal done
        msgs = messages_for(sample, cfg)
        res = await caller.ask(msgs, k)
        done += 1
        if progress:
            progress(done, len(jobs))
        meta = {"question": sample.question, "sample_index": k, "system": cfg.system_prompt,
                "temperature": cfg.temperature}
        if "error" in res:
            return Rollout(sample.id, msgs[-1]["content"], None, model, None, reference=sample.reference,
                           error=res["error"], metadata=meta)
        correct, predicted = sample.grade(res["content"])
        usage = res.get("usage") or {}
        meta.update(finish_reason=res.get("finish_reason"), prompt_tokens=usage.get("prompt_tokens"),
                    cached=res["cached"])
        return Rollout(sample.id, msgs[-1]["content"], res["content"], model, correct, predicted=predicted,
                       reference=sample.reference, tokens=usage.get("completion_tokens"), metadata=meta)

    try:
        rollouts = await asyncio.gather(*(one(s, k) for s, k in jobs))
    finally:
        await caller.client.close()
    return list(rollouts), caller.stats


def stream_one(prompt: str, system: str | None, cfg: RolloutConfig, *, model: str, base_url: str | None,
               local: bool, stream: bool, out=None) -> str:
    """Interactive: one prompt, the answer printed (token by token with ``stream``); not cached."""
    from openai import OpenAI

    out = out or sys.stdout
    client = OpenAI(base_url=base_url, api_key=resolve_api_key(cfg, local), timeout=cfg.timeout_s, max_retries=2)
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    kw = dict(model=model, messages=msgs, temperature=cfg.temperature, max_tokens=cfg.max_tokens)
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
