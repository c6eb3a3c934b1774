"""What the HTML report and the dashboard show, as pure functions of the tree, its names, the 2-D
map and (optionally) annotated model outputs: node tables, Plotly figures, the error views and
the ``items.json`` / ``clusters.json`` records for external viewers.

Nothing here reads the cache: ``explore.data.load_exploration`` does, and hands these
functions plain arrays and tables, so tests call them directly.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative, sample_colorscale
from scipy import stats

from corpus_proximity.tree.tree import ROOT, ClusterTree
from corpus_proximity.untrusted import hover

NOISE = "-1"
NOISE_COLOUR = "#b8b8b8"
NA_COLOUR = "#e6e6e6"
TREE_KINDS = ("sunburst", "treemap", "icicle")
COLOUR_BY = {  # name → (node table column, colour scale, what the colours mean)
    "depth": ("depth", None, "colour: depth"),
    "coherence": ("coherence", "RdYlGn", "colour: coherence (mean silhouette): red = loose, green = tight"),
    "noise share": ("noise_share", "Greys", "colour: share of the node left as noise when it was split: darker = more"),
    "error rate": ("error_rate", "RdBu_r", "colour: error rate of the model outputs in the node against the overall "
                   "rate: red = more errors, blue = fewer, grey = no outputs"),
    "stability": ("stability", "RdYlGn", "colour: stability over the latest seed/bootstrap ensemble (mean best "
                  "Jaccard with any node of each run): red = changes between runs, green = stable"),
}


STAGE_SHARE = "stage_share."  # node table columns: a corpus stage's share of the node's chunks
STAGE_COLOUR = "stage share: "  # colour key of one such column: "stage share: <stage>"


def colour_options(table: pd.DataFrame) -> list[str]:
    """The COLOUR_BY keys that ``table`` has data for, then one "stage share: <stage>" per corpus stage."""
    return ([c for c, (col, _, _) in COLOUR_BY.items() if col == "depth" or col in table]
            + [STAGE_COLOUR + c[len(STAGE_SHARE):] for c in table.columns if c.startswith(STAGE_SHARE)])


def colour_spec(table: pd.DataFrame, colour_by: str) -> tuple[str, str | None, str]:
    """(column, colour scale, what the colours mean) of a colour key (:func:`colour_options`)."""
    if not colour_by.startswith(STAGE_COLOUR):
        return COLOUR_BY[colour_by]
    stage = colour_by[len(STAGE_COLOUR):]
    col = STAGE_SHARE + stage
    root = table.loc[table["id"] == ROOT, col] if col in table else pd.Series(dtype=float)
    overall = f" ({float(root.iloc[0]):.0%})" if len(root) and np.isfinite(root.iloc[0]) else ""
    return (col, "PuOr_r", f"colour: share of stage {stage} in the node's chunks against its share of the corpus"
            f"{overall}: purple = more, orange = less")
DEPTH_COLOURS = ["#ffffff", "#4c78a8", "#72b7b2", "#eeca3b", "#f58518", "#e45756", "#b279a2", "#9d755d"]
_CLUSTER_COL = re.compile(r"^(?:(?P<field>.+)\.)?cluster_depth_(?P<depth>\d+)$")


@dataclass
class Annotations:
    """Model outputs annotated by ``annotate_with_clusters.py`` (one ``--out`` folder)."""

    path: Path
    table: pd.DataFrame
    """annotated.parquet: the results' own columns plus, per text field, ``[<field>.]cluster_depth_{d}``,
    ``distance_depth_{d}``, ``nearest_chunk``, ``nearest_chunk_distance``, and per correctness field
    ``correct`` (one field) or ``correct.<field>`` (several): True / False / missing (ungraded)."""
    analyses: list[dict]
    """analysis.json's ``analyses``: per text field × correctness field, cluster_stats results by depth."""
    fields: dict[str, str] = field(default_factory=dict)
    """Text field → its column prefix ("" when only one field was annotated)."""
    correct_cols: dict[str, str] = field(default_factory=dict)
    """Correctness field → its column in ``table``."""
    outside_percentile: float | None = None
    """The corpus percentile of nearest-chunk similarity below which an output is outside (None:
    annotated before outputs were calibrated)."""

    @property
    def graded(self) -> bool:
        return bool(self.correct_cols)

    def col(self, text_field: str, name: str) -> str:
        return self.fields[text_field] + name

    def outcome(self, correct_field: str) -> tuple[np.ndarray, np.ndarray]:
        """(graded, correct) per row; ``correct`` is False where the row was not graded."""
        v = self.table[self.correct_cols[correct_field]].astype("boolean")
        return v.notna().to_numpy(), v.fillna(False).to_numpy(dtype=bool)

    def outside(self, text_field: str) -> np.ndarray:
        """Per row: outside the corpus (the annotation's calibration); all False for annotations
        made before it was computed."""
        col = self.col(text_field, "outside")
        if col not in self.table:
            return np.zeros(len(self.table), dtype=bool)
        return self.table[col].astype("boolean").fillna(False).to_numpy(dtype=bool)

    def clusters_at(self, text_field: str, depth: int) -> np.ndarray:
        """Each output's deepest cluster at or above ``depth`` (an output whose path ends above
        ``depth`` counts in its leaf, as in the statistics), "" where it has none."""
        labels = np.full(len(self.table), "", dtype=object)
        for d in self.depths(text_field):
            if d > depth:
                break
            lab = self.table[self.col(text_field, f"cluster_depth_{d}")].fillna("").astype(str).to_numpy()
            labels = np.where(lab != "", lab, labels)
        return labels

    def depths(self, text_field: str) -> list[int]:
        head = self.fields[text_field] + "cluster_depth_"
        return sorted(int(c[len(head):]) for c in self.table.columns if c.startswith(head) and c[len(head):].isdigit())

    def stats(self, text_field: str, correct_field: str, depth: int) -> dict | None:
        """The analyze_clusters result of this pair at ``depth``, if analysis.json has one."""
        for e in self.analyses:
            if e.get("text_field") == text_field and e.get("correct_field") == correct_field:
                res = (e.get("depths") or {}).get(f"depth_{depth}")
                return res if isinstance(res, dict) and "clusters" in res else None
        return None


def _alias(name: str) -> str:
    return name.replace(".", "_")


def read_annotations(path: Path, table: pd.DataFrame, analysis: dict) -> Annotations:
    """Interpret an annotated table and its analysis.json: which text fields (column prefixes)
    and correctness columns it holds."""
    prefixes = sorted({(m["field"] or "") for c in table.columns if (m := _CLUSTER_COL.match(c))})
    text_fields = list(analysis.get("text_fields") or [])
    if prefixes == [""]:
        fields = {text_fields[0] if len(text_fields) == 1 else "text": ""}
    else:
        by_alias = {_alias(f): f for f in text_fields}
        order = {p: k for k, p in enumerate(map(_alias, text_fields))}  # as given to the annotator
        fields = {by_alias.get(p, p): p + "." for p in sorted(prefixes, key=lambda p: (order.get(p, len(order)), p)) if p}
    correct_fields = list(analysis.get("correct_fields") or [])
    cols = {}
    if len(correct_fields) == 1 and "correct" in table.columns:
        cols[correct_fields[0]] = "correct"
    else:
        cols = {f: f"correct.{_alias(f)}" for f in correct_fields if f"correct.{_alias(f)}" in table.columns}
    if not cols and "correct" in table.columns:
        cols["correct"] = "correct"
    return Annotations(path, table, list(analysis.get("analyses") or []), fields, cols,
                       analysis.get("outside_percentile"))


# --- nodes ---------------------------------------------------------------------------------------

def display_names(tree: ClusterTree, names: dict[str, str]) -> dict[str, str]:
    """Every node's label: its name, or its id where it has none (the root is "corpus")."""
    return {nid: ("corpus" if nid == ROOT else names.get(nid) or nid) for nid in tree.nodes}


def node_errors(clusters_by_depth: dict[int, np.ndarray], graded: np.ndarray, correct: np.ndarray) -> pd.DataFrame:
    """Per node: graded model outputs placed in it (``n_outputs``), how many were wrong, the error rate.

    ``clusters_by_depth[d]`` holds each output's node id at depth d ("" below its leaf)."""
    graded = np.asarray(graded, dtype=bool)
    wrong = ~np.asarray(correct, dtype=bool)[graded]
    rows = [{"id": ROOT, "n_outputs": len(wrong), "errors": int(wrong.sum())}]
    for d, labels in sorted(clusters_by_depth.items()):
        labels = np.asarray(labels).astype(str)[graded]
        for nid in sorted(set(labels.tolist()) - {"", NOISE}):
            m = labels == nid
            rows.append({"id": nid, "n_outputs": int(m.sum()), "errors": int(wrong[m].sum())})
    df = pd.DataFrame(rows).drop_duplicates("id")
    df["error_rate"] = np.where(df["n_outputs"] > 0, df["errors"] / df["n_outputs"].clip(lower=1), np.nan)
    return df.set_index("id")


def node_table(tree: ClusterTree, names: dict[str, str], descriptions: dict[str, str] | None = None,
               errors: pd.DataFrame | None = None, stability: dict[str, float] | None = None,
               stages: dict[str, dict[str, float]] | None = None) -> pd.DataFrame:
    """One row per node (root first, then breadth first): id, name, parent, depth, size, noise,
    noise_share, coherence, leaf_reason, description; with ``errors``, n_outputs/errors/error_rate;
    with ``stability`` (cluster_ensemble.py), its per-node stability; with ``stages`` (stage →
    node → share, :func:`~corpus_proximity.analysis.contamination_outcomes.stage_shares`), a
    ``stage_share.<stage>`` column per corpus stage."""
    labels = display_names(tree, names)
    order = sorted(tree.nodes, key=lambda i: (tree.nodes[i].depth, [int(p) for p in i.split(".")] if i != ROOT else []))
    rows = []
    for nid in order:
        n = tree.nodes[nid]
        rows.append({"id": nid, "name": labels[nid], "parent": n.parent or "", "depth": n.depth, "size": n.size,
                     "noise": int(len(n.noise)), "noise_share": len(n.noise) / n.size if n.size else 0.0,
                     "coherence": np.nan if n.coherence is None else float(n.coherence),
                     "children": len(n.children), "leaf_reason": n.leaf_reason or "",
                     "description": (descriptions or {}).get(nid, "")})
        if stability is not None:
            rows[-1]["stability"] = float(stability.get(nid, np.nan) if nid != ROOT else np.nan)
        for stage, share in (stages or {}).items():
            rows[-1][STAGE_SHARE + stage] = float(share.get(nid, np.nan))
    return with_errors(pd.DataFrame(rows), errors)


def with_errors(table: pd.DataFrame, errors: pd.DataFrame | None) -> pd.DataFrame:
    """``table`` with the n_outputs / errors / error_rate columns of ``errors`` (replacing any)."""
    df = table.drop(columns=[c for c in ("n_outputs", "errors", "error_rate") if c in table])
    if errors is None:
        return df
    df = df.join(errors[["n_outputs", "errors", "error_rate"]], on="id")
    df["n_outputs"] = df["n_outputs"].fillna(0).astype(int)
    df["errors"] = df["errors"].fillna(0).astype(int)
    return df


def filter_nodes(table: pd.DataFrame, max_depth: int | None = None, min_size: int = 0, search: str = "") -> pd.DataFrame:
    """Nodes down to ``max_depth`` with at least ``min_size`` members whose id, name or description
    contains ``search`` (case-insensitive), plus their ancestors so the tree stays connected."""
    keep = table["size"] >= min_size
    if max_depth is not None:
        keep &= table["depth"] <= max_depth
    if search.strip():
        s = search.strip().lower()
        hit = (table["id"].str.lower().str.contains(s, regex=False) | table["name"].str.lower().str.contains(s, regex=False)
               | table["description"].str.lower().str.contains(s, regex=False))
        keep &= hit
    wanted = set(table.loc[keep, "id"])
    parent = dict(zip(table["id"], table["parent"]))
    for nid in list(wanted):
        p = parent.get(nid)
        while p:
            wanted.add(p)
            p = parent.get(p)
    wanted.add(ROOT)
    return table[table["id"].isin(wanted)]


def hover_samples(tree: ClusterTree, texts: list[str], k: int, chars: int) -> dict[str, list[str]]:
    """Up to ``k`` member texts nearest each node's centroid (the tree's own samples), clipped."""
    return {nid: [clip(texts[i], chars) for i in n.sample_indices[:k]] for nid, n in tree.nodes.items()}


def clip(text: str, chars: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= chars else text[:chars].rsplit(" ", 1)[0] + " …"


def _wrap(text: str, width: int = 90) -> str:
    return "<br>".join(hover(line) for line in textwrap.wrap(text, width)) or "&nbsp;"


def node_colours(table: pd.DataFrame, colour_by: str) -> list[str]:
    """One CSS colour per row of ``table`` for ``colour_by`` (a key of COLOUR_BY); n/a is light grey."""
    col, scale, _ = colour_spec(table, colour_by)
    if col == "depth":
        return [DEPTH_COLOURS[(d + 1) % len(DEPTH_COLOURS)] for d in table["depth"]]
    vals = table[col].to_numpy(dtype=float) if col in table else np.full(len(table), np.nan)
    if col == "stability":
        lo, hi = 0.0, 1.0
    elif col == "coherence":
        lo, hi = -0.1, 0.5  # silhouettes of real text clusters live here; fixed so colours compare across trees
    elif col == "error_rate" or col.startswith(STAGE_SHARE):  # diverging around the root's value, symmetric
        centre = float(table.loc[table["id"] == ROOT, col].iloc[0]) if (table["id"] == ROOT).any() else float(np.nanmean(vals))
        span = max(float(np.nanmax(np.abs(vals - centre))) if np.isfinite(vals).any() else 0.0, 1e-9)
        lo, hi = centre - span, centre + span
    else:
        lo, hi = 0.0, max(float(np.nanmax(vals)) if np.isfinite(vals).any() else 1.0, 1e-9)
    out = []
    for v in vals:
        out.append(NA_COLOUR if not np.isfinite(v) else sample_colorscale(scale, [min(max((v - lo) / (hi - lo), 0), 1)])[0])
    return out


def tree_figure(table: pd.DataFrame, samples: dict[str, list[str]], kind: str = "sunburst",
                colour_by: str = "depth", switches: bool = False, height: int = 720, title_suffix: str = "") -> go.Figure:
    """The named tree as a sunburst / treemap / icicle; labels are name and size, hover shows the
    node's statistics and sample texts. ``switches`` adds dropdowns to change kind and colour in
    the browser (for the standalone report); ``title_suffix`` (e.g. the model shown) follows every title."""
    if kind not in TREE_KINDS:
        raise ValueError(f"kind must be one of {TREE_KINDS}")
    colour_keys = colour_options(table)
    stage_cols = [c for c in table.columns if c.startswith(STAGE_SHARE)]
    hovers = []
    for r in table.itertuples():
        lines = [f"<b>{hover(r.id)}  {hover(r.name)}</b>" if r.id != ROOT else "<b>corpus</b>",
                 f"n = {r.size}" + (f" · noise {r.noise} ({r.noise_share:.0%})" if r.noise else "")
                 + ("" if np.isnan(r.coherence) else f" · coherence {r.coherence:.2f}")
                 + ("" if not np.isfinite(getattr(r, "stability", np.nan)) else f" · stability {r.stability:.2f}")]
        if "error_rate" in table and getattr(r, "n_outputs", 0):
            lines.append(f"model outputs here: {r.n_outputs}, wrong {r.errors} ({r.error_rate:.0%})")
        if stage_cols:
            lines.append("stages: " + " · ".join(f"{hover(c[len(STAGE_SHARE):])} {table.at[r.Index, c]:.0%}"
                                                 for c in stage_cols if np.isfinite(table.at[r.Index, c])))
        lines += ["— " + _wrap(s) for s in samples.get(r.id, [])]
        hovers.append("<br>".join(lines))
    trace = dict(type=kind, ids=table["id"].tolist(), labels=[hover(n) for n in table["name"]],
                 parents=[p if i != ROOT else "" for i, p in zip(table["id"], table["parent"])],
                 values=table["size"].tolist(), branchvalues="total", hovertext=hovers, hoverinfo="text",
                 texttemplate="%{label}<br>n=%{value}", marker=dict(colors=node_colours(table, colour_by)),
                 maxdepth=-1)
    fig = go.Figure(trace)
    fig.update_layout(margin=dict(t=60, l=5, r=5, b=5), height=height,
                      title=dict(text=hover(colour_spec(table, colour_by)[2] + title_suffix), font=dict(size=13),
                                 x=0.5))
    if switches:
        kinds = [dict(label=k, method="restyle", args=[{"type": k}]) for k in TREE_KINDS]
        colours = [dict(label=hover(f"colour: {c}"), method="update",
                        args=[{"marker.colors": [node_colours(table, c)]},
                              {"title.text": hover(colour_spec(table, c)[2] + title_suffix)}])
                   for c in colour_keys]
        fig.update_layout(updatemenus=[
            dict(buttons=kinds, x=0.0, y=1.08, xanchor="left", yanchor="top", active=TREE_KINDS.index(kind)),
            dict(buttons=colours, x=0.16, y=1.08, xanchor="left", yanchor="top",
                 active=colour_keys.index(colour_by) if colour_by in colour_keys else 0)])
    return fig


# --- the 2-D map ---------------------------------------------------------------------------------

def map_figure(coords: np.ndarray, shown: np.ndarray, top_labels: np.ndarray, names: dict[str, str],
               texts: list[str], preview_chars: int = 160, outputs: pd.DataFrame | None = None,
               note: str = "", height: int = 700) -> go.Figure:
    """Chunks (rows ``shown``) at their 2-D coordinates, one colour per top-level cluster, noise in
    grey; ``outputs`` (columns x, y, label, correct or None) are overlaid as markers."""
    palette = qualitative.Dark24 + qualitative.Light24
    labels = np.asarray(top_labels).astype(str)[shown]
    Scatter = go.Scattergl if len(shown) > 5000 else go.Scatter
    fig = go.Figure()
    groups = sorted(set(labels.tolist()) - {NOISE, ""}, key=lambda s: int(s) if s.isdigit() else 1 << 30)
    for k, g in enumerate(groups + [NOISE]):
        rows = shown[labels == g] if g != NOISE else shown[(labels == NOISE) | (labels == "")]
        if not len(rows):
            continue
        name = hover(f"{g} {names.get(g, '')}".strip()) if g != NOISE else "noise (no top-level cluster)"
        fig.add_trace(Scatter(
            x=coords[rows, 0], y=coords[rows, 1], mode="markers", name=name,
            marker=dict(size=5, color=NOISE_COLOUR if g == NOISE else palette[k % len(palette)],
                        opacity=0.5 if g == NOISE else 0.8),
            hovertext=[f"<b>{name}</b><br>{_wrap(clip(texts[i], preview_chars), 70)}" for i in rows],
            hoverinfo="text"))
    if outputs is not None and len(outputs):
        c = outputs["correct"]
        wrong, right = c.map(lambda v: v is False).to_numpy(), c.map(lambda v: v is True).to_numpy()
        for title, m, sym, colour in (("model output: wrong", wrong, "x", "#d62728"),
                                      ("model output: right", right, "circle-open", "#2ca02c"),
                                      ("model output (not graded)", ~(wrong | right), "diamond-open", "#222222")):
            sub = outputs[m]
            if len(sub):
                fig.add_trace(go.Scatter(x=sub["x"], y=sub["y"], mode="markers", name=f"{title} ({len(sub)})",
                                         marker=dict(symbol=sym, size=7, color=colour, opacity=0.7,
                                                     line=dict(width=1.2, color=colour)),
                                         hovertext=[_wrap(clip(t, preview_chars), 70) for t in sub["label"]],
                                         hoverinfo="text"))
    fig.update_layout(height=height, margin=dict(t=50, l=5, r=5, b=5), legend=dict(itemsizing="constant"),
                      title=dict(text=note, font=dict(size=13), x=0.5),
                      xaxis=dict(visible=False), yaxis=dict(visible=False))
    return fig


def output_positions(ann: Annotations, text_field: str, correct_field: str | None, chunk_row: dict[str, int],
                     coords: np.ndarray) -> pd.DataFrame:
    """Each annotated output placed at the 2-D coordinates of its nearest corpus chunk (the
    annotation's ``nearest_chunk``): x, y, label (the field's text where the table has it),
    correct (True / False / None for ungraded or without ``correct_field``)."""
    t = ann.table
    rows = t[ann.col(text_field, "nearest_chunk")].map(chunk_row)
    ok = rows.notna().to_numpy()
    idx = rows[ok].astype(int).to_numpy()
    label_col = text_field if text_field in t.columns else ann.col(text_field, "nearest_chunk")
    correct = np.full(int(ok.sum()), None, dtype=object)
    if correct_field:
        graded, right = ann.outcome(correct_field)
        correct = np.array([bool(r) if g else None for g, r in zip(graded[ok], right[ok])], dtype=object)
    return pd.DataFrame({"x": coords[idx, 0], "y": coords[idx, 1],
                         "label": t.loc[ok, label_col].astype(str).to_numpy(), "correct": correct})


# --- error views ---------------------------------------------------------------------------------

def stats_table(res: dict, names: dict[str, str]) -> pd.DataFrame:
    """analyze_clusters' per-cluster rows as a table (largest error count first)."""
    df = pd.DataFrame(res["clusters"])
    if df.empty:
        return df
    df.insert(1, "name", [names.get(c, c) for c in df["cluster"]])
    return df.sort_values(["errors", "n"], ascending=False)[
        ["cluster", "name", "n", "errors", "error_rate", "ci_low", "ci_high", "rate_elsewhere", "test", "p", "q"]]


OUTSIDE = "outside"
ERRORS_CHART_NOTE = ("each output counts in its deepest cluster at or above the chosen depth (an output whose "
                     "path ends higher stays in its leaf); outputs outside the corpus are their own row")


def errors_by_cluster(ann: Annotations, text_field: str, correct_field: str, depth: int,
                      names: dict[str, str]) -> pd.DataFrame:
    """Which clusters hold most errors: per cluster (see ERRORS_CHART_NOTE; noise as "-1", outputs
    outside the corpus as "outside"), graded outputs, errors, error rate and the cluster's share of
    all errors, most errors first. Every graded output is counted once, whatever ``depth``."""
    graded, right = ann.outcome(correct_field)
    labels = ann.clusters_at(text_field, depth)
    labels = np.where(ann.outside(text_field), OUTSIDE, labels)
    keep = graded & (labels != "")
    df = pd.DataFrame({"cluster": labels[keep], "wrong": ~right[keep]})
    g = df.groupby("cluster")["wrong"].agg(n="size", errors="sum").reset_index()
    g["errors"] = g["errors"].astype(int)
    g["error_rate"] = g["errors"] / g["n"]
    g["share_of_errors"] = g["errors"] / max(int(g["errors"].sum()), 1)
    g.insert(1, "name", [names.get(c, {NOISE: "noise", OUTSIDE: "outside the corpus"}.get(c, c)) for c in g["cluster"]])
    return g.sort_values(["errors", "n"], ascending=False).reset_index(drop=True)


def errors_figure(errs: pd.DataFrame, overall_rate: float, title: str, top: int = 25) -> go.Figure:
    """Horizontal bars of errors per cluster, coloured on a diverging scale centred on the overall
    error rate (blue = fewer errors than overall, red = more; symmetric, so equal colours mean equal
    distances from the overall rate)."""
    e = errs.head(top)
    span = max(float(np.nanmax(np.abs(e["error_rate"] - overall_rate))) if len(e) else 0.0, 0.05)
    fig = go.Figure(go.Bar(
        x=e["errors"], y=[hover(f"{c} {nm}") for c, nm in zip(e["cluster"], e["name"])], orientation="h",
        marker=dict(color=e["error_rate"], colorscale="RdBu_r", cmin=overall_rate - span, cmax=overall_rate + span,
                    colorbar=dict(title="error rate", tickformat=".0%")),
        hovertext=[f"{hover(str(c))} {hover(str(nm))}: {n} outputs, {k} wrong ({r:.0%})"
                   for c, nm, n, k, r in zip(e["cluster"], e["name"], e["n"], e["errors"], e["error_rate"])],
        hoverinfo="text"))
    fig.update_layout(title=dict(text=hover(title), font=dict(size=13)), yaxis=dict(autorange="reversed"),
                      height=max(260, 24 * len(e) + 120), margin=dict(t=50, b=10))
    return fig


def outside_by_model(ann: Annotations, text_field: str) -> pd.DataFrame:
    """Per correctness field (model): graded outputs, how many are outside the corpus, their share,
    and the error rate outside against inside."""
    out = ann.outside(text_field)
    rows = []
    for cf in ann.correct_cols or {"(not graded)": None}:
        graded, right = ann.outcome(cf) if cf in ann.correct_cols else (np.ones(len(out), bool), np.ones(len(out), bool))
        o, i = graded & out, graded & ~out
        rows.append({"model": cf, "n": int(graded.sum()), "outside": int(o.sum()),
                     "outside_share": o.sum() / max(int(graded.sum()), 1),
                     "error_rate_outside": float((~right[o]).mean()) if o.any() else np.nan,
                     "error_rate_inside": float((~right[i]).mean()) if i.any() else np.nan})
    return pd.DataFrame(rows)


def cluster_agreement(ann: Annotations, field_a: str, field_b: str, depth: int,
                      correct_field: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Do the outputs of ``field_b`` (e.g. model answers) fall in other clusters than those of
    ``field_a`` (e.g. the question or the reference answer)? Returns the a × b cross table at
    ``depth`` and the share landing in the same cluster, overall and for right / wrong outputs."""
    a = ann.table[ann.col(field_a, f"cluster_depth_{depth}")].astype(str)
    b = ann.table[ann.col(field_b, f"cluster_depth_{depth}")].astype(str)
    cross = pd.crosstab(a.rename(field_a), b.rename(field_b))
    same = (a == b).to_numpy()
    groups = {"all": np.ones(len(a), dtype=bool)}
    if correct_field:
        graded, right = ann.outcome(correct_field)
        groups.update({"right": graded & right, "wrong": graded & ~right})
    summary = pd.DataFrame([{"outputs": g, "n": int(m.sum()),
                             "same_cluster": float(same[m].mean()) if m.any() else np.nan} for g, m in groups.items()])
    return cross, summary


def distance_by_correctness(ann: Annotations, text_field: str, correct_field: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Are wrong outputs farther from every cluster? Per graded output its cosine distance to the
    nearest top-level centroid (``distance_depth_0``) and to the nearest chunk, right / wrong, with
    a one-sided Mann–Whitney U test (wrong farther than right)."""
    graded, right = ann.outcome(correct_field)
    t = ann.table[graded]
    d = pd.DataFrame({"to_cluster": t[ann.col(text_field, "distance_depth_0")].astype(float).to_numpy(),
                      "to_nearest_chunk": t[ann.col(text_field, "nearest_chunk_distance")].astype(float).to_numpy(),
                      "outcome": np.where(right[graded], "right", "wrong")})
    rows = []
    for col in ("to_cluster", "to_nearest_chunk"):
        w, r = d.loc[d.outcome == "wrong", col].dropna(), d.loc[d.outcome == "right", col].dropna()
        p = float(stats.mannwhitneyu(w, r, alternative="greater").pvalue) if len(w) and len(r) else np.nan
        rows.append({"distance": col, "median_wrong": w.median(), "median_right": r.median(),
                     "n_wrong": len(w), "n_right": len(r), "p_wrong_farther": p})
    return d, pd.DataFrame(rows)


# --- exports ------------------------------------------------------------------------------------

def items_records(rows: np.ndarray, chunk_ids: list[str], doc_ids: list[str], texts: list[str], coords: np.ndarray,
                  level_labels: list[np.ndarray], preview_chars: int) -> list[dict]:
    """items.json: one record per chunk in ``rows``: id, doc_id, x, y, text preview and its cluster
    at every level (``cluster_level_{d}``: node id, "-1" for noise, null below its leaf)."""
    out = []
    for i in rows:
        rec = {"id": chunk_ids[i], "doc_id": doc_ids[i], "x": round(float(coords[i, 0]), 4),
               "y": round(float(coords[i, 1]), 4), "text": clip(texts[i], preview_chars)}
        for d, lab in enumerate(level_labels):
            rec[f"cluster_level_{d}"] = lab[i] or None
        out.append(rec)
    return out


def clusters_records(table: pd.DataFrame) -> list[dict]:
    """clusters.json: every node but the root: id, parent (null at the top level), level, size,
    n_noise, coherence, name, description."""
    out = []
    for r in table[table["id"] != ROOT].itertuples():
        out.append({"id": r.id, "parent": None if r.parent == ROOT else r.parent, "level": int(r.depth),
                    "size": int(r.size), "n_noise": int(r.noise),
                    "coherence": None if np.isnan(r.coherence) else round(float(r.coherence), 4),
                    "name": r.name, "description": r.description or None})
    return out
