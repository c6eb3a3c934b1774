"""The standalone HTML report of a config's named tree and 2-D map (and, where model outputs were
annotated, where the errors sit), and ``items.json`` / ``clusters.json`` for external viewers.
``dashboard.py`` shows the same :class:`~corpus_proximity.explore.data.Exploration` interactively."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd
from plotly.offline import get_plotlyjs

from corpus_proximity.cache import atomic_write_json
from corpus_proximity.explore import views as ex_
from corpus_proximity.explore.contamination_view import contamination_section, stages_html
from corpus_proximity.explore.data import Exploration, map_outputs, output_errors, top_labels

CSS = """body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1200px;color:#222}
h1{margin-bottom:4px} .meta{color:#555} .note{background:#fff6d6;padding:6px 10px;border-left:4px solid #e0b000}
table{border-collapse:collapse;font-size:13px;margin:8px 0 18px} td,th{border-bottom:1px solid #ddd;padding:3px 8px;text-align:right}
td:nth-child(2),th:nth-child(2){text-align:left} .summary{font-weight:600}"""


def _html_table(df: pd.DataFrame, floats: dict[str, str]) -> str:
    fmt = {c: (lambda f: (lambda x: "" if pd.isna(x) else f.format(x)))(f) for c, f in floats.items() if c in df}
    return df.to_html(index=False, escape=True, formatters=fmt, border=0)


def stats_section(ex: Exploration, model: str | None = None) -> str:
    """The per-depth error statistics of ``model`` (a correctness field; None = every one)."""
    ann = ex.annotations
    if ann is None:
        return ""
    parts = [f"<h2>Model outputs: where the errors are{' · model ' + html.escape(model) if model else ''}</h2>"
             f"<p class=meta>{html.escape(str(ann.path))}: {len(ann.table)} outputs; text fields "
             f"{html.escape(', '.join(ann.fields))}; graded by {html.escape(model or ', '.join(ann.correct_cols) or 'nothing')}. "
             f"On the map, outputs of {html.escape(str(ex.field))} sit at their nearest corpus chunk. Outputs outside "
             f"the corpus are their own row, out of the tests.</p>"]
    for e in ann.analyses:
        if model is not None and e.get("correct_field") != model:
            continue
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


SELECT_JS = """<script>function cpShowModel(k){document.querySelectorAll('.model-view').forEach(function(d){
d.style.display = d.id === 'model-' + k ? 'block' : 'none';});
document.querySelectorAll('#model-' + k + ' .js-plotly-plot').forEach(function(p){Plotly.Plots.resize(p);});}</script>"""


def model_view(ex: Exploration, model: str | None, k: int, tree_kind: str, first: bool) -> str:
    """The tree, top-level table, map and errors chart of one model (correctness field)."""
    ann, field = ex.annotations, ex.field
    t = ex.table if model is None else ex_.with_errors(ex.table, output_errors(ann, field, model))
    who = f" · model {model}" if model else ""
    colour = "error rate" if "error_rate" in t else "coherence"
    tree_fig = ex_.tree_figure(t, ex.samples, tree_kind, colour, switches=True, title_suffix=who)
    outputs = map_outputs(ex, field, model)
    map_fig = ex_.map_figure(ex.coords, ex.shown, top_labels(ex), ex.names, ex.texts, ex.cfg.visualization.preview_chars,
                             outputs, note=f"map: {ex.map_note}" + (f"; model outputs ({field}{who}) at their nearest "
                                                                     f"chunk" if outputs is not None else ""))
    top = t[t["depth"] == 0][[c for c in ("id", "name", "size", "noise", "coherence", "n_outputs", "error_rate") if c in t]]
    body = [f"<div class=model-view id=model-{k} style='display:{'block' if first else 'none'}'>",
            f"<h2>The tree{html.escape(who)}</h2><p class=meta>Click a node to zoom in; the menus switch the layout "
            "and the colouring. Hover: statistics and the texts nearest the node's centroid.</p>",
            tree_fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"tree-{k}"),
            stages_note(ex),
            f"<h2>Top-level clusters{html.escape(who)}</h2>",
            _html_table(top, {"coherence": "{:.2f}", "error_rate": "{:.1%}"})]
    if model is not None:
        errs = ex_.errors_by_cluster(ann, field, model, 0, ex.names)
        overall = float(errs["errors"].sum() / max(int(errs["n"].sum()), 1))
        fig = ex_.errors_figure(errs, overall, f"errors by top-level cluster{who}: colour = error rate around the "
                                               f"overall {overall:.0%}")
        body += [f"<h2>Which clusters hold most errors?{html.escape(who)}</h2>",
                 f"<p class=meta>{html.escape(ex_.ERRORS_CHART_NOTE)}.</p>",
                 fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"errors-{k}")]
    body += [f"<h2>Map of the chunks{html.escape(who)}</h2>",
             map_fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"map-{k}"),
             stats_section(ex, model), "</div>"]
    return "\n".join(body)


def stages_note(ex: Exploration) -> str:
    """Under the tree, where the chunks carry corpus stages: how to colour by one, and the stage × node tests."""
    if ex.stages is None:
        return ""
    return ("<p class=meta>The corpus has stages: the colour menu's <i>stage share</i> entries colour each node by "
            "that stage's share of its chunks. Stage × node, per depth:</p>" + stages_html(ex.stages))


def outside_section(ex: Exploration) -> str:
    ann = ex.annotations
    if ann is None or ex.field is None:
        return ""
    t = ex_.outside_by_model(ann, ex.field)
    p = "" if ann.outside_percentile is None else f" (percentile {ann.outside_percentile:g})"
    return (f"<h2>Outside the corpus</h2><p class=meta>Outputs of {html.escape(ex.field)} whose nearest chunk is "
            f"farther than the corpus's own nearest-chunk distances{html.escape(p)}: no region of the corpus is near "
            f"them, whatever cluster they are placed in. They are counted apart and kept out of the per-cluster "
            f"tests.</p>" + _html_table(t, {"outside_share": "{:.1%}", "error_rate_outside": "{:.1%}",
                                            "error_rate_inside": "{:.1%}"}))


def render_report(ex: Exploration, tree_kind: str = "sunburst") -> str:
    """The whole report as one HTML page with plotly.js inlined (opens offline); with annotated,
    graded outputs, one view per model (correctness field) behind a selector."""
    tree = ex.tree
    root = tree.root
    ann = ex.annotations
    models = list(ann.correct_cols) if ann is not None and ann.graded and ex.field is not None else [None]
    first = models.index(ex.correct_field) if ex.correct_field in models else 0
    options = "".join(f"<option value={k}{' selected' if k == first else ''}>{html.escape(m)}</option>"
                      for k, m in enumerate(models) if m is not None)
    body = [f"<h1>Corpus map: {html.escape(ex.cfg.name)}</h1>",
            f"<p class=meta>{tree.n_points} chunks · {tree.n_depths} depths · {len(tree.nodes) - 1} nodes · "
            f"{len(tree.leaves())} leaves · {len(root.noise)} noise at the root · tree {html.escape(ex.tree_dir.name)}</p>",
            *[f"<p class=note>{html.escape(n)}</p>" for n in ex.notes]]
    if options:
        body.append(f"<p><label for=model-select><b>model</b> (colours, tables, map and statistics below): </label>"
                    f"<select id=model-select onchange='cpShowModel(this.value)'>{options}</select></p>")
    body.append(outside_section(ex))
    body.append(f"<script type='text/javascript'>{get_plotlyjs()}</script>")  # inlined once, before every figure
    body += [model_view(ex, m, k, tree_kind, k == first) for k, m in enumerate(models)]
    body.append(contamination_section(ex.cfg.outputs / "contamination", dict(zip(ex.chunk_ids, ex.texts))))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>corpus-proximity: {html.escape(ex.cfg.name)}"
            f"</title><style>{CSS}</style></head><body>\n" + "\n".join(body) + f"\n{SELECT_JS}</body></html>\n")


def export_viewer_files(ex: Exploration, out_dir: Path) -> tuple[Path, Path]:
    """items.json (the mapped chunks) and clusters.json (every node) for external viewers."""
    levels = [ex.tree.labels_at_depth(d) for d in range(ex.tree.n_depths)]
    items = ex_.items_records(ex.shown, ex.chunk_ids, ex.doc_ids, ex.texts, ex.coords, levels,
                              ex.cfg.visualization.preview_chars)
    atomic_write_json(out_dir / "items.json", items)
    atomic_write_json(out_dir / "clusters.json", ex_.clusters_records(ex.table))
    return out_dir / "items.json", out_dir / "clusters.json"
