"""The standalone HTML report of a config's named tree and 2-D map (and, where model outputs were
annotated, where the errors sit), and ``items.json`` / ``clusters.json`` for external viewers.
``dashboard.py`` shows the same :class:`~corpus_proximity.explore.data.Exploration` interactively."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from corpus_proximity.cache import atomic_write_json
from corpus_proximity.explore import views as ex_
from corpus_proximity.explore.contamination_view import contamination_section
from corpus_proximity.explore.data import Exploration, map_outputs, top_labels

CSS = """body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1200px;color:#222}
h1{margin-bottom:4px} .meta{color:#555} .note{background:#fff6d6;padding:6px 10px;border-left:4px solid #e0b000}
table{border-collapse:collapse;font-size:13px;margin:8px 0 18px} td,th{border-bottom:1px solid #ddd;padding:3px 8px;text-align:right}
td:nth-child(2),th:nth-child(2){text-align:left} .summary{font-weight:600}"""


def _html_table(df: pd.DataFrame, floats: dict[str, str]) -> str:
    fmt = {c: (lambda f: (lambda x: "" if pd.isna(x) else f.format(x)))(f) for c, f in floats.items() if c in df}
    return df.to_html(index=False, escape=True, formatters=fmt, border=0)


def stats_section(ex: Exploration) -> str:
    ann = ex.annotations
    if ann is None:
        return ""
    parts = [f"<h2>Model outputs: where the errors are</h2><p class=meta>{html.escape(str(ann.path))}: "
             f"{len(ann.table)} outputs; text fields {html.escape(', '.join(ann.fields))}; graded by "
             f"{html.escape(', '.join(ann.correct_cols) or 'nothing')}. On the map, outputs of "
             f"{html.escape(str(ex.field))} sit at their nearest corpus chunk.</p>"]
    for e in ann.analyses:
        for d, res in sorted((e.get("depths") or {}).items()):
            if not isinstance(res, dict) or "clusters" not in res:
                continue
            parts.append(f"<h3>{html.escape(str(e.get('text_field')))} · graded by {html.escape(str(e.get('correct_field')))}"
                         f" · {html.escape(d.replace('_', ' '))}</h3><p class=summary>{html.escape(res['summary'])}</p>")
            parts += [f"<p class=note>{html.escape(w)}</p>" for w in res.get("warnings", [])]
            t = ex_.stats_table(res, ex.names)
            if len(t):
                parts.append(_html_table(t, {"error_rate": "{:.1%}", "ci_low": "{:.1%}", "ci_high": "{:.1%}",
                                             "rate_elsewhere": "{:.1%}", "p": "{:.3g}", "q": "{:.3g}"}))
    if len(parts) == 1:
        parts.append("<p class=note>The outputs were not graded: rerun annotate_with_clusters.py with "
                     "--correct-field FIELD to test where errors concentrate.</p>")
    return "\n".join(parts)


def render_report(ex: Exploration, tree_kind: str = "sunburst") -> str:
    """The whole report as one HTML page with plotly.js inlined (opens offline)."""
    tree, t = ex.tree, ex.table
    colour = "error rate" if "error_rate" in t else "coherence"
    tree_fig = ex_.tree_figure(t, ex.samples, tree_kind, colour, switches=True)
    outputs = map_outputs(ex)
    map_fig = ex_.map_figure(ex.coords, ex.shown, top_labels(ex), ex.names, ex.texts, ex.cfg.visualization.preview_chars,
                             outputs, note=f"map: {ex.map_note}" + (f"; model outputs ({ex.field}) at their nearest chunk"
                                                                     if outputs is not None else ""))
    top = t[t["depth"] == 0][[c for c in ("id", "name", "size", "noise", "coherence", "n_outputs", "error_rate") if c in t]]
    root = tree.root
    body = [f"<h1>Corpus map: {html.escape(ex.cfg.name)}</h1>",
            f"<p class=meta>{tree.n_points} chunks · {tree.n_depths} depths · {len(tree.nodes) - 1} nodes · "
            f"{len(tree.leaves())} leaves · {len(root.noise)} noise at the root · tree {html.escape(ex.tree_dir.name)}</p>",
            *[f"<p class=note>{html.escape(n)}</p>" for n in ex.notes],
            "<h2>The tree</h2><p class=meta>Click a node to zoom in; the menus switch the layout and the colouring. "
            "Hover: statistics and the texts nearest the node's centroid.</p>",
            tree_fig.to_html(full_html=False, include_plotlyjs=True, div_id="tree"),
            "<h2>Top-level clusters</h2>",
            _html_table(top, {"coherence": "{:.2f}", "error_rate": "{:.1%}"}),
            "<h2>Map of the chunks</h2>",
            map_fig.to_html(full_html=False, include_plotlyjs=False, div_id="map"),
            stats_section(ex),
            contamination_section(ex.cfg.outputs / "contamination")]
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>corpus-proximity: {html.escape(ex.cfg.name)}"
            f"</title><style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def export_viewer_files(ex: Exploration, out_dir: Path) -> tuple[Path, Path]:
    """items.json (the mapped chunks) and clusters.json (every node) for external viewers."""
    levels = [ex.tree.labels_at_depth(d) for d in range(ex.tree.n_depths)]
    items = ex_.items_records(ex.shown, ex.chunk_ids, ex.doc_ids, ex.texts, ex.coords, levels,
                              ex.cfg.visualization.preview_chars)
    atomic_write_json(out_dir / "items.json", items)
    atomic_write_json(out_dir / "clusters.json", ex_.clusters_records(ex.table))
    return out_dir / "items.json", out_dir / "clusters.json"
