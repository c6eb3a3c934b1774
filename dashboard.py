"""The exploration dashboard: the named tree, a sortable cluster table, a node drill-down, the 2-D
map and, where model outputs were annotated, where their errors sit.

    streamlit run dashboard.py -- configs/clustering_01_tiny.py [--set SECTION.FIELD=VALUE] [--annotations DIR]

Reads what ``corpus_proximity.explore.data.load_exploration`` reads (the cached tree, names and 2-D map,
computed on first use when missing); every view is built by the pure functions of
``corpus_proximity.explore.views``.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import streamlit as st
from rich.console import Console

from corpus_proximity import cli
from corpus_proximity.config import apply_overrides, load_config
from corpus_proximity.errors import InputError
from corpus_proximity.explore import data as vc
from corpus_proximity.explore import views as ex_
from corpus_proximity.explore.app import error_views, node_view, sidebar
from corpus_proximity.explore.contamination_view import contamination_tab, stages_table
from corpus_proximity.tree.tree import ROOT
from corpus_proximity.untrusted import markdown

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


def main() -> None:
    if not st.runtime.exists():  # `python dashboard.py`: a Streamlit script, not a CLI
        print(f"the dashboard runs under Streamlit: {USAGE}", file=sys.stderr)
        raise SystemExit(2)
    st.set_page_config(page_title="corpus-proximity", layout="wide")
    try:
        args = parse_args(sys.argv[1:])
    except SystemExit:
        st.error(markdown(f"usage: {USAGE}"))
        st.stop()
    try:
        ex = load(args.config, tuple(args.overrides), args.annotations)
    except InputError as e:
        st.error(markdown(str(e)))  # paths and file contents: shown as text, never as Markdown/HTML
        st.stop()
    opts = sidebar(ex)
    tree = ex.tree
    st.title(f"Corpus map: {markdown(ex.cfg.name)}")
    st.caption(f"{tree.n_points} chunks · {tree.n_depths} depths · {len(tree.nodes) - 1} nodes · "
               f"{len(tree.leaves())} leaves · {len(tree.root.noise)} noise at the root · {markdown(ex.tree_dir.name)}")
    for note in ex.notes:
        st.info(markdown(note))
    table = ex.table
    if ex.annotations is not None and opts.get("correct"):
        table = ex_.with_errors(table, vc.output_errors(ex.annotations, opts["field"], opts["correct"]))
    shown = ex_.filter_nodes(table, opts["max_depth"], opts["min_size"], opts["search"])
    tabs = st.tabs(["Tree", "Clusters", "Node", "Map", "Errors", "Contamination"])
    with tabs[0]:
        if len(shown) <= 1:
            st.warning("No node matches the filters.")
        else:
            who = f" · model {opts['correct']}" if opts.get("correct") and opts["colour"] == "error rate" else ""
            st.plotly_chart(ex_.tree_figure(shown, ex.samples, opts["kind"], opts["colour"], title_suffix=who),
                            key="tree")
        if ex.stages is not None:
            st.caption("The corpus has stages: pick a 'stage share' in 'colour by' to colour each node by that stage's "
                       "share of its chunks. Stage × node, per depth:")
            st.dataframe(stages_table(ex.stages), hide_index=True, key="stages")
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
    with tabs[5]:
        contamination_tab(ex.cfg.outputs / "contamination", dict(zip(ex.chunk_ids, ex.texts)))


if __name__ == "__main__":
    main()
