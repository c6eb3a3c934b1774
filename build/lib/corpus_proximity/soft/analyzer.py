"""Read a soft-clustering result: per-cluster summaries and exemplar contexts coloured by membership.

    an = ClusterAnalyzer("data/cache/softclust-<key>")
    an.get_cluster_summary(3)                 # usage, positions, tokens, intervention stats
    an.visualize_cluster_context(3, 0)        # terminal (rich); returns the same context as HTML
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.text import Text

from corpus_proximity.errors import InputError


def _pieces(tokens: list[str]) -> list[tuple[str, bool]]:
    """Token strings -> (text, space before it): WordPiece '##', GPT-2 'Ġ', SentencePiece '▁'."""
    out = []
    for i, t in enumerate(tokens):
        if t.startswith("##"):
            out.append((t[2:], False))
        elif t.startswith(("Ġ", "▁")):
            out.append((t[1:], i > 0))
        else:
            out.append((t, i > 0))
    return out


def context_string(ex: dict, mark: str = "[[{}]]") -> str:
    """An exemplar's context as plain text (word pieces joined), the exemplar's token as ``mark``."""
    out = []
    for i, ((piece, space), tid) in enumerate(zip(_pieces(ex["context"]), ex["context_ids"])):
        if tid < 0:
            continue
        out.append((" " if space and out else "") + (mark.format(piece) if i == ex["focus"] else piece))
    return "".join(out)


class ClusterAnalyzer:
    """Summaries and exemplar contexts of one result directory (``summary.json`` + ``centres.npz``)."""

    def __init__(self, results_dir: str | Path):
        self.dir = Path(results_dir)
        path = self.dir / "summary.json"
        if not path.is_file():
            raise InputError(f"{self.dir}: no summary.json; run soft_cluster.py (or fit with an out_dir) first")
        self.summary = json.loads(path.read_text())
        self.clusters = self.summary["clusters"]
        self._arrays: dict | None = None

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        """centres, intervention_vectors, separation, cross_correlation, position_hist, history, ..."""
        if self._arrays is None:
            with np.load(self.dir / "centres.npz") as z:
                self._arrays = {k: z[k] for k in z.files}
        return self._arrays

    def _cluster(self, cluster_id: int) -> dict:
        if not 0 <= cluster_id < len(self.clusters):
            raise InputError(f"cluster {cluster_id} does not exist (0..{len(self.clusters) - 1})")
        return self.clusters[cluster_id]

    def ranked(self) -> list[int]:
        """Cluster ids, most used first."""
        return sorted(range(len(self.clusters)), key=lambda c: -self.clusters[c]["usage"])

    def get_cluster_summary(self, cluster_id: int) -> dict:
        """Everything recorded about a cluster but the exemplar lists (their counts instead)."""
        c = dict(self._cluster(cluster_id))
        ex = c.pop("exemplars")
        c["n_exemplars"] = {k: len(v) for k, v in ex.items()}
        return c

    def exemplars(self, cluster_id: int, kind: str = "top") -> list[dict]:
        if kind not in ("top", "random"):
            raise InputError(f"exemplar kind {kind!r}: use 'top' or 'random'")
        return self._cluster(cluster_id)["exemplars"][kind]

    def context_text(self, cluster_id: int, example_idx: int = 0, kind: str = "top") -> tuple[Text, str]:
        """One exemplar's context as (rich Text, HTML): background ∝ membership, the exemplar underlined."""
        exs = self.exemplars(cluster_id, kind)
        if not 0 <= example_idx < len(exs):
            raise InputError(f"cluster {cluster_id} has {len(exs)} {kind} exemplars; no index {example_idx}")
        ex = exs[example_idx]
        text, parts = Text(), []
        for i, ((piece, space), m, tid) in enumerate(zip(_pieces(ex["context"]), ex["context_membership"],
                                                         ex["context_ids"])):
            if tid < 0:
                continue
            if space and len(text):
                text.append(" ")
                parts.append(" ")
            shade = int(255 - 175 * min(max(m, 0.0), 1.0))
            style = f"black on rgb(255,{shade},{max(shade - 60, 0)})" if m > 0 else ""
            if i == ex["focus"]:
                style = (style + " bold underline").strip()
            text.append(piece, style=style)
            css = f"background: rgba(255,120,0,{m:.2f});" + ("font-weight:bold;text-decoration:underline;"
                                                            if i == ex["focus"] else "")
            parts.append(f'<span style="{css}" title="{m:.2f}">{html.escape(piece)}</span>')
        return text, "".join(parts)

    def visualize_cluster_context(self, cluster_id: int, example_idx: int = 0, kind: str = "top",
                                  console: Console | None = None, html_path: str | Path | None = None) -> str:
        """Print one exemplar's context in the terminal and return it as HTML (also written to
        ``html_path`` if given)."""
        ex = self.exemplars(cluster_id, kind)[example_idx] if self.exemplars(cluster_id, kind) else None
        text, body = self.context_text(cluster_id, example_idx, kind)
        others = ", ".join(f"{o['cluster']} ({o['membership']:.2f})" for o in ex["other_clusters"]) or "none"
        head = (f"cluster {cluster_id} {kind} #{example_idx}: membership {ex['membership']:.2f} on "
                f"{ex['token']!r}  (chunk {ex['chunk']}, sequence {ex['sequence']}"
                + (f" = {ex['sequence_id']}" if ex.get("sequence_id") else "") + f", position {ex['position']}); "
                f"also active: {others}")
        (console or Console()).print(Text(head, style="dim"), text)
        out = f"<p><small>{html.escape(head)}</small><br>{body}</p>"
        if html_path is not None:
            Path(html_path).write_text(self.html_page([out]))
        return out

    def print_summary(self, cluster_id: int, n_examples: int = 3, console: Console | None = None) -> str:
        """Print a cluster's summary and its first exemplar contexts; returns them as an HTML section."""
        console = console or Console()
        c = self.get_cluster_summary(cluster_id)
        iv = c["intervention"]
        head = (f"cluster {cluster_id}: usage {c['usage_share']:.2%} ({c['n_top']} positions on top), "
                f"mean position {c['positions']['mean']}, LDA separation {iv['separation']}")
        top = " · ".join(t["token"] for t in c["top_tokens"][:8])
        dist = " · ".join(t["token"] for t in c["distinctive_tokens"][:8])
        console.rule(head)
        console.print(Text(f"frequent tokens: {top}\ndistinctive tokens: {dist}"))
        sections = [f"<h3>{html.escape(head)}</h3><p>frequent: {html.escape(top)}<br>distinctive: {html.escape(dist)}</p>"]
        for kind in ("top", "random"):
            for i in range(min(n_examples, len(self.exemplars(cluster_id, kind)))):
                sections.append(self.visualize_cluster_context(cluster_id, i, kind, console=console))
        return "\n".join(sections)

    @staticmethod
    def html_page(sections: list[str]) -> str:
        return ("<!doctype html><meta charset='utf-8'><title>soft clusters</title>"
                "<body style='font-family: sans-serif; max-width: 60em'>" + "\n".join(sections) + "</body>")
