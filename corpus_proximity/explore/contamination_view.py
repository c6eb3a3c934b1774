"""The report's contamination section: per benchmark (every ``contamination/<stem>/`` folder that
contamination.py wrote), the verdict counts, accuracy by level per model, the nodes with most
contamination next to their error rates, the contaminated items with their evidence, and the
corpus's stage × node tests, and the matching text of the longest shared spans highlighted in
the item and in its chunk. All text (items, chunks, chunk ids, field names) is HTML-escaped."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd

LEVELS = ("verbatim", "near", "far")


def _table(df: pd.DataFrame, floats: dict[str, str] | None = None) -> str:
    fmt = {c: (lambda f: (lambda x: "" if pd.isna(x) else f.format(x)))(f) for c, f in (floats or {}).items() if c in df}
    return df.to_html(index=False, escape=True, formatters=fmt, border=0)


def highlight_spans(item: str, chunk: str | None, i0: int, i1: int, c0: int, c1: int) -> tuple[str, str, str, str] | None:
    """The item's and the chunk's text around a shared span, as plain-text pieces ``(before, match,
    after)`` each (160 characters of context), or None when the offsets do not fit the texts (a
    result made on another corpus)."""
    from corpus_proximity.analysis.ngrams import tokenize

    if chunk is None or not (0 <= i0 < i1 <= len(item)) or not (0 <= c0 < c1 <= len(chunk)):
        return None
    if " ".join(tokenize(chunk[c0:c1])) not in " ".join(tokenize(item[i0:i1])):
        return None

    def around(t: str, a: int, b: int) -> tuple[str, str, str]:
        before, after = t[max(0, a - 160):a], t[b:b + 160]
        return ("…" if a > 160 else "") + before, t[a:b], after + ("…" if b + 160 < len(t) else "")

    return around(item, i0, i1), around(chunk, c0, c1)


def _marked(parts: tuple[str, str, str]) -> str:
    e = html.escape
    return f"{e(parts[0])}<mark>{e(parts[1])}</mark>{e(parts[2])}"


def matches_html(items: pd.DataFrame, chunk_texts: dict[str, str], max_items: int = 10) -> str:
    """The longest shared span of the first contaminated items, highlighted in the item and its chunk."""
    if "span_item_char_start" not in items:
        return ""
    hit = items[(items["verdict"] != "far") & (items["span_item_char_start"] >= 0)]
    rows = []
    for r in hit.itertuples():
        h = highlight_spans(r.text, chunk_texts.get(r.span_chunk), r.span_item_char_start, r.span_item_char_end,
                            r.span_chunk_char_start, r.span_chunk_char_end)
        if h is not None:
            rows.append(f"<tr><td>{int(r.item)}</td><td>{html.escape(r.verdict)}</td><td style='text-align:left'>"
                        f"{_marked(h[0])}</td><td style='text-align:left'><b>{html.escape(r.span_chunk)}</b>: "
                        f"{_marked(h[1])}</td></tr>")
        if len(rows) == max_items:
            break
    if not rows:
        return ""
    return ("<p class=meta>The longest shared span of contaminated items, marked in the item and in the corpus chunk "
            "it was found in:</p><table><tr><th>item</th><th>verdict</th><th>item text</th><th>corpus chunk</th></tr>"
            + "".join(rows) + "</table>")


def benchmark_section(folder: Path, max_items: int = 25, max_nodes: int = 15,
                      chunk_texts: dict[str, str] | None = None) -> str:
    """One benchmark's part of the section ("" when the folder holds no finished result);
    ``chunk_texts`` (chunk id → text) adds the highlighted matches."""
    if not (folder / "summary.json").is_file() or not (folder / "items.parquet").is_file():
        return ""
    s = json.loads((folder / "summary.json").read_text())
    items = pd.read_parquet(folder / "items.parquet")
    e = html.escape
    counts = ", ".join(f"{lv} {s['counts'][lv]} ({s['shares'][lv]:.1%})" for lv in LEVELS)
    parts = [f"<h3>{e(folder.name)}</h3><p class=meta>{e(str(s['benchmark']))} · field {e(str(s['text_field']))} · "
             f"{s['n_items']} items: {e(counts)} · n-grams {e(', '.join(map(str, s['ngram_sizes'])))} · near by meaning "
             f"at cosine ≥ {s['calibration']['near_threshold']:.3f}</p>"]
    rows = []
    for field, a in (s.get("outcomes", {}).get("accuracy") or {}).items():
        row = {"model": field}
        for r in a["levels"]:
            row[r["level"]] = (f"{r['accuracy']:.0%} [{r['ci_low']:.0%}, {r['ci_high']:.0%}] n={r['n']}"
                               if r["n"] else "")
        row["test"] = a["test"]["test"]
        row["p"] = a["test"]["p"]
        rows.append(row)
    if rows:
        parts.append("<p class=meta>Accuracy by contamination level (Wilson 95% intervals) and a test of "
                     "accuracy × level:</p>" + _table(pd.DataFrame(rows), {"p": "{:.3g}"}))
    if (folder / "nodes.parquet").is_file():
        nodes = pd.read_parquet(folder / "nodes.parquet")
        nodes = nodes[nodes["verbatim"] + nodes["near"] > 0].sort_values(
            ["contaminated_share", "n_items"], ascending=False).head(max_nodes)
        if len(nodes):
            parts.append("<p class=meta>Tree nodes holding contaminated items (items placed by nearest centroid), "
                         "with each model's error rate there:</p>"
                         + _table(nodes, {"contaminated_share": "{:.1%}",
                                          **{c: "{:.1%}" for c in nodes.columns if c.startswith("error_rate.")}}))
    hit = items[items["verdict"] != "far"].sort_values(["verdict", "similarity"], ascending=[False, False])
    if len(hit):
        n_first = s["ngram_sizes"][0]
        cols = ["item", "verdict", "text", f"ngram{n_first}_share", f"ngram{n_first}_longest_span", "similarity",
                "similarity_percentile", "evidence_chunks", "reason"]
        shown = hit[[c for c in cols if c in hit]].head(max_items).copy()
        shown["text"] = shown["text"].map(lambda t: t if len(t) <= 240 else t[:239] + "…")
        parts.append(f"<p class=meta>Contaminated items ({len(hit)}; first {len(shown)}):</p>"
                     + _table(shown, {f"ngram{n_first}_share": "{:.0%}", "similarity": "{:.3f}",
                                      "similarity_percentile": "{:.1f}"}))
    if chunk_texts:
        parts.append(matches_html(items, chunk_texts))
    if (folder / "stages.json").is_file():
        parts.append(stages_html(json.loads((folder / "stages.json").read_text())))
    return "\n".join(parts)


def stages_table(stages: dict) -> pd.DataFrame:
    """Stage × node per depth: nodes, chi-squared, p, Cramér's V and the most different node."""
    rows = []
    for d, res in stages["depths"].items():
        md = res.get("most_different") or {}
        rows.append({"depth": d.replace("depth_", ""), "nodes": len(res["nodes"]), "chi2": res["chi2"], "p": res["p"],
                     "Cramér's V": res["cramers_v"], "most different node": md.get("node", ""),
                     "stage": md.get("stage", ""), "residual": md.get("residual")})
    return pd.DataFrame(rows)


def stages_html(stages: dict) -> str:
    return (f"<p class=meta>Corpus stages (field {html.escape(str(stages.get('field')))}: "
            f"{html.escape(', '.join(f'{k} {v}' for k, v in stages['totals'].items()))} chunks): stage × node</p>"
            + _table(stages_table(stages), {"chi2": "{:.1f}", "p": "{:.3g}", "Cramér's V": "{:.2f}", "residual": "{:.1f}"}))


def contamination_section(root: Path, chunk_texts: dict[str, str] | None = None) -> str:
    """The whole section for ``data/outputs/<name>/contamination`` ("" when nothing was run)."""
    if not root.is_dir():
        return ""
    parts = [benchmark_section(f, chunk_texts=chunk_texts) for f in sorted(p for p in root.iterdir() if p.is_dir())]
    parts = [p for p in parts if p]
    if not parts:
        return ""
    return ("<h2>Contamination: benchmark items in the corpus</h2><p class=meta>verbatim: a long n-gram span and "
            "most n-grams shared; near: many shorter n-grams shared, or an embedding similarity above the corpus's "
            "own nearest-neighbour similarities; far: neither (contamination.py).</p>\n" + "\n".join(parts))


def contamination_tab(root: Path, chunk_texts: dict[str, str] | None = None) -> None:
    """The dashboard's Contamination tab (Streamlit): a benchmark, its verdict counts, accuracy by
    level, the contaminated nodes and items, and one item's longest shared span marked (bold) in
    the item and its chunk. Tables are ``st.dataframe`` (text, never markup); free text goes
    through ``st.text`` or escaped Markdown."""
    import streamlit as st

    from corpus_proximity.untrusted import markdown

    folders = sorted(p for p in root.iterdir() if (p / "summary.json").is_file()) if root.is_dir() else []
    if not folders:
        st.info("No contamination results for this config. Produce them with `python contamination.py CONFIG "
                "--benchmark FILE --text-field FIELD`, then reload.")
        return
    folder = st.selectbox("benchmark", folders, format_func=lambda p: p.name, key="contam_bench")
    s = json.loads((folder / "summary.json").read_text())
    cols = st.columns(3)
    for col, lv in zip(cols, LEVELS):
        col.metric(lv, s["counts"][lv], f"{s['shares'][lv]:.1%}", delta_color="off")
    st.text(f"{s['benchmark']} · near by meaning at cosine >= {s['calibration']['near_threshold']:.3f}")
    acc = s.get("outcomes", {}).get("accuracy") or {}
    if acc:
        st.subheader("Accuracy by contamination level")
        st.dataframe(pd.DataFrame([{"model": f, **{r["level"]: r["accuracy"] for r in a["levels"]},
                                    **{f"n {r['level']}": r["n"] for r in a["levels"]},
                                    "test": a["test"]["test"], "p": a["test"]["p"]} for f, a in acc.items()]),
                     hide_index=True, key="contam_acc")
    if (folder / "nodes.parquet").is_file():
        st.subheader("Contamination per tree node")
        nodes = pd.read_parquet(folder / "nodes.parquet")
        st.dataframe(nodes.sort_values(["contaminated_share", "n_items"], ascending=False), hide_index=True,
                     key="contam_nodes")
    st.subheader("Items")
    items = pd.read_parquet(folder / "items.parquet")
    pick = st.multiselect("verdict", list(LEVELS), default=["verbatim", "near"], key="contam_levels")
    st.dataframe(items[items["verdict"].isin(pick)].drop(columns=["evidence_spans"]), hide_index=True,
                 key="contam_items")
    spans = items[(items["verdict"] != "far") & (items["span_item_char_start"] >= 0)] if "span_chunk" in items else []
    if len(spans) and chunk_texts:
        st.subheader("Matching text")
        i = st.selectbox("item", spans["item"].tolist(), key="contam_match",
                         format_func=lambda k: f"{k} · {items.at[k, 'verdict']} · {items.at[k, 'text'][:80]}")
        r = items.loc[i]
        h = highlight_spans(r["text"], chunk_texts.get(r["span_chunk"]), r["span_item_char_start"],
                            r["span_item_char_end"], r["span_chunk_char_start"], r["span_chunk_char_end"])
        if h is None:
            st.info("The chunk of this span is not in this corpus (a result made on another corpus).")
        else:
            bold = lambda p: f"{markdown(p[0])}**{markdown(p[1])}**{markdown(p[2])}"  # noqa: E731
            st.markdown(f"**item:** {bold(h[0])}")
            st.markdown(f"**chunk** {markdown(r['span_chunk'])}: {bold(h[1])}")
