"""The exploration dashboard: the named tree, a sortable cluster table, a node drill-down, the 2-D
map and, where model outputs were annotated, where their errors sit.

    streamlit run dashboard.py -- configs/clustering_01_tiny.py [--set SECTION.FIELD=VALUE] [--annotations DIR]

Reads what ``visualize_clusters.load_exploration`` reads (the cached tree, names and 2-D map,
computed on first use when missing); every view is built by the pure functions of
``exploration.py``.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import plotly.express as px
import streamlit as st
from rich.console import Console

import cli
import exploration as ex_
import visualize_clusters as vc
from cluster_tree import ROOT
from config import apply_overrides, load_config
from errors import InputError

USAGE = "streamlit run dashboard.py -- CONFIG [--set SECTION.FIELD=VALUE] [--annotations DIR]"


def parse_args(argv: list[str]):
    p = cli.parser("The exploration dashboard of a config's named tree.")
    p.add_argument("--annotations", default=None, metavar="DIR", help="an annotate_with_clusters.py --out folder")
    return p.parse_args(argv)


@st.cache_resource(show_spinner="Loading the tree, its names and the 2-D map …")
def load(config: str, overrides: tuple[str, ...], annotations: str | None) -> vc.Exploration:
    cfg = apply_overrides(load_config(config), list(overrides))
    return vc.load_exploration(cfg, Path(annotations) if annotations else None, config_arg=config,
                               log=Console(file=io.StringIO()))


def sidebar(ex: vc.Exploration) -> dict:
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
        opts["correct"] = sb.selectbox("graded by", list(ann.correct_cols), key="correct") if ann.graded else None
    colours = [c for c in ex_.colour_options(ex.table) if c != "error rate" or opts.get("correct")]
    opts["colour"] = sb.selectbox("colour by", colours, index=colours.index("coherence"), key="colour")
    return opts


def node_view(ex: vc.Exploration, table, nid: str) -> None:
    node, row = ex.tree.nodes[nid], table.set_index("id").loc[nid]
    st.markdown(f"### {nid} · {row['name']}")
    path, p = [], node.parent
    while p and p != ROOT:
        path.append(f"{p} {ex.names[p]}")
        p = ex.tree.nodes[p].parent
    if path:
        st.caption("under: " + " → ".join(reversed(path)))
    if row["description"]:
        st.markdown(f"**Description:** {row['description']}")
    coh = "–" if np.isnan(row["coherence"]) else f"{row['coherence']:.2f}"
    line = (f"size **{node.size}** · noise **{len(node.noise)}** ({row['noise_share']:.0%}) · coherence **{coh}** · "
            + (f"leaf ({node.leaf_reason})" if node.leaf_reason else f"split by {node.method} into {len(node.children)}"))
    if "error_rate" in table and row["n_outputs"]:
        line += f" · model outputs **{row['n_outputs']}**, wrong **{row['errors']}** ({row['error_rate']:.0%})"
    st.markdown(line)
    if node.children:
        st.markdown("**Children:** " + " · ".join(f"`{c}` {ex.names[c]} ({ex.tree.nodes[c].size})" for c in node.children))
    st.markdown("**Samples** (nearest the centroid)")
    for i in node.sample_indices[:5]:
        st.text(ex_.clip(ex.texts[i], 500))
    if len(node.noise):
        with st.expander(f"Noise: {len(node.noise)} chunks left unassigned when this node was split"):
            rng = np.random.default_rng(ex.cfg.visualization.seed)
            for i in rng.choice(node.noise, min(5, len(node.noise)), replace=False):
                st.text(ex_.clip(ex.texts[int(i)], 300))


def error_views(ex: vc.Exploration, opts: dict) -> None:
    ann, tf, cf = ex.annotations, opts["field"], opts["correct"]
    if cf is None:
        st.info("These outputs were not graded: rerun `annotate_with_clusters.py` with `--correct-field FIELD` "
                "to see where errors sit.")
        return
    depths = ann.depths(tf)
    depth = st.selectbox("depth", depths, key="err_depth")
    st.subheader("Which clusters hold most errors?")
    res = ann.stats(tf, cf, depth)
    if res:
        st.markdown(f"**{res['summary']}**")
        for w in res.get("warnings", []):
            st.caption(w)
    errs = ex_.errors_by_cluster(ann, tf, cf, depth, ex.names)
    fig = px.bar(errs.head(25), x="errors", y=errs.head(25)["cluster"] + " " + errs.head(25)["name"],
                 color="error_rate", color_continuous_scale="Reds", orientation="h", labels={"y": "cluster"})
    fig.update_layout(yaxis=dict(autorange="reversed"), height=420, margin=dict(t=10, b=10))
    st.plotly_chart(fig, key="err_bar")
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


def main() -> None:
    st.set_page_config(page_title="corpus-proximity", layout="wide")
    try:
        args = parse_args(sys.argv[1:])
    except SystemExit:
        st.error(f"usage: {USAGE}")
        st.stop()
    try:
        ex = load(args.config, tuple(args.overrides), args.annotations)
    except InputError as e:
        st.error(str(e))
        st.stop()
    opts = sidebar(ex)
    tree = ex.tree
    st.title(f"Corpus map: {ex.cfg.name}")
    st.caption(f"{tree.n_points} chunks · {tree.n_depths} depths · {len(tree.nodes) - 1} nodes · "
               f"{len(tree.leaves())} leaves · {len(tree.root.noise)} noise at the root · {ex.tree_dir.name}")
    for note in ex.notes:
        st.info(note)
    table = ex.table
    if ex.annotations is not None and opts.get("correct"):
        table = ex_.with_errors(table, vc.output_errors(ex.annotations, opts["field"], opts["correct"]))
    shown = ex_.filter_nodes(table, opts["max_depth"], opts["min_size"], opts["search"])
    tabs = st.tabs(["Tree", "Clusters", "Node", "Map", "Errors"])
    with tabs[0]:
        if len(shown) <= 1:
            st.warning("No node matches the filters.")
        else:
            st.plotly_chart(ex_.tree_figure(shown, ex.samples, opts["kind"], opts["colour"]), key="tree")
    rows = shown[shown["id"] != ROOT]
    with tabs[1]:
        cols = [c for c in ("id", "name", "depth", "size", "noise", "noise_share", "coherence", "n_outputs", "errors",
                            "error_rate", "leaf_reason", "description") if c in rows]
        by = st.selectbox("sort by", cols, index=cols.index("size"), key="sort_by")
        st.dataframe(rows[cols].sort_values(by, ascending=st.toggle("ascending", False, key="asc")),
                     hide_index=True, key="clusters")
    with tabs[2]:
        if len(rows):
            nid = st.selectbox("node", rows["id"].tolist(), key="node",
                               format_func=lambda i: f"{i} · {ex.names[i]}")
            node_view(ex, table, nid)
        else:
            st.warning("No node matches the filters.")
    with tabs[3]:
        outputs, note = None, f"map: {ex.map_note}"
        if ex.annotations is not None and st.checkbox("show model outputs (at their nearest chunk)", True, key="overlay"):
            outputs = vc.map_outputs(ex, opts.get("field"), opts.get("correct"))
            note += f"; outputs of {opts['field']} at their nearest chunk"
        st.plotly_chart(ex_.map_figure(ex.coords, ex.shown, vc.top_labels(ex), ex.names, ex.texts,
                                       ex.cfg.visualization.preview_chars, outputs, note), key="map")
    with tabs[4]:
        if ex.annotations is None:
            st.info("No annotated model outputs for this config, so the error views are hidden. Produce them with "
                    f"`python annotate_with_clusters.py {args.config} --results FILE --text-field FIELD "
                    f"--correct-field FIELD`, then reload.")
        else:
            error_views(ex, opts)


if __name__ == "__main__":
    main()
