"""Write the HTML report of a config's named tree and 2-D map (and where model errors sit), and
``items.json`` / ``clusters.json`` for external viewers.

    python visualize_clusters.py configs/clustering_01_tiny.py [--out report.html] [--annotations DIR]
    streamlit run dashboard.py -- configs/clustering_01_tiny.py

The map is its own cached stage (:mod:`corpus_proximity.explore.map`); the report is
:func:`corpus_proximity.explore.report.render_report`.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from corpus_proximity import cli
from corpus_proximity.cache import atomic_write_text
from corpus_proximity.errors import cli_errors
from corpus_proximity.explore.data import load_exploration
from corpus_proximity.explore.report import export_viewer_files, render_report
from corpus_proximity.explore.views import TREE_KINDS
from corpus_proximity.paths import input_dir, output_file


def dashboard_command(args) -> str:
    exe = Path(sys.prefix) / "bin" / "streamlit"
    try:
        exe_s = os.path.relpath(exe) if exe.is_file() and not os.path.relpath(exe).startswith("..") else "streamlit"
    except ValueError:
        exe_s = "streamlit"
    ann = f" --annotations {shlex.quote(str(args.annotations))}" if args.annotations else ""
    # 127.0.0.1 as in .streamlit/config.toml: the dashboard shows corpus text; open it to the network on
    # purpose with --server.address 0.0.0.0
    return f"{exe_s} run dashboard.py --server.address 127.0.0.1 -- {cli.config_arg(args)}{ann}"


@cli_errors
def main(argv: list[str] | None = None) -> int:
    p = cli.parser("Write the HTML report of a config's named tree and 2-D map (and where model errors sit), "
                   "and export items.json / clusters.json for external viewers.")
    p.add_argument("--out", type=Path, default=None, help="report file (default: <output_dir>/<name>/report.html)")
    p.add_argument("--annotations", type=Path, default=None, metavar="DIR",
                   help="an annotate_with_clusters.py --out folder (default: the newest under <output_dir>/<name>/annotations/)")
    p.add_argument("--field", default=None, help="annotated text field drawn on the map (default: the first)")
    p.add_argument("--correct-field", default=None,
                   help="correctness field behind node error rates and map markers (default: the first)")
    p.add_argument("--tree-kind", choices=TREE_KINDS, default="sunburst", help="initial tree layout")
    args = p.parse_args(argv)
    if args.out is not None:
        output_file(args.out, "--out")
    if args.annotations is not None:
        input_dir(args.annotations, "--annotations")
    cfg = cli.resolve(args)
    ex = load_exploration(cfg, args.annotations, args.field, args.correct_field, cli.config_arg(args))
    for note in ex.notes:
        cli.console.print(f"[yellow]note: {note}[/yellow]")
    out = args.out or cfg.outputs / "report.html"
    atomic_write_text(out, render_report(ex, args.tree_kind))
    items, clusters = export_viewer_files(ex, out.parent)
    cli.console.print(f"map: {ex.map_note}")
    cli.console.print(f"report: {out}")
    cli.console.print(f"viewer files: {items} ({len(ex.shown)} chunks), {clusters} ({len(ex.tree.nodes) - 1} nodes)")
    cli.console.print(f"dashboard: {dashboard_command(args)}  (local only; --server.address 0.0.0.0 opens it "
                      f"to the network)", soft_wrap=True)
    return 0



if __name__ == "__main__":
    raise SystemExit(main())
