"""The dashboard's Streamlit pieces: the sidebar filters, the node drill-down and the error views.
``dashboard.py`` (``streamlit run dashboard.py -- CONFIG``) lays them out in tabs; every figure and
table they show comes from the pure functions of :mod:`corpus_proximity.explore.views`."""

from __future__ import annotations

import numpy as np
import plotly.express as px
import streamlit as st

from corpus_proximity.explore import views as ex_
from corpus_proximity.explore.data import Exploration
from corpus_proximity.tree.tree import ROOT
from corpus_proximity.untrusted import markdown


def sidebar(ex: Exploration) -> dict:
    sb = st.sidebar
    sb.header("Filters")
    deepest = max(ex.tree.n_depths - 1, 0)
    opts = {"max_depth": sb.slider("depth", 0, deepest, deepest, key="depth") if deepest else 0,
            "min_size": sb.number_input("min size", 0, ex.tree.root.size, 0, step=5, key="min_size"),
            "search": sb.text_input("search (id, name, keywords)", key="search"),
            "kind": sb.radio("tree layout", ex_.TREE_KINDS, horizontal=True, key="kind")}
    ann = ex.annotations
    if ann is not None:
        sb.header("Model outputs")
        opts["field"] = sb.selectbox("text field", list(ann.fields), key="field")
        opts["correct"] = (sb.selectbox("model (graded by)", list(ann.correct_cols), key="correct")
                           if ann.graded else None)
    colours = [c for c in ex_.colour_options(ex.table) if c != "error rate" or opts.get("correct")]
    opts["colour"] = sb.selectbox("colour by", colours, index=colours.index("coherence"), key="colour")
    return opts


def node_view(ex: Exploration, table, nid: str) -> None:
    node, row = ex.tree.nodes[nid], table.set_index("id").loc[nid]
    # names and descriptions are LLM or corpus text: escaped Markdown, never rendered as Markdown/HTML
    st.markdown(f"### {nid} · {markdown(row['name'])}")
    path, p = [], node.parent
    while p and p != ROOT:
        path.append(f"{p} {markdown(ex.names[p])}")
        p = ex.tree.nodes[p].parent
    if path:
        st.caption("under: " + " → ".join(reversed(path)))
    if row["description"]:
        st.markdown(f"**Description:** {markdown(row['description'])}")
    coh = "–" if np.isnan(row["coherence"]) else f"{row['coherence']:.2f}"
    line = (f"size **{node.size}** · noise **{len(node.noise)}** ({row['noise_share']:.0%}) · coherence **{coh}** · "
            + (f"leaf ({node.leaf_reason})" if node.leaf_reason else f"split by {node.method} into {len(node.children)}"))
    if "error_rate" in table and row["n_outputs"]:
        line += f" · model outputs **{row['n_outputs']}**, wrong **{row['errors']}** ({row['error_rate']:.0%})"
    st.markdown(line)
    if node.children:
        st.markdown("**Children:** " + " · ".join(f"`{c}` {markdown(ex.names[c])} ({ex.tree.nodes[c].size})"
                                             for c in node.children))
    st.markdown("**Samples** (nearest the centroid)")
    for i in node.sample_indices[:5]:
        st.text(ex_.clip(ex.texts[i], 500))
    if len(node.noise):
        with st.expander(f"Noise: {len(node.noise)} chunks left unassigned when this node was split"):
            rng = np.random.default_rng(ex.cfg.visualization.seed)
            for i in rng.choice(node.noise, min(5, len(node.noise)), replace=False):
                st.text(ex_.clip(ex.texts[int(i)], 300))


def _outside_percentile(ann) -> str:
    return f"percentile {ann.outside_percentile:g}" if ann.outside_percentile is not None else "calibration"


def error_views(ex: Exploration, opts: dict) -> None:
    ann, tf, cf = ex.annotations, opts["field"], opts["correct"]
    if cf is None:
        st.info("These outputs were not graded: rerun `annotate_with_clusters.py` with `--correct-field FIELD` "
                "to see where errors sit.")
        return
    depths = ann.depths(tf)
    depth = st.selectbox("depth", depths, key="err_depth")
    st.subheader(f"Which clusters hold most errors? Model: {markdown(str(cf))}")
    outside = ex_.outside_by_model(ann, tf)
    row = outside[outside["model"] == cf].iloc[0]
    st.markdown(f"Outside the corpus (nearest chunk farther than the corpus's own "
                f"{_outside_percentile(ann)}): **{row['outside']}** of {row['n']} outputs of {markdown(str(cf))} "
                f"({row['outside_share']:.0%}); they are kept out of the per-cluster tests.")
    res = ann.stats(tf, cf, depth)
    if res:
        st.markdown(f"**{markdown(res['summary'])}**")
        for w in res.get("warnings", []):
            st.caption(markdown(w))
    errs = ex_.errors_by_cluster(ann, tf, cf, depth, ex.names)
    overall = float(errs["errors"].sum() / max(int(errs["n"].sum()), 1))
    st.plotly_chart(ex_.errors_figure(errs, overall, f"errors by cluster at depth {depth}, model {cf}: colour = "
                                                     f"error rate around the overall {overall:.0%}"), key="err_bar")
    st.caption(ex_.ERRORS_CHART_NOTE)
    st.dataframe(outside, hide_index=True, key="outside_table")
    st.dataframe(ex_.stats_table(res, ex.names) if res else errs, hide_index=True, key="err_table")

    st.subheader("Do model answers come from other clusters than the ground truth?")
    fields = list(ann.fields)
    if len(fields) < 2:
        st.info("Only one text field was annotated. Annotate the reference and the model's answer together "
                "(`--text-field question --text-field answer_field`) to compare their clusters.")
    else:
        a = st.selectbox("reference field (question / ground truth)", fields, index=0, key="agree_a")
        b = st.selectbox("model answer field", fields, index=1, key="agree_b")
        cross, summary = ex_.cluster_agreement(ann, a, b, depth, cf)
        st.dataframe(summary, hide_index=True, key="agree_summary")
        st.plotly_chart(px.imshow(cross, text_auto=True, aspect="auto", color_continuous_scale="Blues"), key="agree_map")

    st.subheader("Are wrong outputs farther from every cluster?")
    dist, tests = ex_.distance_by_correctness(ann, tf, cf)
    st.dataframe(tests, hide_index=True, key="dist_table")
    st.plotly_chart(px.box(dist.melt(id_vars="outcome", var_name="cosine distance"), x="cosine distance", y="value",
                           color="outcome", points=False), key="dist_box")
