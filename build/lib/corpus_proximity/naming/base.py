"""What every namer shares: the per-node name record, the namer protocol, and representative
sampling of a node's texts (nearest the centroid, made diverse by maximal marginal relevance).

The namers themselves live in :mod:`corpus_proximity.naming.offline` (class-based TF-IDF
keyphrases, no network) and :mod:`corpus_proximity.naming.llm` (an OpenAI-compatible chat model);
:mod:`corpus_proximity.naming.stage` is the stage.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Protocol, Sequence

import numpy as np

from corpus_proximity.tree.tree import ROOT, ClusterTree, Node


@dataclass
class NodeName:
    """The name of one tree node and how it was obtained."""

    id: str
    name: str | None
    """The label shown everywhere; None when naming failed (never an invented stand-in)."""
    source: str
    """offline, llm or none."""
    keywords: list[str] = field(default_factory=list)
    """Distinctive terms of the node against its siblings (c-TF-IDF), best first."""
    summary: str | None = None
    """LLM: one sentence on what the node's texts share."""
    category: str | None = None
    """LLM: the broad domain."""
    coherence: int | None = None
    """LLM: 1-10, how well the samples share one theme (the tree's own `coherence` is a silhouette)."""
    name_error: str | None = None
    """Why the node has no name (after retries), or None."""
    warnings: list[str] = field(default_factory=list)
    """Kept but doubtful: still generic or still a duplicate of a sibling after the re-ask."""

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "NodeName":
        return cls(**{k: d.get(k) for k in ("id", "name", "source", "summary", "category", "coherence",
                                              "name_error")},
                   keywords=list(d.get("keywords") or []), warnings=list(d.get("warnings") or []))


@dataclass
class NamingResult:
    names: dict[str, NodeName]
    """Every non-root node, in tree order."""
    stats: dict = field(default_factory=dict)
    """Counters of the run (LLM: calls sent, cache hits, retries, failures)."""
    fatal: str | None = None
    """Why the run stopped early (endpoint unreachable, key rejected); names obtained are kept."""

    @property
    def n_failed(self) -> int:
        return sum(1 for n in self.names.values() if n.name is None)


class Namer(Protocol):
    """Names every non-root node of a tree from its member texts."""

    source: str

    def name_tree(self, tree: ClusterTree, texts: Sequence[str], embeddings: np.ndarray) -> NamingResult:
        ...


class IdNamer:
    """The skip implementation (namer = none): a node's name is its id."""

    source = "none"

    def name_tree(self, tree: ClusterTree, texts: Sequence[str], embeddings: np.ndarray) -> NamingResult:
        return NamingResult({nid: NodeName(nid, nid, self.source) for nid in named_ids(tree)})


def named_ids(tree: ClusterTree) -> list[str]:
    """Non-root node ids, breadth first (parents before children), siblings in id order."""
    out, frontier = [], [tree.root]
    while frontier:
        nxt = []
        for node in frontier:
            out.extend(node.children)
            nxt.extend(tree.nodes[c] for c in node.children)
        frontier = nxt
    return out


def siblings(tree: ClusterTree, node_id: str) -> list[str]:
    """The other children of the node's parent (for depth 0: the other top-level clusters)."""
    parent = tree.nodes[tree.nodes[node_id].parent or ROOT]
    return [c for c in parent.children if c != node_id]


def node_seed(seed: int, node_id: str) -> int:
    """A per-node seed from the config seed and the node's path: stable across reruns."""
    return int.from_bytes(hashlib.sha256(f"naming:{seed}:{node_id}".encode()).digest()[:4], "little")


def representative_indices(embeddings: np.ndarray, members: np.ndarray, centroid: np.ndarray, k: int, *,
                           n_random: int = 0, mmr_lambda: float = 0.7, pool: int = 50,
                           seed: int = 0, dup_threshold: float = 0.98) -> list[int]:
    """Rows of ``members`` that show what a node is: ``k`` chosen by maximal marginal relevance
    among the ``pool`` members nearest ``centroid``, then ``n_random`` random other members.

    MMR picks, one at a time, the candidate maximising
    ``mmr_lambda * sim(c, centroid) - (1 - mmr_lambda) * max_s sim(c, s)`` over the ones already
    picked, so near-duplicates (cosine >= ``dup_threshold``, e.g. overlapping windows of one
    document) are not all shown. Deterministic: ties go to the nearer member, randomness is seeded.
    """
    members = np.asarray(members, dtype=np.int64)
    if len(members) == 0 or k <= 0:
        return []
    X = np.asarray(embeddings[members], dtype=np.float32)
    sims = X @ np.asarray(centroid, dtype=np.float32)
    order = np.argsort(-sims, kind="stable")[:max(pool, k)]
    cand = X[order]
    rel = sims[order]
    picked: list[int] = []
    max_sim = np.full(len(order), -np.inf, dtype=np.float32)
    alive = np.ones(len(order), dtype=bool)
    while len(picked) < min(k, len(order)):
        redundancy = np.where(np.isfinite(max_sim), max_sim, 0.0)
        score = mmr_lambda * rel - (1.0 - mmr_lambda) * redundancy
        fresh = alive & (max_sim < dup_threshold)
        usable = fresh if fresh.any() else alive
        score = np.where(usable, score, -np.inf)
        j = int(np.argmax(score))  # first maximum = nearest to the centroid among ties
        picked.append(j)
        alive[j] = False
        max_sim = np.maximum(max_sim, cand @ cand[j])
    chosen = [int(members[order[j]]) for j in picked]
    if n_random > 0:
        rest = np.setdiff1d(members, np.array(chosen, dtype=np.int64), assume_unique=False)
        if len(rest):
            rng = np.random.default_rng(seed)
            chosen += [int(i) for i in rng.choice(rest, size=min(n_random, len(rest)), replace=False)]
    return chosen


def sample_cluster_texts(node: Node, texts: Sequence[str], embeddings: np.ndarray, k: int, *,
                         n_random: int = 0, mmr_lambda: float = 0.7, pool: int = 50, seed: int = 0,
                         max_chars: int | None = None) -> list[str]:
    """The texts of :func:`representative_indices` for ``node`` (random picks seeded per node)."""
    idx = representative_indices(embeddings, node.members, node.centroid, k, n_random=n_random,
                                 mmr_lambda=mmr_lambda, pool=pool, seed=node_seed(seed, node.id))
    return [clip(texts[i], max_chars) for i in idx]


def clip(text: str, max_chars: int | None) -> str:
    text = " ".join(str(text).split())
    if max_chars is None or len(text) <= max_chars:
        return text
    cut = text[:max_chars].rsplit(" ", 1)[0]
    return (cut or text[:max_chars]) + " …"
