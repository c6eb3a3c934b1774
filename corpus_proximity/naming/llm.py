"""The LLM namer: any OpenAI-compatible chat endpoint (OpenAI, vLLM, Ollama, llama.cpp server).

Breadth first: every depth-0 node is named concurrently (``asyncio.gather`` under a semaphore of
``max_concurrency``), then depth 1, and so on. A prompt holds the node's representative samples
and, with ``prompt_context``, its parent's name path, its distinctive keywords and what its
siblings are about (their offline keyphrases); it asks for a structured description — summary,
a 2-5 word label, category, coherence 1-10 — validated with pydantic. Generic labels ("Text",
"Cluster 3") and labels equal to a sibling's or the parent's are re-asked once with a sharper
prompt that lists the taken names. A node whose parent has no name is not asked (its prompt
would lack the parent) and waits for the next run.

Calls go through the one chat caller (:class:`corpus_proximity.llm.caller.ChatCaller`): cached one
file per call under ``<cache_dir>/llm-calls/`` (a rerun costs nothing, editing the prompt re-pays
only the calls it changes), transport faults retried by the openai client, an unusable answer asked
again with the model shown its reply; only validated answers are cached. A node that still fails
gets ``name_error`` and no name, and a rerun asks only for the nodes without one.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from corpus_proximity.cache import canonical_json
from corpus_proximity.config import NamingConfig
from corpus_proximity.errors import InputError
from corpus_proximity.llm.caller import AnswerError, ChatAnswer, ChatCaller
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

ANSWER_SCHEMA: dict  # derived from ClusterDescription below

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


def _answer_schema() -> dict:
    """The JSON schema of a :class:`ClusterDescription`, as strict structured output wants it: every
    property required, nothing else allowed (pydantic's own schema leaves defaulted fields optional)."""
    props = {name: {k: v for k, v in spec.items() if k in ("type", "minimum", "maximum")}
             for name, spec in ClusterDescription.model_json_schema()["properties"].items()}
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


ANSWER_SCHEMA = _answer_schema()


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


# --- asking for a description ----------------------------------------------------------------

def request_params(cfg: NamingConfig) -> dict:
    """What a naming call sends besides the messages and the model (the llm block adds the rest)."""
    if cfg.response_format == "json_schema":
        return {"response_format": {"type": "json_schema", "json_schema": {
            "name": "cluster_description", "strict": True, "schema": ANSWER_SCHEMA}}}
    if cfg.response_format == "json_object":
        return {"response_format": {"type": "json_object"}}
    return {}


def description_caller(cfg: NamingConfig, call_cache_dir: Path, connect: Callable[[], str] | None = None
                       ) -> ChatCaller:
    """The chat caller naming uses; its tag is the templates' hash, so a prompt edit re-pays."""
    return ChatCaller(cfg.llm, call_cache_dir, tag=template_hash(cfg.response_format), section="naming",
                      connect=connect, alternative="point naming.llm.base_url at a local server")


async def ask_description(caller: ChatCaller, cfg: NamingConfig, messages: list[dict]) -> ChatAnswer:
    """One described group: ``answer.value`` is a :class:`ClusterDescription`, or ``answer.error``
    says why not. An unusable reply is shown back to the model with what was wrong (asking the
    same question again would only get the same answer), a little hotter: at temperature 0 a
    model tends to repeat its mistake."""

    def validate(content: str | None, finish_reason: str | None) -> ClusterDescription:
        try:
            return parse_answer(content)
        except AnswerError as e:
            if finish_reason == "length":
                raise AnswerError(f"answer cut off at max_tokens={cfg.llm.max_tokens} ({e}); "
                                  "keep the summary to one short sentence") from None
            raise

    def repair(original: list[dict], content: str, error: AnswerError) -> tuple[list[dict], dict]:
        return (original + [{"role": "assistant", "content": content},
                            {"role": "user", "content": REPAIR_MESSAGE.format(error=error)}],
                {"temperature": max(cfg.llm.temperature, REPAIR_TEMPERATURE)})

    return await caller.ask(messages, request_params(cfg), validate=validate, repair=repair)


# --- the namer -------------------------------------------------------------------------------

class LLMNamer:
    """Names a tree breadth first with an OpenAI-compatible chat model (see the module docstring)."""

    source = "llm"

    def __init__(self, cfg: NamingConfig, call_cache_dir: Path, connect: Callable[[], str] | None = None,
                 log=None, keep: dict[str, NodeName] | None = None):
        """``keep``: the names of an earlier run of the same stage; nodes that have one keep it and
        are not asked again (a retry run only fills in what failed)."""
        if not cfg.llm.model:
            raise InputError("naming.llm.model: set the chat model to use, e.g. --set naming.llm.model=gpt-4o-mini")
        self.cfg = cfg
        self.call_cache_dir = Path(call_cache_dir)
        self.connect = connect
        self.log = log
        self.keep = {nid: r for nid, r in (keep or {}).items() if r.name}

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
        caller = description_caller(cfg, self.call_cache_dir, self.connect)
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
                    if nid in self.keep:
                        names[nid] = self.keep[nid]
                    elif fatal:
                        names[nid] = self._failed(nid, hints, f"not attempted: {fatal}")
                    elif parent != ROOT and names[parent].name is None:
                        names[nid] = self._failed(nid, hints, f"parent {parent} has no name; rerun naming to retry")
                    else:
                        todo.append(nid)
                msgs = {nid: self.messages(tree, nid, names, hints, texts, embeddings) for nid in todo}
                outcomes = await asyncio.gather(*(ask_description(caller, cfg, msgs[nid]) for nid in todo))
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

    def _record(self, nid: str, hints: dict[str, NodeName], out: ChatAnswer) -> NodeName:
        if out.value is None:
            return self._failed(nid, hints, out.error or "failed")
        a = out.value
        return NodeName(nid, a.label, self.source, keywords=hints[nid].keywords, summary=a.summary,
                        category=a.category, coherence=a.coherence)

    @staticmethod
    def _fatal(outcomes: list[ChatAnswer], caller: ChatCaller) -> str | None:
        for kind in ("fatal", "unreachable"):
            bad = [o for o in outcomes if o.kind == kind]
            if bad:
                return f"LLM endpoint {'rejected the request' if kind == 'fatal' else 'unreachable'}: {bad[0].error}"
        return None

    async def _reask(self, tree: ClusterTree, todo: list[str], msgs: dict[str, list[dict]],
                     names: dict[str, NodeName], caller: ChatCaller) -> None:
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
            asks.append(ask_description(caller, self.cfg, m))
        for nid, out in zip(ids, await asyncio.gather(*asks)):
            old = names[nid]
            problem = problems[nid][0]
            if out.value is None:
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
