"""One caller for every chat call the toolkit makes (cluster naming, soft-cluster naming, rollouts).

Transport faults are the openai client's business: it retries 408/409/429/5xx, timeouts and
dropped connections ``llm.max_retries`` times with exponential backoff, jitter and the server's
``Retry-After``. What is ours:

* the **call cache**, one JSON file per successful call under ``<cache_dir>/llm-calls/``, keyed on
  everything that shapes the answer (the messages, the model, the request parameters and the
  caller's ``tag``: its prompt templates' hash), so a rerun costs nothing and editing a prompt
  re-pays only the calls it changes (567-labs/kura). Only answers that passed ``validate`` are
  stored, always under the key of the original messages;
* the **semantic re-ask**: an answer that is empty or that ``validate`` rejects is asked again, up
  to ``llm.max_retries`` more times (``repair`` may show the model its reply and what was wrong);
* a **deadline per attempt**: ``llm.timeout_s`` bounds a whole HTTP exchange, body included (httpx's
  own timeouts bound each read, so a server trickling a byte at a time would never time out);
* concurrency (``llm.max_concurrency`` calls in flight), and errors as short text with the API key
  redacted: a failed call is an outcome with ``error`` set, never an invented answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generic, TypeVar

import httpx2

from corpus_proximity import cli
from corpus_proximity.cache import atomic_write_json, canonical_json
from corpus_proximity.config import LLMConfig

CALL_CACHE = "llm-calls"
"""Folder of the per-call cache under ``cache_dir``."""
CACHE_VERSION = 2

T = TypeVar("T")


class AnswerError(ValueError):
    """The endpoint answered, but not with a usable answer (the caller's ``validate`` says why)."""


@dataclass
class ChatAnswer(Generic[T]):
    """The outcome of one call: ``value`` (what ``validate`` made of the content) or ``error``."""

    value: T | None = None
    content: str | None = None
    finish_reason: str | None = None
    usage: dict | None = None
    cached: bool = False
    error: str | None = None
    kind: str | None = None
    """None on success; ``failed`` (attempts used up), ``unreachable``, or ``fatal`` (the endpoint
    refuses the request: 400/401/403/404, asking again will not help)."""

    @property
    def ok(self) -> bool:
        return self.error is None


def call_key(messages: list[dict], model: str, params: dict, tag: str) -> str:
    payload = {"v": CACHE_VERSION, "messages": messages, "model": model, "params": params, "tag": tag}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


class CallCache:
    """One JSON file per validated call: ``<root>/<sha256>.json`` holding the request and the answer."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def get(self, key: str) -> dict | None:
        """The stored response (``content``, ``finish_reason``, ``usage``), or None."""
        p = self.path(key)
        if not p.is_file():
            return None
        try:
            rec = json.loads(p.read_text())
            resp = rec["response"]
            return resp if isinstance(resp, dict) and isinstance(resp.get("content"), str) else None
        except (OSError, ValueError, KeyError, TypeError):
            return None  # unreadable: ask again (and overwrite)

    def put(self, key: str, record: dict) -> None:
        atomic_write_json(self.path(key), record)


class _DeadlineTransport(httpx2.AsyncBaseTransport):
    """Bounds one whole HTTP exchange, body included, by ``seconds``: past it the exchange is a
    read timeout, which the openai client retries like any other."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.inner = httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        async def exchange() -> httpx2.Response:
            resp = await self.inner.handle_async_request(request)
            try:
                body = b"".join([part async for part in resp.stream])
            finally:
                await resp.aclose()
            return httpx2.Response(resp.status_code, headers=resp.headers, content=body,
                                   extensions=resp.extensions, request=request)
        try:
            return await asyncio.wait_for(exchange(), self.seconds)
        except asyncio.TimeoutError:
            raise httpx2.ReadTimeout(f"no complete answer within {self.seconds:g}s", request=request) from None

    async def aclose(self) -> None:
        await self.inner.aclose()


def _short(s: Any, n: int = 160) -> str:
    s = " ".join(str(s).split())
    return s if len(s) <= n else s[:n] + "…"


class ChatCaller:
    """Cached, bounded chat calls to one endpoint. The client (and, through ``connect``, a local
    server) is made on the first call the cache cannot answer, so a fully cached run starts nothing.

    ``section`` names the config section the endpoint comes from (``naming``, ``rollout``) in
    errors; ``tag`` is the caller's prompt version or templates' hash, part of every call's key."""

    def __init__(self, llm: LLMConfig, cache_dir: Path, *, tag: str, section: str,
                 connect: Callable[[], str] | None = None, alternative: str = ""):
        self.llm, self.tag, self.section = llm, tag, section
        self.cache = CallCache(cache_dir)
        self.connect = connect
        self.alternative = alternative or f"point {section}.llm.base_url at a local server"
        self.stats: Counter[str] = Counter()
        self._key: str | None = None
        self._client = None
        self._client_error: Exception | None = None
        self._lock = asyncio.Lock()
        self._sem = asyncio.Semaphore(llm.max_concurrency)

    async def client(self):
        async with self._lock:
            if self._client_error is not None:  # no endpoint at all: every call fails the same way
                raise self._client_error
            if self._client is None:
                import openai

                try:
                    self._key = cli.api_key(self.llm.api_key_env, self.llm.base_url, self.connect is not None,
                                            f"{self.section}.llm", self.alternative)
                    base_url = self.connect() if self.connect else self.llm.base_url
                    http = openai.DefaultAsyncHttpxClient(transport=_DeadlineTransport(self.llm.timeout_s),
                                                          event_hooks={"request": [self._count]})
                    self._client = openai.AsyncOpenAI(base_url=base_url, api_key=self._key, http_client=http,
                                                      timeout=self.llm.timeout_s, max_retries=self.llm.max_retries)
                except Exception as e:
                    self._client_error = e
                    raise
            return self._client

    async def _count(self, request) -> None:
        self.stats["requests"] += 1
        if request.headers.get("x-stainless-retry-count", "0") != "0":
            self.stats["retries"] += 1

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    def redact(self, text: str) -> str:
        """Error text as stored and shown: the API key never appears in it (an endpoint may echo
        the Authorization header back)."""
        return text.replace(self._key, "***") if self._key and len(self._key) >= 8 else text

    async def ask(self, messages: list[dict], params: dict | None = None,
                  validate: Callable[[str, str | None], T] | None = None,
                  repair: Callable[[list[dict], str, AnswerError], tuple[list[dict], dict]] | None = None
                  ) -> ChatAnswer[T]:
        """Ask ``messages`` with request ``params`` (temperature, max_tokens, seed, response_format,
        ...; the model and the limits come from ``llm``). ``validate(content, finish_reason)``
        returns the answer's value or raises :class:`AnswerError`; ``repair(messages, content,
        error)`` gives the next attempt's messages and parameter overrides (default: ask again)."""
        import openai

        params = {"temperature": self.llm.temperature, "max_tokens": self.llm.max_tokens, **(params or {})}
        key = call_key(messages, self.llm.model, params, self.tag)
        validate = validate or _nonempty
        hit = self.cache.get(key)
        if hit is not None:
            try:
                value = validate(hit["content"], hit.get("finish_reason"))
                self.stats["cache_hits"] += 1
                return ChatAnswer(value, hit["content"], hit.get("finish_reason"), hit.get("usage"), cached=True)
            except AnswerError:
                pass  # no longer valid for this caller: ask again and overwrite
        async with self._sem:
            client = await self.client()
            convo, overrides = list(messages), {}
            error = "no attempt"
            for attempt in range(self.llm.max_retries + 1):
                if attempt:
                    self.stats["reasks"] += 1
                try:
                    resp = await client.chat.completions.create(model=self.llm.model, messages=convo,
                                                                **{**params, **overrides})
                except openai.APITimeoutError:
                    return self._failed(f"timed out after {self.llm.timeout_s:g}s", "failed")
                except openai.APIConnectionError as e:
                    inner = e.__cause__ or e.__context__ or e
                    return self._failed(f"cannot connect to {client.base_url} ({_short(inner) or type(inner).__name__})",
                                        "unreachable")
                except openai.APIStatusError as e:
                    retried = e.status_code in (408, 409, 429) or e.status_code >= 500
                    return self._failed(f"HTTP {e.status_code}: {_short(e.message)}", "failed" if retried else "fatal",
                                        attempts=self.llm.max_retries + 1 if retried else 1)
                except Exception as e:  # a body that is not a chat completion: ask again
                    error = f"bad response ({type(e).__name__}: {_short(e)})"
                    continue
                choice = resp.choices[0] if resp.choices else None
                content = choice.message.content if choice is not None and choice.message else None
                finish = choice.finish_reason if choice is not None else None
                try:
                    value = validate(content, finish)
                except AnswerError as e:
                    error = str(e)
                    if repair is not None:
                        convo, overrides = repair(list(messages), content or "", e)
                    continue
                usage = resp.usage.model_dump() if resp.usage else {}
                answer = {"content": content, "finish_reason": finish, "usage": usage}
                self.cache.put(key, {"key": key, "model": self.llm.model, "params": params, "tag": self.tag,
                                     "messages": messages, "response": answer, "attempts": attempt + 1,
                                     "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
                return ChatAnswer(value, content, finish, usage)
            return self._failed(error, "failed", attempts=self.llm.max_retries + 1)

    def _failed(self, error: str, kind: str, attempts: int | None = None) -> ChatAnswer:
        self.stats["failed_calls"] += 1
        n = self.llm.max_retries + 1 if attempts is None else attempts
        return ChatAnswer(error=self.redact(f"{error} (after {n} attempt{'s' if n > 1 else ''})"), kind=kind)


def _nonempty(content: str | None, finish_reason: str | None) -> str:
    if content is None or not content.strip():
        raise AnswerError("empty answer")
    return content
