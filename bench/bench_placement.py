"""Placement speed and fidelity: the k-nearest-chunk vote with the IVF index against exact search.

A synthetic labelled corpus (``bench_annotate.clustered_corpus``: 500 diffuse topics on the 384-d
sphere) gets a two-level tree (50 top-level regions of 10 topics; one chunk in 20 is noise of its
region), so every chunk has a path. Queries are held-out vectors of the same distribution. For
``--queries`` outputs against ``--corpus-size`` chunks it reports, for ``annotation.knn_k``:

- exact ``search_k`` + vote: seconds, outputs/s (on ``--exact-queries``, a subsample: exact search
  costs queries x corpus);
- IVF ``search_k`` + vote (the default nlist = 4 sqrt(N), nprobe): build seconds, outputs/s;
- recall@k of IVF against exact, and how often the two votes give the same full path.

    .venv/bin/python bench/bench_placement.py --quick     # 50k corpus, 20k queries
    .venv/bin/python bench/bench_placement.py             # 200k corpus, 100k queries

Writes ``bench/results/<date>-<git sha>-placement.json`` and ``bench/results/latest-placement.md``
(with the projection to 1M outputs x 1M chunks: exact scales with queries x corpus; IVF's query
cost with queries x corpus x nprobe / nlist, which at nlist = 4 sqrt(N) grows as sqrt(N)).
"""

from __future__ import annotations

import argparse
import datetime
import time
from pathlib import Path

import numpy as np
from bench_annotate import clustered_corpus

from corpus_proximity.cache import atomic_write_json, atomic_write_text
from corpus_proximity.config import AnnotationConfig
from corpus_proximity.tree.index import ExactSearch, IVFSearch
from corpus_proximity.tree.placement import vote_placement
from corpus_proximity.tree.tree import ROOT, ClusterTree, Node

from bench_tree import machine_info

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"


def labelled_tree(corpus: np.ndarray, seed: int = 2) -> ClusterTree:
    """Regions of 10 topics each (topics recovered as the nearest of clustered_corpus's centres)."""
    rng = np.random.default_rng(seed)
    centres = (c := rng.normal(size=(500, corpus.shape[1]))) / np.linalg.norm(c, axis=1, keepdims=True)
    topic = np.concatenate([np.argmax(corpus[lo:lo + 50_000] @ centres.T.astype(np.float32), axis=1)
                            for lo in range(0, len(corpus), 50_000)])
    noise = np.random.default_rng(seed + 1).random(len(corpus)) < 0.05
    nodes = {ROOT: Node(ROOT, None, -1, np.arange(len(corpus)), centroid=np.zeros(corpus.shape[1], np.float32))}
    for r in range(50):
        members = np.flatnonzero(topic // 10 == r)
        rid = str(r)
        nodes[rid] = Node(rid, ROOT, 0, members, noise=members[noise[members]], centroid=_mean(corpus[members]))
        nodes[ROOT].children.append(rid)
        for t in range(10):
            m = members[(topic[members] == 10 * r + t) & ~noise[members]]
            cid = f"{r}.{t}"
            nodes[cid] = Node(cid, rid, 1, m, centroid=_mean(corpus[m]))
            nodes[rid].children.append(cid)
    return ClusterTree(nodes=nodes, n_points=len(corpus), dim=corpus.shape[1])


def _mean(X: np.ndarray) -> np.ndarray:
    m = X.mean(axis=0)
    return (m / max(np.linalg.norm(m), 1e-12)).astype(np.float32)


def timed(search, queries: np.ndarray, tree: ClusterTree, k: int):
    t0 = time.perf_counter()
    idx, sims = search.search_k(queries, k)
    t1 = time.perf_counter()
    paths = vote_placement(queries, idx, sims, tree).node_index
    return idx, paths, t1 - t0, time.perf_counter() - t1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--corpus-size", type=int, default=None)
    ap.add_argument("--queries", type=int, default=None)
    ap.add_argument("--exact-queries", type=int, default=5_000, help="subsample searched exactly too")
    args = ap.parse_args()
    n = args.corpus_size or (50_000 if args.quick else 200_000)
    nq = args.queries or (20_000 if args.quick else 100_000)
    a = AnnotationConfig()
    corpus, queries = clustered_corpus(n, nq)
    tree = labelled_tree(corpus)
    sub = queries[: min(args.exact_queries, nq)]
    e_idx, e_paths, e_search, e_vote = timed(ExactSearch(corpus), sub, tree, a.knn_k)
    t0 = time.perf_counter()
    ivf = IVFSearch.build(corpus, a.ivf_nlist, a.ivf_nprobe)
    build = time.perf_counter() - t0
    i_idx, i_paths, i_search, i_vote = timed(ivf, queries, tree, a.knn_k)
    m = len(sub)
    recall = float(np.mean([len(set(x) & set(y)) / a.knn_k for x, y in zip(e_idx, i_idx[:m])]))
    same_path = float(np.mean((e_paths == i_paths[:m]).all(axis=1)))
    same_top = float(np.mean(e_paths[:, 0] == i_paths[:m, 0]))
    exact_rate, ivf_rate = m / (e_search + e_vote), nq / (i_search + i_vote)
    nlist = a.ivf_nlist or IVFSearch.auto_nlist(n)
    # projection to 1M x 1M: exact ~ queries x corpus; IVF query ~ queries x corpus x nprobe / nlist
    big = 1_000_000
    exact_1m = big / exact_rate * (big / n)
    ivf_1m = big / ivf_rate * (big / n) * (nlist / IVFSearch.auto_nlist(big))
    machine = machine_info()
    r = {"date": datetime.date.today().isoformat(), "git": machine["git_sha"], "environment": machine,
         "corpus": n, "queries": nq, "exact_queries": m, "k": a.knn_k, "nlist": nlist, "nprobe": a.ivf_nprobe,
         "exact": {"search_s": e_search, "vote_s": e_vote, "outputs_per_s": exact_rate},
         "ivf": {"build_s": build, "search_s": i_search, "vote_s": i_vote, "outputs_per_s": ivf_rate},
         "recall_at_k": recall, "same_path": same_path, "same_top_level": same_top,
         "projected_1m_x_1m_s": {"exact": exact_1m, "ivf": ivf_1m}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_json(RESULTS / f"{r['date']}-{r['git']}-placement.json", r)
    md = (f"# Placement bench ({r['date']}, {r['git']}, {machine['nproc']} cpus)\n\n"
          f"k = {a.knn_k} nearest chunks, {n:,} chunks (384-d), 50 regions x 10 topics, 5% noise.\n\n"
          f"| search + vote | outputs | outputs/s | seconds (search + vote) |\n|---|---|---|---|\n"
          f"| exact | {m:,} | {exact_rate:,.0f} | {e_search:.2f} + {e_vote:.2f} |\n"
          f"| IVF nlist {nlist}, nprobe {a.ivf_nprobe} (build {build:.1f} s, once) | {nq:,} | {ivf_rate:,.0f} | "
          f"{i_search:.2f} + {i_vote:.2f} |\n\n"
          f"IVF vs exact on the {m:,} shared outputs: recall@{a.knn_k} {recall:.3f}, same full path {same_path:.1%}, "
          f"same top-level region {same_top:.1%}.\n\n"
          f"Projected to 1M outputs x 1M chunks on this machine: exact {exact_1m / 3600:.1f} h, "
          f"IVF {ivf_1m / 60:.0f} min (+ the index build).\n")
    atomic_write_text(RESULTS / "latest-placement.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
