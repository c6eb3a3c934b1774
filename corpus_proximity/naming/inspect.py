"""Reading a named tree in the terminal: the flat node table, one node with random members, the
noise of every node (``name_clusters.py --list / --inspect / --show-noise``)."""

from __future__ import annotations

import difflib

import numpy as np
from rich.table import Table

from corpus_proximity.errors import InputError
from corpus_proximity.naming.base import NodeName, clip, node_seed
from corpus_proximity.tree.tree import ROOT, ClusterTree
from corpus_proximity.untrusted import term


def display_names(names: dict[str, NodeName]) -> dict[str, str]:
    out = {}
    for nid, r in names.items():
        if r.name:
            out[nid] = term(r.name) + (f" [dim]({r.coherence}/10)[/dim]" if r.coherence is not None else "")
            if r.warnings:
                out[nid] += " [yellow]⚠[/yellow]"
        else:
            out[nid] = f"[red]unnamed: {term(clip(r.name_error or '?', 70))}[/red]"
    return out


def list_table(tree: ClusterTree, names: dict[str, NodeName]) -> Table:
    t = Table(title=f"{len(tree.nodes) - 1} nodes", show_lines=False)
    for col in ("id", "name", "size", "noise", "coh", "llm", "keywords / summary"):
        t.add_column(col, justify="right" if col in ("size", "noise", "coh", "llm") else "left",
                     overflow="fold")
    for nid in [n for n in tree.nodes if n != ROOT]:
        node, r = tree.nodes[nid], names.get(nid)
        name = display_names({nid: r})[nid] if r else ""
        extra = term(r.summary or ", ".join(r.keywords[:6])) if r else ""
        t.add_row(nid, name, str(node.size), str(len(node.noise)) if len(node.noise) else "",
                  "" if node.coherence is None else f"{node.coherence:.2f}",
                  "" if not r or r.coherence is None else str(r.coherence), extra)
    return t


def check_node_id(tree: ClusterTree, node_id: str) -> None:
    if node_id in tree.nodes and node_id != ROOT:
        return
    prefix = node_id.rsplit(".", 1)[0] if "." in node_id else ROOT
    near = list(tree.nodes[prefix].children) if prefix in tree.nodes else []
    near += [m for m in difflib.get_close_matches(node_id, [n for n in tree.nodes if n != ROOT], n=6, cutoff=0.5)
             if m not in near]
    near = near or tree.root.children
    raise InputError(f"unknown node id {node_id!r}; nearby ids: {', '.join(near[:12])}")


def random_members(idx: np.ndarray, n: int, seed: int, node_id: str) -> list[int]:
    rng = np.random.default_rng(node_seed(seed, node_id))
    return [int(i) for i in rng.choice(idx, size=min(n, len(idx)), replace=False)] if len(idx) else []


def member_line(i: int, texts: list[str], ids: list[tuple[str, str]] | None, chars: int) -> str:
    """One member as printed: its chunk id and document id (row number without them), then its text;
    the corpus text and ids are escaped for Rich markup and stripped of control characters."""
    head = f"chunk {ids[i][0]} · doc {ids[i][1]}" if ids else f"#{i}"
    return f"  [dim]{term(head)}[/dim] {term(clip(texts[i], chars))}"


def print_inspect(tree: ClusterTree, names: dict[str, NodeName], texts: list[str], node_id: str,
                  n: int, seed: int, log, member_ids: list[tuple[str, str]] | None = None) -> None:
    check_node_id(tree, node_id)
    node, r = tree.nodes[node_id], names.get(node_id)
    path = []
    p = node.parent
    while p and p != ROOT:
        path.append(f"{p} {term(names[p].name) if p in names and names[p].name else ''}".strip())
        p = tree.nodes[p].parent
    log.print(f"[bold]{node_id}[/bold]  {display_names({node_id: r})[node_id] if r else ''}")
    if path:
        log.print(f"  under: {' → '.join(reversed(path))}")
    log.print(f"  size {node.size}, noise {len(node.noise)}, coherence (silhouette) "
              f"{'-' if node.coherence is None else f'{node.coherence:.2f}'}, children {node.children or '-'}, "
              f"{'leaf: ' + node.leaf_reason if node.leaf_reason else 'split: ' + str(node.method)}")
    if r:
        for label, val in (("summary", r.summary), ("category", r.category), ("keywords", ", ".join(r.keywords)),
                           ("error", r.name_error), ("warnings", "; ".join(r.warnings))):
            if val:
                log.print(f"  {label}: {term(val)}")
    log.print(f"\n{min(n, node.size)} random member(s) (seed {seed}):")
    for i in random_members(node.members, n, seed, node_id):
        log.print(member_line(i, texts, member_ids, 400))


def print_noise(tree: ClusterTree, names: dict[str, NodeName], texts: list[str], n: int, seed: int, log,
                only: str | None = None, member_ids: list[tuple[str, str]] | None = None) -> None:
    ids = [only] if only else [nid for nid, nd in tree.nodes.items() if len(nd.noise)]
    if not ids:
        log.print("no node has noise points")
    for nid in ids:
        node = tree.nodes[nid]
        title = "corpus (root)" if nid == ROOT else f"{nid} {term(names[nid].name) if nid in names and names[nid].name else ''}"
        log.print(f"[bold]{title}[/bold]: {len(node.noise)} noise point(s) of {node.size} "
                  f"({len(node.noise) / max(node.size, 1):.0%}) — left unassigned when it was split")
        for i in random_members(node.noise, n, seed, f"noise:{nid}"):
            log.print(member_line(i, texts, member_ids, 300))
