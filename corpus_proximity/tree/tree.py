"""The cluster tree: nodes with tree-path ids (``0``, ``0.3``, ``0.3.1``), their members,
noise and centroids; saved as ``tree.json`` (structure, statistics) + ``tree_arrays.npz``
(member indices and centroids in the original embedding space)."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.tree import Tree

from corpus_proximity.cache import atomic_write_json, atomic_writer
from corpus_proximity.errors import InputError

ROOT = "root"
TREE_FORMAT = 1


@dataclass
class Node:
    id: str
    parent: str | None
    depth: int
    """-1 for the root (the whole corpus); top-level clusters have depth 0."""
    members: np.ndarray
    """Row indices (into the embedding matrix) of every point in this node."""
    noise: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    """Members left unassigned when this node was split (HDBSCAN label -1); they stay here."""
    children: list[str] = field(default_factory=list)
    coherence: float | None = None
    """Mean silhouette (cosine, original space) of this node's members within its parent's split."""
    min_cluster_size: int | None = None
    """min_cluster_size used to split this node (None if no split was attempted)."""
    method: str | None = None
    """How this node was split: hdbscan, kmeans, kmeans-fallback."""
    leaf_reason: str | None = None
    """max_depth, too_small, coherent or no_structure for leaves; None for split nodes."""
    split_consistency: float | None = None
    """kNN consistency (original space) of the split found at this node, kept or rejected."""
    centroid: np.ndarray | None = None
    sample_indices: list[int] = field(default_factory=list)
    """Members nearest the centroid, nearest first."""

    @property
    def size(self) -> int:
        return int(len(self.members))


@dataclass
class ClusterTree:
    nodes: dict[str, Node]
    n_points: int
    dim: int
    params: dict = field(default_factory=dict)

    @property
    def root(self) -> Node:
        return self.nodes[ROOT]

    @property
    def n_depths(self) -> int:
        """Number of cluster levels below the root (0 if the root was not split)."""
        return 1 + max((n.depth for n in self.nodes.values()), default=-1)

    def at_depth(self, depth: int) -> list[Node]:
        return [n for n in self.nodes.values() if n.depth == depth]

    def leaves(self) -> list[Node]:
        return [n for n in self.nodes.values() if not n.children]

    def labels_at_depth(self, depth: int) -> np.ndarray:
        """Cluster id of every point at ``depth``: "" below its leaf, "-1" where it was noise."""
        out = np.full(self.n_points, "", dtype=object)
        parents = [self.root] if depth == 0 else self.at_depth(depth - 1)
        for p in parents:
            out[p.noise] = "-1"
        for n in self.at_depth(depth):
            out[n.members] = n.id
        return out

    # --- persistence -------------------------------------------------------------------

    def to_json(self, chunk_ids: list[str] | None = None) -> dict:
        nodes = []
        for n in self.nodes.values():
            d = {"id": n.id, "parent": n.parent, "depth": n.depth, "size": n.size,
                 "n_noise": int(len(n.noise)), "children": n.children,
                 "coherence": None if n.coherence is None else round(float(n.coherence), 6),
                 "min_cluster_size": n.min_cluster_size, "method": n.method, "leaf_reason": n.leaf_reason,
                 "split_consistency": None if n.split_consistency is None else round(float(n.split_consistency), 6),
                 "sample_indices": n.sample_indices}
            if chunk_ids is not None:
                d["sample_chunk_ids"] = [chunk_ids[i] for i in n.sample_indices]
            nodes.append(d)
        return {"format": TREE_FORMAT, "n_points": self.n_points, "dim": self.dim,
                "n_depths": self.n_depths, "params": self.params, "nodes": nodes}

    def save(self, directory: Path, chunk_ids: list[str] | None = None) -> None:
        ids = list(self.nodes)
        members = [self.nodes[i].members for i in ids]
        noise = [self.nodes[i].noise for i in ids]
        arrays = {
            "node_ids": np.array(ids),
            "member_offsets": np.cumsum([0] + [len(m) for m in members]).astype(np.int64),
            "members": np.concatenate(members).astype(np.int64),
            "noise_offsets": np.cumsum([0] + [len(m) for m in noise]).astype(np.int64),
            "noise": np.concatenate(noise).astype(np.int64) if noise else np.empty(0, np.int64),
            "centroids": np.stack([self.nodes[i].centroid for i in ids]).astype(np.float32),
        }
        def write_npz(p: Path) -> None:
            with open(p, "wb") as f:
                np.savez(f, **arrays)

        atomic_writer(directory / "tree_arrays.npz", write_npz)
        atomic_write_json(directory / "tree.json", self.to_json(chunk_ids))

    @classmethod
    def load(cls, directory: Path) -> "ClusterTree":
        tj, ta = directory / "tree.json", directory / "tree_arrays.npz"
        if not tj.is_file() or not ta.is_file():
            raise InputError(f"{directory}: no tree.json/tree_arrays.npz; run cluster_corpus.py to build the tree")
        meta = json.loads(tj.read_text())
        arr = np.load(ta)
        mo, no = arr["member_offsets"], arr["noise_offsets"]
        index = {str(nid): k for k, nid in enumerate(arr["node_ids"])}
        nodes = {}
        for d in meta["nodes"]:
            k = index[d["id"]]
            nodes[d["id"]] = Node(
                id=d["id"], parent=d["parent"], depth=d["depth"],
                members=arr["members"][mo[k]:mo[k + 1]], noise=arr["noise"][no[k]:no[k + 1]],
                children=list(d["children"]), coherence=d["coherence"],
                min_cluster_size=d["min_cluster_size"], method=d["method"], leaf_reason=d["leaf_reason"],
                centroid=arr["centroids"][k], sample_indices=list(d["sample_indices"]),
                split_consistency=d.get("split_consistency"))
        return cls(nodes=nodes, n_points=meta["n_points"], dim=meta["dim"], params=meta.get("params", {}))

    def export_labels(self, path: Path, chunk_ids: list[str], doc_ids: list[str]) -> None:
        """One row per chunk: id, doc_id, depth0, depth1, ... (see :meth:`labels_at_depth`)."""
        depths = [self.labels_at_depth(d) for d in range(max(self.n_depths, 1))]

        def write(p: Path) -> None:
            with open(p, "w", newline="", encoding="utf-8") as f:
                w = csv.writer(f)
                w.writerow(["id", "doc_id"] + [f"depth{d}" for d in range(len(depths))])
                for i in range(self.n_points):
                    w.writerow([chunk_ids[i], doc_ids[i]] + [col[i] for col in depths])

        atomic_writer(path, write)


def render(tree: ClusterTree, names: dict[str, str] | None = None, max_children: int = 30,
           stability: dict[str, float] | None = None, stability_threshold: float = 0.6) -> Tree:
    """A rich tree: id, name (if any), size, coherence, stability (from an ensemble, if given;
    below ``stability_threshold`` marked UNSTABLE), noise, leaf reason. ``names`` are Rich markup:
    untrusted text in them must already be escaped (:func:`corpus_proximity.untrusted.term`)."""

    def label(n: Node) -> str:
        parts = [f"[bold]{n.id}[/bold]"]
        if names and names.get(n.id):
            parts.append(f"[cyan]{names[n.id]}[/cyan]")
        parts.append(f"n={n.size}")
        if n.coherence is not None:
            parts.append(f"coh={n.coherence:.2f}")
        s = (stability or {}).get(n.id)
        if s is not None and s == s:  # NaN: no run saw the node
            colour = "red" if s < stability_threshold else "yellow" if s < 0.75 else "green"
            parts.append(f"[{colour}]stab={s:.2f}{' UNSTABLE' if s < stability_threshold else ''}[/{colour}]")
        if len(n.noise):
            parts.append(f"[dim]noise={len(n.noise)} ({len(n.noise) / max(n.size, 1):.0%})[/dim]")
        if n.leaf_reason:
            parts.append(f"[dim]leaf: {n.leaf_reason}[/dim]")
        elif n.method:
            parts.append(f"[dim]{n.method} mcs={n.min_cluster_size}[/dim]")
        return "  ".join(parts)

    def add(branch: Tree, node: Node) -> None:
        for cid in node.children[:max_children]:
            add(branch.add(label(tree.nodes[cid])), tree.nodes[cid])
        if len(node.children) > max_children:
            branch.add(f"[dim]… {len(node.children) - max_children} more[/dim]")

    root = tree.root
    top = Tree(f"[bold]corpus[/bold]  n={root.size}  depths={tree.n_depths}  "
               f"nodes={len(tree.nodes) - 1}  leaves={len(tree.leaves())}  "
               f"noise at root={len(root.noise)}" + (f"  [dim]({root.leaf_reason})[/dim]" if root.leaf_reason else ""))
    add(top, root)
    return top
