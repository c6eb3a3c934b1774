"""The LLM namer: any OpenAI-compatible chat endpoint (OpenAI, vLLM, Ollama, llama.cpp server).

Breadth first: every depth-0 node is named concurrently (``asyncio.gather`` under a semaphore of
``max_concurrency``), then depth 1, and so on. A prompt holds the node's representative samples
and, with ``prompt_context``, its parent's name path, its distinctive keywords and what its
siblings are about (their offline keyphrases); it asks for a structured description — summary,
a 2-5 word label, category, coherence 1-10 — validated with pydantic. Generic labels ("Text",
"Cluster 3") and labels equal to a sibling's or the parent's are re-asked once with a sharper
prompt that lists the taken names. A node whose parent has no name is not asked (its prompt
would lack the parent) and waits for the next run.

Every call is cached on disk, one JSON file per call under ``<cache_dir>/llm-calls/``, keyed on
the messages, the prompt template's hash, the model and the temperature (567-labs/kura): a rerun
costs nothing and editing the prompt re-pays only the calls it changes. Only validated answers
are cached. 429/5xx/timeouts/unreachable endpoints and empty or unparseable answers are retried
with exponential backoff; a node that still fails gets ``name_error`` and no name.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from corpus_proximity import cli
from corpus_proximity.cache import atomic_write_json, canonical_json
from corpus_proximity.config import NamingConfig
from corpus_proximity.errors import InputError
from corpus_proximity.naming.base import NamingResult, NodeName, named_ids, sample_cluster_texts
from corpus_proximity.naming.offline import OfflineNamer, word_forms
from corpus_proximity.tree.tree import ROOT, ClusterTree

PROMPT_VERSION = 1

SYSTEM_PROMPT = "You name groups of texts the way a researcher labels topics in a taxonomy. Reply with JSON only."

USER_TEMPLATE = """Texts from one group:
{samples}
{context}{hints}
Name this group. Reply with a JSON object with these keys:
"summary": one short sentence on what these texts are about;
"label": a short noun phrase (2 to 5 words) naming their common topic, like a section title; not a list of words, not generic like "Text", "Content" or "Cluster 3";
"category": the broad domain (1 to 3 words);
"coherence": 1 to 10, how clearly the texts share one topic."""

HINTS_TEMPLATE = """
Keywords of this group: {keywords}
Other groups beside it: {siblings}; the label should set this group apart from them.
"""

REASK_TEMPLATE = """

A first answer labelled this group "{label}", which {problem}.{taken} Reply again with a sharper, more specific label."""

REPAIR_TEMPERATURE = 0.7
REPAIR_MESSAGE = ("That reply was not usable ({error}). Reply with only the JSON object: "
                  '{{"summary": "...", "label": "...", "category": "...", "coherence": 1-10}}')

ANSWER_SCHEMA = {
    "type": "object",
    "properties": {
        "summary": {"type": "string"},
        "label": {"type": "string"},
        "category": {"type": "string"},
        "coherence": {"type": "integer", "minimum": 1, "maximum": 10},
    },
    "required": ["summary", "label", "category", "coherence"],
    "additionalProperties": False,
}

GENERIC_WORDS = frozenset("""
text texts content contents cluster clusters document documents doc docs data information info misc
miscellaneous other others general generic various varied topic topics category categories group
groups item items stuff unknown mixed mix assorted collection sample samples chunk chunks snippet
snippets excerpt excerpts passage passages unnamed untitled none na n a theme themes subject
subjects entries entry material materials corpus set sets
""".split())
_FILLER = frozenset("a an the of and or for on in to with about & - related".split())


def template_hash(response_format: str) -> str:
    """sha256 of everything that shapes a call besides its messages: templates, schema, mode."""
    payload = {"version": PROMPT_VERSION, "system": SYSTEM_PROMPT, "user": USER_TEMPLATE, "hints": HINTS_TEMPLATE,
               "reask": REASK_TEMPLATE, "repair": REPAIR_MESSAGE, "schema": ANSWER_SCHEMA,
               "response_format": response_format}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


# --- answers ---------------------------------------------------------------------------------

class ClusterDescription(BaseModel):
    """One validated answer."""

    model_config = ConfigDict(extra="ignore")
    summary: str = ""
    label: str
    category: str = ""
    coherence: int = Field(ge=1, le=10)

    @field_validator("label")
    @classmethod
    def _label(cls, v: str) -> str:
        v = " ".join(str(v).split()).strip(" \"'`*.:;,")
        v = re.sub(r"^(label|name)\s*:\s*", "", v, flags=re.IGNORECASE)
        if not v:
            raise ValueError("label is empty")
        if sum(v.count(c) for c in ",;·|") >= 2:  # a keyword list: its first phrase is the model's label
            v = re.split(r"[,;·|]", v)[0].strip(" \"'`*.:")
            if not v:
                raise ValueError("label is a list of words, not a name")
        if re.fullmatch(r"[\d\s-]+(words?)?", v.lower()):
            raise ValueError(f"label {v!r} copies the instructions, it does not name the cluster")
        if len(v.split()) > 8 or len(v) > 80:
            raise ValueError(f"label has {len(v.split())} words; 2-5 wanted")
        return v

    @field_validator("coherence", mode="before")
    @classmethod
    def _coherence(cls, v: Any) -> Any:
        if isinstance(v, str):  # "7", "7/10"
            m = re.match(r"\s*(\d+(?:\.\d+)?)", v)
            v = float(m.group(1)) if m else v
        if isinstance(v, float):
            v = int(round(v))
        return v


class AnswerError(ValueError):
    """The endpoint answered, but not with a usable description."""


def parse_answer(content: str | None) -> ClusterDescription:
    """Validate a model reply: a JSON object (fences or chatter around it are tolerated)."""
    if content is None or not content.strip():
        raise AnswerError("empty answer")
    text = content.strip()
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        raise AnswerError(f"no JSON object in the answer: {text[:60]!r}")
    try:
        obj = json.loads(text[start:end + 1])
    except json.JSONDecodeError as e:
        raise AnswerError(f"answer is not valid JSON ({e.msg}): {text[:60]!r}") from None
    if not isinstance(obj, dict):
        raise AnswerError("answer is not a JSON object")
    try:
        return ClusterDescription.model_validate(obj)
    except ValidationError as e:
        err = e.errors()[0]
        raise AnswerError(f"invalid {'.'.join(map(str, err['loc'])) or 'answer'}: {err['msg']}") from None


def _norm_words(label: str) -> list[str]:
    words = re.findall(r"[a-z0-9]+", label.lower())
    return [min(word_forms(w), key=len) for w in words if w not in _FILLER]


def is_generic(label: str) -> bool:
    """"Text", "Content", "Cluster 3", "Miscellaneous documents": nothing a researcher would write."""
    words = [w for w in re.findall(r"[a-z0-9]+", label.lower()) if w not in _FILLER and not w.isdigit()]
    return not words or all(word_forms(w) & GENERIC_WORDS for w in words)


def same_label(a: str, b: str) -> bool:
    return sorted(_norm_words(a)) == sorted(_norm_words(b))


# --- the call cache --------------------------------------------------------------------------

class CallCache:
    """One JSON file per successful, validated call: ``<root>/<sha256>.json``."""

    def __init__(self, root: Path):
        self.root = Path(root)

    @staticmethod
    def key(messages: list[dict], template: str, model: str, temperature: float) -> str:
        payload = {"messages": messages, "template_hash": template, "model": model,
                   "temperature": float(temperature)}
        return hashlib.sha256(canonical_json(payload).encode()).hexdigest()

    def path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def get(self, key: str) -> ClusterDescription | None:
        p = self.path(key)
        if not p.is_file():
            return None
        try:
            return parse_answer(json.loads(p.read_text())["content"])
        except (OSError, ValueError, KeyError, TypeError):
            return None  # unreadable or no longer valid: ask again (and overwrite)

    def put(self, key: str, record: dict) -> None:
        atomic_write_json(self.path(key), record)


# --- calling the endpoint --------------------------------------------------------------------

@dataclass
class CallOutcome:
    answer: ClusterDescription | None
    error: str | None = None
    kind: str | None = None
    """None on success; failed (retries used up), unreachable, or fatal (the endpoint refuses us)."""
    cached: bool = False


def _retry_after(exc: Exception) -> float | None:
    resp = getattr(exc, "response", None)
    try:
        return float(resp.headers.get("retry-after")) if resp is not None else None
    except (TypeError, ValueError):
        return None


def resolve_api_key(cfg: NamingConfig, local: bool = False) -> str:
    return cli.api_key(cfg.api_key_env, cfg.base_url, local, "naming.namer=llm",
                       "point naming.base_url at a local server")


class LLMCaller:
    """Cached, retried chat calls; the client (and a local server) is made on the first miss."""

    def __init__(self, cfg: NamingConfig, cache: CallCache, connect: Callable[[], str] | None = None):
        self.cfg = cfg
        self.cache = cache
        self.connect = connect
        self.template = template_hash(cfg.response_format)
        self.stats: Counter[str] = Counter()
        self._client = None
        self._client_error: Exception | None = None
        self._client_lock = asyncio.Lock()
        self._sem = asyncio.Semaphore(cfg.max_concurrency)

    async def client(self):
        async with self._client_lock:
            if self._client_error is not None:  # no endpoint at all: every call fails the same way
                raise self._client_error
            if self._client is None:
                from openai import AsyncOpenAI

                try:
                    key = resolve_api_key(self.cfg, local=self.connect is not None)
                    base_url = self.connect() if self.connect else self.cfg.base_url
                    self._client = AsyncOpenAI(base_url=base_url, api_key=key, timeout=self.cfg.timeout_s,
                                               max_retries=0)
                except Exception as e:
                    self._client_error = e
                    raise
            return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    def _request_kwargs(self, repairing: bool = False) -> dict:
        # a repair is asked a little hotter: at temperature 0 a model tends to repeat its mistake
        temperature = max(self.cfg.temperature, REPAIR_TEMPERATURE) if repairing else self.cfg.temperature
        kw: dict[str, Any] = {"model": self.cfg.model, "temperature": temperature,
                              "max_tokens": self.cfg.max_tokens}
        if self.cfg.response_format == "json_schema":
            kw["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "cluster_description", "strict": True, "schema": ANSWER_SCHEMA}}
        elif self.cfg.response_format == "json_object":
            kw["response_format"] = {"type": "json_object"}
        return kw

    async def ask(self, messages: list[dict]) -> CallOutcome:
        import openai

        key = CallCache.key(messages, self.template, self.cfg.model, self.cfg.temperature)
        hit = self.cache.get(key)
        if hit is not None:
            self.stats["cache_hits"] += 1
            return CallOutcome(hit, cached=True)
        async with self._sem:
            client = await self.client()
            convo = list(messages)
            error, kind = "no attempt", "failed"
            delay = self.cfg.retry_backoff_s
            for attempt in range(self.cfg.max_retries + 1):
                if attempt:
                    self.stats["retries"] += 1
                    await asyncio.sleep(delay)
                delay = self.cfg.retry_backoff_s * 2 ** attempt
                self.stats["requests"] += 1
                try:
                    resp = await client.chat.completions.create(
                        messages=convo, **self._request_kwargs(repairing=len(convo) > len(messages)))
                except openai.APITimeoutError:
                    error, kind = f"timed out after {self.cfg.timeout_s:g}s", "failed"
                    continue
                except openai.APIConnectionError as e:
                    error, kind = f"cannot connect to {client.base_url} ({_cause(e)})", "unreachable"
                    continue
                except openai.APIStatusError as e:
                    error = f"HTTP {e.status_code}: {_short(e.message)}"
                    if e.status_code in (408, 409, 429) or e.status_code >= 500:
                        kind = "failed"
                        delay = max(delay, min(_retry_after(e) or 0.0, 60.0))
                        continue
                    return CallOutcome(None, error, "fatal")  # 400/401/403/404: asking again will not help
                except Exception as e:  # a body that is not a chat completion
                    error, kind = f"bad response ({type(e).__name__}: {_short(str(e))})", "failed"
                    continue
                content = _content(resp)
                try:
                    answer = parse_answer(content)
                except AnswerError as e:
                    if _finish_reason(resp) == "length":
                        e = AnswerError(f"answer cut off at max_tokens={self.cfg.max_tokens} ({e}); "
                                        "keep the summary to one short sentence")
                    error, kind = str(e), "failed"
                    # show the model its reply and what was wrong; asking the same question
                    # again would only get the same answer
                    convo = list(messages) + [{"role": "assistant", "content": content or ""},
                                              {"role": "user", "content": REPAIR_MESSAGE.format(error=e)}]
                    continue
                self.cache.put(key, {"key": key, "model": self.cfg.model, "temperature": self.cfg.temperature,
                                     "template_hash": self.template, "messages": messages, "content": content,
                                     "attempts": attempt + 1, "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
                return CallOutcome(answer)
            self.stats["failed_calls"] += 1
            return CallOutcome(None, f"{error} (after {self.cfg.max_retries + 1} attempts)", kind)


def _finish_reason(resp: Any) -> str | None:
    try:
        return resp.choices[0].finish_reason
    except (AttributeError, IndexError, TypeError):
        return None


def _content(resp: Any) -> str | None:
    try:
        return resp.choices[0].message.content
    except (AttributeError, IndexError, TypeError):
        return None


def _cause(e: Exception) -> str:
    inner = e.__cause__ or e.__context__
    return _short(str(inner) if inner else str(e)) or type(e).__name__


def _short(s: str, n: int = 120) -> str:
    s = " ".join(str(s).split())
    return s if len(s) <= n else s[:n] + "…"


# --- the namer -------------------------------------------------------------------------------

class LLMNamer:
    """Names a tree breadth first with an OpenAI-compatible chat model (see the module docstring)."""

    source = "llm"

    def __init__(self, cfg: NamingConfig, call_cache_dir: Path, connect: Callable[[], str] | None = None,
                 log=None):
        if not cfg.model:
            raise InputError("naming.model: set the chat model to use, e.g. --set naming.model=gpt-4o-mini")
        self.cfg = cfg
        self.cache = CallCache(call_cache_dir)
        self.connect = connect
        self.log = log

    def name_tree(self, tree: ClusterTree, texts: Sequence[str], embeddings: np.ndarray) -> NamingResult:
        return asyncio.run(self._name_tree(tree, texts, embeddings))

    def messages(self, tree: ClusterTree, nid: str, names: dict[str, NodeName], hints: dict[str, NodeName],
                 texts: Sequence[str], embeddings: np.ndarray) -> list[dict]:
        cfg, node = self.cfg, tree.nodes[nid]
        path = []
        p = node.parent
        while p and p != ROOT:
            path.append(names[p].name)
            p = tree.nodes[p].parent
        context = (f'\nThis group is one part of the larger group "{" → ".join(reversed(path))}"; '
                   "its label should say what is specific to this part.\n" if path else "")
        sibs = [c for c in tree.nodes[node.parent or ROOT].children if c != nid]
        samples = sample_cluster_texts(node, texts, embeddings, cfg.n_samples, n_random=cfg.n_random,
                                       mmr_lambda=cfg.mmr_lambda, pool=cfg.sample_pool, seed=cfg.seed,
                                       max_chars=cfg.max_sample_chars)
        hint = HINTS_TEMPLATE.format(keywords=", ".join(hints[nid].keywords) or "(none)",
                                     siblings="; ".join(hints[s].name or "?" for s in sibs) or "(none)")
        if not cfg.prompt_context:
            context = hint = ""
        user = USER_TEMPLATE.format(context=context, hints=hint,
                                    samples="\n".join(f"[{i + 1}] {t}" for i, t in enumerate(samples)))
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]

    async def _name_tree(self, tree, texts, embeddings) -> NamingResult:
        cfg = self.cfg
        hints = OfflineNamer(cfg.n_keywords, cfg.keyword_ngram_max).name_tree(tree, texts).names
        caller = LLMCaller(cfg, self.cache, self.connect)
        names: dict[str, NodeName] = {}
        by_depth: dict[int, list[str]] = defaultdict(list)
        for nid in named_ids(tree):
            by_depth[tree.nodes[nid].depth].append(nid)
        fatal = None
        try:
            for depth in sorted(by_depth):
                todo = []
                for nid in by_depth[depth]:
                    parent = tree.nodes[nid].parent
                    if fatal:
                        names[nid] = self._failed(nid, hints, f"not attempted: {fatal}")
                    elif parent != ROOT and names[parent].name is None:
                        names[nid] = self._failed(nid, hints, f"parent {parent} has no name; rerun naming to retry")
                    else:
                        todo.append(nid)
                msgs = {nid: self.messages(tree, nid, names, hints, texts, embeddings) for nid in todo}
                outcomes = await asyncio.gather(*(caller.ask(msgs[nid]) for nid in todo))
                for nid, out in zip(todo, outcomes):
                    names[nid] = self._record(nid, hints, out)
                fatal = fatal or self._fatal(outcomes, caller)
                if not fatal:
                    await self._reask(tree, todo, msgs, names, caller)
                if self.log:
                    self.log.print(f"names: depth {depth}: {len(todo)} node(s), "
                                   f"{sum(1 for n in todo if names[n].name)} named")
        finally:
            await caller.close()
        stats = dict(caller.stats)
        stats["failed_nodes"] = sum(1 for n in names.values() if n.name is None)
        return NamingResult(names, stats, fatal)

    def _failed(self, nid: str, hints: dict[str, NodeName], error: str) -> NodeName:
        return NodeName(nid, None, self.source, keywords=hints[nid].keywords, name_error=error)

    def _record(self, nid: str, hints: dict[str, NodeName], out: CallOutcome) -> NodeName:
        if out.answer is None:
            return self._failed(nid, hints, out.error or "failed")
        a = out.answer
        return NodeName(nid, a.label, self.source, keywords=hints[nid].keywords, summary=a.summary,
                        category=a.category, coherence=a.coherence)

    @staticmethod
    def _fatal(outcomes: list[CallOutcome], caller: LLMCaller) -> str | None:
        for kind in ("fatal", "unreachable"):
            bad = [o for o in outcomes if o.kind == kind]
            if bad:
                return f"LLM endpoint {'rejected the request' if kind == 'fatal' else 'unreachable'}: {bad[0].error}"
        return None

    async def _reask(self, tree: ClusterTree, todo: list[str], msgs: dict[str, list[dict]],
                     names: dict[str, NodeName], caller: LLMCaller) -> None:
        """Generic labels and labels equal to an earlier sibling's are asked once more, sharper."""
        problems: dict[str, tuple[str, list[str]]] = {}
        for nid in todo:
            rec = names[nid]
            if rec.name is None:
                continue
            sibs = [c for c in tree.nodes[tree.nodes[nid].parent or ROOT].children if c != nid]
            taken = [names[s].name for s in sibs if s in names and names[s].name]
            order = tree.nodes[tree.nodes[nid].parent or ROOT].children  # by size: the larger keeps its label
            earlier = [s for s in order[:order.index(nid)] if s in names and names[s].name
                       and same_label(names[s].name, rec.name)]
            parent = tree.nodes[nid].parent
            if is_generic(rec.name):
                problems[nid] = ("is too generic", taken)
            elif parent != ROOT and names[parent].name and same_label(names[parent].name, rec.name):
                problems[nid] = ("is the same as the larger group's label", taken + [names[parent].name])
            elif earlier:
                problems[nid] = (f'is the same as its sibling cluster {earlier[0]}\'s label', taken)
        if not problems:
            return
        ids = sorted(problems)
        asks = []
        for nid in ids:
            problem, taken = problems[nid]
            taken_txt = (" Labels already taken: " + ", ".join(f'"{t}"' for t in taken) + "."
                         if taken else "")
            m = [dict(x) for x in msgs[nid]]
            m[-1]["content"] += REASK_TEMPLATE.format(label=names[nid].name, problem=problem, taken=taken_txt)
            asks.append(caller.ask(m))
        for nid, out in zip(ids, await asyncio.gather(*asks)):
            old = names[nid]
            problem = problems[nid][0]
            if out.answer is None:
                old.warnings.append(f"label {problem}; the re-ask failed ({out.error})")
                continue
            new = self._record(nid, {nid: old}, out)
            sibs = [c for c in tree.nodes[tree.nodes[nid].parent or ROOT].children if c != nid]
            if is_generic(new.name):
                new.warnings.append("label is still generic after a re-ask")
            parent = tree.nodes[nid].parent
            if parent != ROOT and names[parent].name and same_label(names[parent].name, new.name):
                new.warnings.append("label is still its parent's after a re-ask")
            dup = [s for s in sibs if s in names and names[s].name and same_label(names[s].name, new.name)]
            if dup:
                new.warnings.append(f"label is still the same as sibling {dup[0]}'s after a re-ask")
            names[nid] = new
