"""Contamination: how much of a benchmark sits in the corpus, verbatim or near, and where.

For every benchmark item (its text field, and its answer field when given):

1. **n-gram overlap** with the corpus chunks through the cached hashed n-gram indexes
   (:mod:`corpus_proximity.analysis.ngrams`; one ``ngrams-<key>`` stage per n, keyed on the chunk
   stage's key, n and the normalisation version): the share of the item's n-grams in the corpus
   and the longest shared span (tokens), with each span's token range and source chunk;
2. **its nearest chunk by embedding** (the corpus' model; exact or IVF search as in annotation)
   with the cosine similarity and its percentile among the corpus's own leave-one-document-out
   nearest-chunk similarities (:func:`corpus_nn_similarities`);
3. **a verdict** (:func:`verdicts`, thresholds in ``contamination.*``):
   ``verbatim`` when the longest shared span is >= n tokens (first n) and at least
   ``verbatim_share`` of its n-grams are found; else ``near`` when at least ``near_share`` of its
   n-grams (last n) are found, or its similarity reaches the corpus's ``near_percentile``
   (and ``near_min_similarity``); else ``far``.

The evidence of each shared span carries its characters in the item text and in its chunk's text
(:func:`evidence`), so the matching text can be shown as it is written.

The per-item result is a cached stage, ``contamination-<key>`` (``items.parquet``, ``summary.json``,
``item_embeddings.npy``; :func:`contamination_identity` says what the key holds). Outputs
(``data/outputs/<name>/contamination/<benchmark stem>/``): ``items.parquet`` / ``items.csv`` (one
row per item) and ``summary.json`` (counts per verdict, the calibration, and when correctness
fields are found the per-model accuracy by verdict and per-node mass,
:mod:`corpus_proximity.analysis.contamination_outcomes`), joined on every run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from corpus_proximity import cli
from corpus_proximity.analysis.ngrams import (
    NORMALISATION_VERSION,
    NgramIndex,
    NgramMatch,
    TokenHasher,
    build_index,
    chunk_match,
    parquet_batches,
    parquet_rows,
    tokenize,
    tokenize_with_offsets,
)
from corpus_proximity.cache import (
    StageDir,
    atomic_save_npy,
    atomic_write_json,
    atomic_writer,
    file_fingerprint,
    stage_key,
)
from corpus_proximity.config import ContaminationConfig, ExperimentConfig
from corpus_proximity.errors import InputError
from corpus_proximity.text import chunking
from corpus_proximity.tree.placement import calibrate_outside, nn_percentile

NGRAM_STAGE, NGRAM_VERSION = "ngrams", 1
CONTAM_STAGE, CONTAM_VERSION = "contamination", 1
LEVELS = ("verbatim", "near", "far")


# --- the cached n-gram index -------------------------------------------------------------------

def ngram_stage_dir(cfg: ExperimentConfig, n: int) -> StageDir:
    chunks = chunking.stage_dir(cfg)
    key = stage_key(NGRAM_STAGE, NGRAM_VERSION, {"n": n, "normalisation": NORMALISATION_VERSION},
                    {"chunks": chunks.key})
    return StageDir.for_key(cfg.cache_dir, NGRAM_STAGE, key)


def run_ngram_index(cfg: ExperimentConfig, n: int, log=cli.console) -> NgramIndex:
    """The corpus's n-gram index, built once (streamed over ``chunks.parquet``) and cached."""
    chunks = chunking.run_chunking(cfg, log)
    sd = ngram_stage_dir(cfg, n)
    if sd.complete:  # sizes and sha256 of the arrays checked against config.json (one-line error if not)
        log.print(f"[green]ngrams (n={n}): cache hit[/green] {sd.path}")
        return load_ngram_index(sd, n)
    log.print(f"ngrams (n={n}): indexing → {sd.path}")
    t0 = time.perf_counter()
    index = build_index(parquet_batches(chunks.file("chunks.parquet"), "text", cfg.contamination.batch_size), n)
    sd.begin()
    index.save(sd.path)
    seconds = time.perf_counter() - t0
    sd.finish({"n": n, "normalisation": NORMALISATION_VERSION}, {"chunks": chunks.key},
              {"n_chunks": index.n_chunks, "n_tokens": index.n_tokens, "n_distinct_ngrams": len(index.hashes),
               "bytes": index.nbytes, "seconds": round(seconds, 2)})
    log.print(f"ngrams (n={n}): {index.n_chunks:,} chunks, {index.n_tokens:,} tokens → {len(index.hashes):,} "
              f"distinct n-grams ({index.nbytes / 2**20:.1f} MiB) in {seconds:.1f}s")
    return load_ngram_index(sd, n)


def load_ngram_index(sd: StageDir, n: int) -> NgramIndex:
    """Memory-map a finished index, checking its arrays are what ``config.json`` records (the
    checksums of files too big to hash on every load are checked by verify_cache.py)."""
    meta = sd.read_meta()
    try:
        index = NgramIndex.load(sd.path, n, meta["n_chunks"], meta["n_tokens"])
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"{sd.path}: the n-gram index is unreadable ({type(e).__name__}); {sd.fix}") from None
    for name, arr, dtype in (("hashes", index.hashes, np.uint64), ("rows", index.rows, np.int32)):
        if arr.dtype != dtype or arr.shape != (meta["n_distinct_ngrams"],):
            raise InputError(f"{sd.file(f'ngrams{n}_{name}.npy')}: {arr.shape} {arr.dtype}, expected "
                             f"({meta['n_distinct_ngrams']},) {np.dtype(dtype)} as recorded in config.json; {sd.fix}")
    return index


# --- calibration ------------------------------------------------------------------------------

def corpus_nn_similarities(embeddings: np.ndarray, doc_ids, sample: int, seed: int) -> np.ndarray:
    """The corpus's leave-one-document-out nearest-chunk similarities of a seeded sample (sorted), the
    placement stage's calibration (:func:`calibrate_outside`), without the chunks of a document that
    holds the whole corpus (they have no other document to be near)."""
    sims = calibrate_outside(embeddings, doc_ids, sample, seed)
    return sims[sims > -1.0]


# --- verdicts ---------------------------------------------------------------------------------

def near_threshold(calibration: np.ndarray, cfg: ContaminationConfig) -> float:
    """The similarity at which an item counts as near by meaning.

    Exact duplicates across documents (cosine ~ 1; the default corpus has 1-2% of them) say that
    the corpus repeats itself, not how close its neighbours are: left in, they pushed the 99th
    percentile to 1.0 on the demo corpus and no paraphrase could be near, so they are left out here."""
    calibration = calibration[calibration < 1.0 - 1e-4]
    pct = float(np.percentile(calibration, cfg.near_percentile)) if len(calibration) else 1.0
    return max(pct, cfg.near_min_similarity)


def verdicts(first: list[NgramMatch], last: list[NgramMatch], similarity: np.ndarray, threshold: float,
             cfg: ContaminationConfig) -> tuple[list[str], list[str]]:
    """(verdict, reason) per item; see the module doc."""
    out, why = [], []
    for a, b, s in zip(first, last, similarity):
        if a.longest_span >= a.n and a.share >= cfg.verbatim_share:
            out.append("verbatim")
            why.append(f"{a.share:.0%} of {a.n}-grams in the corpus, longest shared span {a.longest_span} tokens")
        elif b.share >= cfg.near_share:
            out.append("near")
            why.append(f"{b.share:.0%} of {b.n}-grams in the corpus")
        elif np.isfinite(s) and s >= threshold:
            out.append("near")
            why.append(f"nearest chunk at cosine {s:.3f} >= {threshold:.3f}")
        else:
            out.append("far")
            why.append("")
    return out, why


def score_items(texts: list[str], indexes: list[NgramIndex], similarity: np.ndarray, nearest_row: np.ndarray,
                calibration: np.ndarray, chunk_ids: list[str], cfg: ContaminationConfig, answers=None,
                chunk_texts=None):
    """One row per item (a DataFrame): n-gram evidence per n, the embedding evidence, the verdict.

    ``similarity`` / ``nearest_row``: each item's nearest corpus chunk (cosine, row); NaN / -1
    where the items were not embedded. ``answers``: optional texts scored by n-gram alone.
    ``chunk_texts(rows) -> {row: text}``: the evidence chunks' texts, for the character ranges of
    each shared span in the chunk (:func:`evidence`); None leaves them out."""
    import pandas as pd

    hasher = TokenHasher()
    tokenised = [tokenize_with_offsets(t) for t in texts]
    tokens = [t for t, _ in tokenised]
    matches = {ix.n: ix.match_many(tokens, hasher, cfg.max_spans) for ix in indexes}
    first, last = matches[indexes[0].n], matches[indexes[-1].n]
    threshold = near_threshold(calibration, cfg)
    verdict, reason = verdicts(first, last, similarity, threshold, cfg)
    df = pd.DataFrame({"item": np.arange(len(texts)), "text": texts, "n_tokens": [len(t) for t in tokens]})
    for n, ms in matches.items():
        df[f"ngram{n}_share"] = [m.share for m in ms]
        df[f"ngram{n}_longest_span"] = [m.longest_span for m in ms]
    df["nearest_chunk"] = [chunk_ids[i] if i >= 0 else "" for i in nearest_row]
    df["similarity"] = similarity.astype(np.float32)
    df["similarity_percentile"] = nn_percentile(similarity, calibration)
    df["verdict"] = verdict
    df["reason"] = reason
    rows = {s.chunk_row for ms in matches.values() for m in ms for s in m.spans}
    texts_of = chunk_texts(rows) if chunk_texts is not None and rows else {}
    evid = [evidence(tokenised[i], {n: ms[i] for n, ms in matches.items()}, chunk_ids, texts_of)
            for i in range(len(texts))]
    df["evidence_chunks"] = [";".join(dict.fromkeys(e["chunk_id"] for e in ev)) for ev in evid]
    df["evidence_spans"] = [json.dumps(ev, ensure_ascii=False) for ev in evid]
    # the longest shared span (any n; the first n on a tie), for highlighting: -1 where none
    best = [max(ev, key=lambda e: e["end"] - e["start"]) if ev else None for ev in evid]
    df["span_chunk"] = [b["chunk_id"] if b else "" for b in best]
    for col, key, k in (("span_item_char_start", "item_chars", 0), ("span_item_char_end", "item_chars", 1),
                        ("span_chunk_char_start", "chunk_chars", 0), ("span_chunk_char_end", "chunk_chars", 1)):
        df[col] = [b[key][k] if b and b.get(key) else -1 for b in best]
    if answers is not None:
        ans = indexes[0].match_many([tokenize(a) for a in answers], hasher, cfg.max_spans)
        df[f"answer_ngram{indexes[0].n}_share"] = [m.share for m in ans]
        df[f"answer_ngram{indexes[0].n}_longest_span"] = [m.longest_span for m in ans]
        df["answer_verbatim"] = [m.longest_span >= m.n and m.share >= cfg.verbatim_share for m in ans]
    return df, threshold


def evidence(tokenised: tuple[list[str], list | None], matches: dict[int, NgramMatch], chunk_ids: list[str],
             chunk_texts: dict[int, str]) -> list[dict]:
    """The shared spans of one item, every n, longest first within each n: ``n``, ``chunk_id``,
    the item's token range ``start`` / ``end``, ``text`` (its normalised tokens), ``item_chars``
    (its ``[start, end)`` characters in the item text; None where offsets are unknown) and, where
    the chunk's text is given, ``chunk_chars`` (the characters in the chunk text of the longest
    run of the span found there) and ``chunk_tokens`` (that run's length; the span's when the
    chunk holds all of it)."""
    toks, offs = tokenised
    out = []
    for n, m in matches.items():
        for s in m.spans:
            e = {"n": n, "chunk_id": chunk_ids[s.chunk_row], "start": s.start, "end": s.end,
                 "text": " ".join(toks[s.start:s.end])[:300],
                 "item_chars": [offs[s.start][0], offs[s.end - 1][1]] if offs else None}
            found = chunk_match(toks[s.start:s.end], chunk_texts[s.chunk_row]) if s.chunk_row in chunk_texts else None
            if found is not None:
                _, size, c0, c1 = found
                e["chunk_chars"], e["chunk_tokens"] = [c0, c1], size
            out.append(e)
    return out


# --- reading a benchmark ----------------------------------------------------------------------

def load_items(path: Path, text_field: str, answer_field: str | None) -> tuple[list[dict], list[str], list[str] | None]:
    """Rows, item texts and answers of a JSONL/CSV/Parquet benchmark (one-line errors for bad input)."""
    from corpus_proximity.analysis.annotate import get_path, leaf_paths, load_results

    try:
        rows = load_results(path)
    except InputError as e:
        raise InputError(str(e).replace("--results", "--benchmark").replace("model outputs", "benchmark items")) from None

    def col(field: str, flag: str) -> list[str]:
        out = []
        for i, r in enumerate(rows):
            try:
                v = get_path(r, field)
            except KeyError:
                keys = ", ".join(leaf_paths(r)[:12])
                raise InputError(f"{path}: row {i + 1} has no field '{field}' (fields: {keys}); "
                                 f"pass an existing {flag}") from None
            out.append("" if v is None else str(v))
        return out

    texts = col(text_field, "--text-field")
    if not any(t.strip() for t in texts):
        raise InputError(f"{path}: every '{text_field}' is empty; pass the --text-field holding the item text")
    return rows, texts, col(answer_field, "--answer-field") if answer_field else None


# --- the whole stage --------------------------------------------------------------------------

SEMANTIC_FIELDS = ("ngram_sizes", "verbatim_share", "near_share", "near_percentile", "near_min_similarity",
                   "calibration_sample", "seed", "max_spans")
SEARCH_FIELDS = ("exact_search_max_chunks", "ivf_nlist", "ivf_nprobe")


def contamination_identity(cfg: ExperimentConfig, benchmark: Path, text_field: str,
                           answer_field: str | None) -> tuple[dict, dict]:
    """(semantic config, upstream keys) of ``contamination-<key>``: the benchmark file's bytes, its
    fields, the verdict and search settings, and the n-gram indexes' and embeddings' keys (so the
    corpus and its model)."""
    from corpus_proximity.text import embedding

    c = cfg.contamination
    semantic = {"benchmark_sha256": file_fingerprint(benchmark), "text_field": text_field,
                "answer_field": answer_field, **{k: getattr(c, k) for k in SEMANTIC_FIELDS},
                "search": {k: getattr(cfg.annotation, k) for k in SEARCH_FIELDS}}
    upstream = {**{f"ngrams{n}": ngram_stage_dir(cfg, n).key for n in c.ngram_sizes},
                "embed": embedding.stage_dir(cfg).key}
    return semantic, upstream


def contamination_stage_dir(cfg: ExperimentConfig, benchmark: Path, text_field: str,
                            answer_field: str | None = None) -> StageDir:
    key = stage_key(CONTAM_STAGE, CONTAM_VERSION, *contamination_identity(cfg, benchmark, text_field, answer_field))
    return StageDir.for_key(cfg.cache_dir, CONTAM_STAGE, key)


def run_contamination(cfg: ExperimentConfig, benchmark: Path, text_field: str, answer_field: str | None = None,
                      log=cli.console):
    """(benchmark rows, items DataFrame, summary dict, item embeddings or None) for a benchmark file
    against ``cfg``'s corpus: the cached ``contamination-<key>`` result (items.parquet,
    summary.json, item_embeddings.npy), computed when missing."""
    import pandas as pd

    rows, texts, answers = load_items(benchmark, text_field, answer_field)
    semantic, upstream = contamination_identity(cfg, benchmark, text_field, answer_field)
    sd = StageDir.for_key(cfg.cache_dir, CONTAM_STAGE, stage_key(CONTAM_STAGE, CONTAM_VERSION, semantic, upstream))
    if not sd.complete:
        df, summary, item_emb = _compute(cfg, benchmark, text_field, answer_field, texts, answers, log)
        if sd.begin():  # else a concurrent run of the same inputs finished it meanwhile: read that
            atomic_writer(sd.file("items.parquet"), lambda p: df.to_parquet(p, index=False))
            if item_emb is not None:
                atomic_save_npy(sd.file("item_embeddings.npy"), np.asarray(item_emb, dtype=np.float32))
            atomic_write_json(sd.file("summary.json"), summary)
            sd.finish(semantic, upstream, {"n_items": len(df)})
            log.print(f"contamination: {len(df)} items → {sd.path}")
            return rows, df, summary, item_emb
    else:
        log.print(f"[green]contamination: cache hit[/green] {sd.path}")
    df = pd.read_parquet(sd.file("items.parquet"))
    summary = json.loads(sd.file("summary.json").read_text())
    summary["benchmark"] = str(benchmark)  # the same bytes may sit at another path
    emb = sd.file("item_embeddings.npy")
    return rows, df, summary, np.load(emb) if emb.is_file() else None


def _compute(cfg: ExperimentConfig, benchmark: Path, text_field: str, answer_field: str | None, texts: list[str],
             answers: list[str] | None, log) -> tuple[object, dict, np.ndarray | None]:
    """The items table, summary and item embeddings, computed (see the module doc)."""
    from corpus_proximity.analysis.annotate import embed_queries, proximity_search
    from corpus_proximity.text import embedding

    indexes = [run_ngram_index(cfg, n, log) for n in cfg.contamination.ngram_sizes]
    embed_sd = embedding.run_embedding(cfg, log)
    corpus = embedding.load_embeddings(embed_sd)
    table = chunking.read_chunks(chunking.stage_dir(cfg), ["chunk_id", "doc_id"])
    chunk_ids = table.column("chunk_id").to_pylist()
    doc_ids = table.column("doc_id").to_pylist()
    c = cfg.contamination
    calibration = corpus_nn_similarities(corpus, doc_ids, c.calibration_sample, c.seed)
    if cfg.embedding.precomputed_path:
        log.print("[yellow]embedding.precomputed_path: items cannot be embedded in that space; the verdicts "
                  "use n-grams alone[/yellow]")
        item_emb = None
        sim, near = np.full(len(texts), np.nan), np.full(len(texts), -1)
    else:
        item_emb = embed_queries(cfg, texts)
        near, dist = proximity_search(cfg, embed_sd, corpus).search(item_emb)
        sim = 1.0 - dist
    chunks_file = chunking.stage_dir(cfg).file("chunks.parquet")
    df, threshold = score_items(texts, indexes, sim, near, calibration, chunk_ids, c, answers,
                                lambda rows: parquet_rows(chunks_file, rows, "text", c.batch_size))
    counts = {lv: int((df["verdict"] == lv).sum()) for lv in LEVELS}
    summary = {"benchmark": str(benchmark), "text_field": text_field, "answer_field": answer_field,
               "n_items": len(df), "counts": counts,
               "shares": {lv: counts[lv] / len(df) for lv in LEVELS},
               "ngram_sizes": list(c.ngram_sizes),
               "ngram_indexes": {str(ix.n): {"distinct_ngrams": int(len(ix.hashes)), "chunks": ix.n_chunks,
                                             "tokens": ix.n_tokens} for ix in indexes},
               "calibration": {"n": int(len(calibration)),
                               "percentiles": {str(p): float(np.percentile(calibration, p)) for p in (50, 90, 99)}
                               if len(calibration) else {},
                               "near_threshold": threshold},
               "thresholds": {"verbatim_share": c.verbatim_share, "near_share": c.near_share,
                              "near_percentile": c.near_percentile, "near_min_similarity": c.near_min_similarity}}
    return df, summary, item_emb


def default_out(cfg: ExperimentConfig, benchmark: Path) -> Path:
    return cfg.outputs / "contamination" / benchmark.stem


def write_outputs(out_dir: Path, df, summary: dict, extra_tables: dict | None = None) -> None:
    """``items.parquet``, ``items.csv``, ``summary.json`` and any extra tables (name → DataFrame)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, t in {"items": df, **(extra_tables or {})}.items():
        atomic_writer(out_dir / f"{name}.parquet", lambda p, t=t: t.to_parquet(p, index=False))
        atomic_writer(out_dir / f"{name}.csv", lambda p, t=t: t.to_csv(p, index=False))
    atomic_write_json(out_dir / "summary.json", summary)


# --- joined with outcomes, and corpus stages ----------------------------------------------------

def join_outcomes(cfg: ExperimentConfig, df, item_emb, source_rows: list[dict], source: Path,
                  correct_patterns: list[str], join_field: str | None = None) -> tuple[object, dict]:
    """Add ``correct.<field>`` columns to ``df`` and test accuracy × contamination per field.

    ``source_rows`` are the benchmark rows themselves (``join_field`` None) or a results file's rows
    matched to the items on the normalised text of ``join_field``; items with no match are ungraded."""
    from corpus_proximity.analysis.annotate import as_bool, column, expand_fields
    from corpus_proximity.analysis.contamination_outcomes import accuracy_by_level, node_mass
    from corpus_proximity.tree import stage as tree_stage
    from corpus_proximity.tree.index import assign_to_clusters
    from corpus_proximity.tree.tree import ClusterTree

    fields = [f for f in expand_fields(source_rows, correct_patterns)
              if all(_has(r, f) for r in source_rows)]
    if join_field is None:
        pick = np.arange(len(df))
    else:
        key_of = {" ".join(tokenize(str(v))): i for i, v in enumerate(column(source_rows, join_field, source))}
        pick = np.array([key_of.get(" ".join(tokenize(t)), -1) for t in df["text"]])
    correct = {}
    for f in fields:
        vals = as_bool(column(source_rows, f, source), f, source)
        correct[f] = np.array([vals[i] if i >= 0 else None for i in pick], dtype=object)
        df[f"correct.{f}"] = list(correct[f])
    out = {"source": str(source), "correct_fields": fields, "joined": int((pick >= 0).sum()),
           "accuracy": {f: accuracy_by_level(df["verdict"], v, cfg.contamination.alpha) for f, v in correct.items()},
           "nodes": []}
    if not fields:
        out["note"] = (f"no correctness field of {source} matches {', '.join(correct_patterns)}: accuracy by "
                       f"contamination level skipped; pass --correct-field FIELD")
    tree_sd = tree_stage.stage_dir(cfg)
    if item_emb is not None and tree_sd.complete:
        from corpus_proximity.naming.stage import names_or_ids

        paths = assign_to_clusters(item_emb, ClusterTree.load(tree_sd.path)).paths
        for d in range(paths.shape[1]):
            df[f"cluster_depth_{d}"] = paths[:, d]
        out["nodes"] = node_mass(paths, df["verdict"], correct, names_or_ids(cfg, compute_offline=False))
        out["tree"] = tree_sd.path.name
    elif item_emb is not None:
        out["nodes_note"] = "no tree for this config yet: per-node contamination skipped (run cluster_corpus.py)"
    return df, out


def _has(row: dict, field: str) -> bool:
    from corpus_proximity.analysis.annotate import get_path

    try:
        get_path(row, field)
        return True
    except KeyError:
        return False


def chunk_stages(cfg: ExperimentConfig, metadata: list | None = None) -> list[str] | None:
    """Each chunk's ``contamination.stage_field`` ("(none)" where a chunk lacks it), or None when no
    chunk carries it. ``metadata``: the chunks' metadata JSON strings, when already read."""
    field = cfg.contamination.stage_field
    if metadata is None:
        metadata = chunking.read_chunks(chunking.stage_dir(cfg), ["metadata"]).column("metadata").to_pylist()
    stages = [json.loads(m or "{}").get(field) for m in metadata]
    if all(s is None for s in stages):
        return None
    return ["(none)" if s is None else str(s) for s in stages]


def tree_stages(tree, stages: list[str], field: str, alpha: float) -> dict:
    """Stage × node at every depth of ``tree`` (:func:`stage_by_node`), with the field's name."""
    from corpus_proximity.analysis.contamination_outcomes import stage_by_node

    out = stage_by_node([tree.labels_at_depth(d) for d in range(tree.n_depths)], stages, alpha)
    out["field"] = field
    return out


def corpus_stages(cfg: ExperimentConfig) -> dict | None:
    """Stage × node of the config's tree when its chunks carry ``contamination.stage_field``; else None."""
    from corpus_proximity.tree import stage as tree_stage
    from corpus_proximity.tree.tree import ClusterTree

    stages = chunk_stages(cfg)
    tree_sd = tree_stage.stage_dir(cfg)
    if stages is None or not tree_sd.complete:
        return None
    return tree_stages(ClusterTree.load(tree_sd.path), stages, cfg.contamination.stage_field, cfg.contamination.alpha)
