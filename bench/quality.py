"""Quality per level against the peers, on the same embeddings: labelled corpora with a true
2-level hierarchy (coarse, fine), every method side by side.

Methods (all on the same L2-normalised vectors):

- **ours**: ``cluster_corpus.recursive_cluster`` with the corpus config's ``ClusteringConfig``
  (``--set clustering.F=V`` overrides it); coarse = depth-0 labels, fine = depth-1 labels where a
  point whose branch stopped at depth 0 keeps its depth-0 cluster.
- **bertopic**: ``BERTopic`` with precomputed embeddings and its defaults (UMAP 5-d cosine,
  HDBSCAN min_cluster_size 10), UMAP seeded; fine = its topics (-1 = noise). Coarse: its
  ``hierarchical_topics(docs, use_ctfidf=False)`` (ward linkage on the topic embeddings, i.e. the
  mean embedding of each topic's documents: comparable on synthetic vectors that have no text)
  cut where the true coarse count of groups remains (closest merges applied first; an oracle: it is
  told the coarse count); noise stays noise.
- **evoc**: ``evoc.EVoC(random_state=seed)``; coarse and fine = the layer whose cluster count is
  closest to the true coarse and fine counts (an oracle: it is told both counts).
- **evoc-own**: the same fit with no oracle: coarse = EVoC's default ``labels_``, fine = its finest layer.
- **bertopic-own**: BERTopic with no oracle: fine = its topics, coarse = its own automatic reduction
  (``reduce_topics(nr_topics="auto")``, HDBSCAN on the topic embeddings).
- **global2**: one UMAP projection of all points (our root reducer), HDBSCAN with our root's
  min_cluster_size, then HDBSCAN again inside each coarse cluster *on the same projection*
  (depth-1 min_cluster_size): our recursion without re-projection.
- **kmeans-oracle**: k-means on the raw vectors with k = the true coarse count, and again with
  k = the true fine count (flat; each fine cluster's parent is the coarse cluster holding most of it).

Per method and level: NMI and ARI on all points (noise one label) and on clustered points,
share clustered, cluster count; per method: wall time (after an untimed warm-up of each method
on a small random set so no one pays numba compilation) and hierarchy consistency.

    .venv/bin/python bench/quality.py --quick     # tiny default + pylibs (25/subpackage) + synthetic 3,000
                                                  # + pywide (40) and debian (60 per fine class)
    .venv/bin/python bench/quality.py             # full default + pylibs (150/subpackage) + synthetic 10,000
                                                  # + pywide and debian (150 per fine class)
    .venv/bin/python bench/quality.py --quick --sweep    # also ours under the lever overrides below

Writes ``bench/results/<date>-<git sha>-quality.json`` and ``bench/results/latest-quality.md``
(``-quality-sweep`` with ``--sweep``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from corpus_proximity.cache import atomic_write_json, atomic_write_text
from corpus_proximity.config import ExperimentConfig, apply_overrides, load_config, to_dict
from corpus_proximity.evals import labelled
from corpus_proximity.evals.quality import cut_hierarchy, hierarchy_consistency, level_scores
from corpus_proximity.tree.build import min_cluster_size, node_seed, recursive_cluster
from corpus_proximity.tree.clusterers import make_clusterer, make_reducer
from corpus_proximity.tree.tree import ROOT as ROOT_ID

from bench_tree import machine_info

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
METHODS = ("ours", "bertopic", "bertopic-own", "evoc", "evoc-own", "global2", "kmeans-oracle")
CORPORA = ("default", "pylibs", "synthetic", "pywide", "debian")
SWEEP = (  # ours under the root candidates: the breadth rule (layers) and its knobs, and the density roots
    ["clustering.root_clusterer=layers"],
    ["clustering.root_clusterer=layers", "clustering.max_children=20"],
    ["clustering.root_clusterer=hdbscan"],
)

# --- methods: (X, data, k_coarse, k_fine, cfg) -> (coarse labels, fine labels), -1 = noise --------

def run_ours(X, data, kc, kf, cfg):
    tree = recursive_cluster(X, cfg)
    d0 = tree.labels_at_depth(0).astype(str)
    d1 = tree.labels_at_depth(1).astype(str) if tree.n_depths > 1 else np.full(len(X), "", dtype=object)
    return d0, np.where(d1 == "", d0, d1)


def _bertopic_fit(X, data, cfg):
    from bertopic import BERTopic
    from umap import UMAP

    docs = data.texts if data.texts is not None else [f"w{i % 97} w{i % 89}" for i in range(len(X))]
    umap_model = UMAP(n_neighbors=15, n_components=5, min_dist=0.0, metric="cosine", random_state=cfg.seed)
    model = BERTopic(umap_model=umap_model)
    return model, docs, np.asarray(model.fit_transform(docs, embeddings=X)[0])


def run_bertopic(X, data, kc, kf, cfg):
    model, docs, fine = _bertopic_fit(X, data, cfg)
    n_topics = len(set(fine.tolist()) - {-1})
    if n_topics <= kc:
        return fine, fine
    hier = model.hierarchical_topics(docs, use_ctfidf=False)
    merges = [(float(d), list(t)) for d, t in zip(hier["Distance"], hier["Topics"])]
    return cut_hierarchy(fine, merges, kc), fine


def run_bertopic_own(X, data, kc, kf, cfg):
    model, docs, fine = _bertopic_fit(X, data, cfg)
    if len(set(fine.tolist()) - {-1}) < 2:
        return fine, fine
    model.reduce_topics(docs, nr_topics="auto")
    return np.asarray(model.topics_), fine


def run_evoc_own(X, data, kc, kf, cfg):
    import evoc

    model = evoc.EVoC(random_state=cfg.seed)
    coarse = np.asarray(model.fit_predict(X))
    return coarse, np.asarray(model.cluster_layers_[0])


def run_evoc(X, data, kc, kf, cfg):
    import evoc

    model = evoc.EVoC(random_state=cfg.seed)
    model.fit_predict(X)
    layers = model.cluster_layers_
    counts = [len(set(np.asarray(layer).tolist()) - {-1}) for layer in layers]

    def closest(k):
        return np.asarray(layers[int(np.argmin([abs(c - k) for c in counts]))])
    return closest(kc), closest(kf)


def run_global2(X, data, kc, kf, cfg):
    seed = node_seed(cfg.seed, ROOT_ID)
    reduced = make_reducer(dataclasses.replace(cfg, umap_fit_sample=None)).fit_transform(X, seed)
    clusterer = make_clusterer("hdbscan", cfg)
    coarse = clusterer.fit_predict(reduced, min_cluster_size(len(X), 0, cfg), seed)
    fine = np.full(len(X), -1, dtype=np.int64)
    nxt = 0
    for c in np.unique(coarse[coarse >= 0]):
        idx = np.flatnonzero(coarse == c)
        mcs = min_cluster_size(len(idx), 1, cfg)
        sub = clusterer.fit_predict(reduced[idx], mcs, seed) if len(idx) >= 2 * mcs else np.zeros(len(idx), int)
        if len(set(sub[sub >= 0].tolist())) < 2:  # no split: the coarse cluster is its own fine cluster
            sub = np.zeros(len(idx), dtype=np.int64)
        fine[idx] = np.where(sub >= 0, sub + nxt, -1)
        nxt += int(sub.max()) + 1
    return coarse, fine


def run_kmeans_oracle(X, data, kc, kf, cfg):
    from sklearn.cluster import KMeans

    return tuple(KMeans(k, n_init=4, random_state=cfg.seed).fit_predict(X) for k in (kc, kf))


RUNNERS = {"ours": run_ours, "bertopic": run_bertopic, "bertopic-own": run_bertopic_own, "evoc": run_evoc,
           "evoc-own": run_evoc_own, "global2": run_global2, "kmeans-oracle": run_kmeans_oracle}


def evaluate(method: str, data: labelled.Labelled, cfg, label: str | None = None) -> dict:
    kc, kf = len(set(data.coarse.tolist())), len(set(data.fine.tolist()))
    row = {"data": data.name, "method": label or method, "n": len(data.X)}
    t0 = time.perf_counter()
    try:
        coarse, fine = RUNNERS[method](data.X, data, kc, kf, cfg)
    except Exception as e:  # a peer that fails is a result, not a crash of the whole bench
        traceback.print_exc()
        return {**row, "error": f"{type(e).__name__}: {e}"}
    row["seconds"] = round(time.perf_counter() - t0, 2)
    row["coarse"] = level_scores(data.coarse, coarse)
    row["fine"] = level_scores(data.fine, fine)
    row["consistency"] = hierarchy_consistency(data.coarse, coarse, fine)
    return row


def warm_up(methods, cfg) -> None:
    """Imports and numba JIT of every method, on 600 random vectors, untimed."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((600, 32)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = np.arange(600) % 4
    toy = labelled.Labelled("warm-up", X, y, np.arange(600) % 8, None, cfg)
    for m in methods:
        try:
            RUNNERS[m](X, toy, 4, 8, dataclasses.replace(cfg, min_cluster_floor=10, floor_base=20))
        except Exception:  # noqa: BLE001 - random data may have no structure; only the JIT matters
            pass


# --- report ------------------------------------------------------------------------------------

def _cell(r: dict, level: str) -> str:
    s = r[level]
    return (f"{s['nmi']:.2f} / {s['nmi_clustered']:.2f} | {s['ari']:.2f} / {s['ari_clustered']:.2f} "
            f"| {s['clustered']:.0%} | {s['n_clusters']}")


def markdown(rows: list[dict], truths: dict) -> str:
    head = ("| data | method | coarse NMI all / clustered | coarse ARI all / clustered | coarse clustered | "
            "coarse k | fine NMI all / clustered | fine ARI all / clustered | fine clustered | fine k "
            "| consistency | seconds |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        kc, kf = truths[r["data"]]
        if "error" in r:
            lines.append(f"| {r['data']} | {r['method']} | {r['error'][:80]} |" + " |" * 9)
            continue
        cons = "–" if r["consistency"] is None else f"{r['consistency']:.2f}"
        lines.append(f"| {r['data']} (k={kc}/{kf}) | {r['method']} | {_cell(r, 'coarse')} | {_cell(r, 'fine')} "
                     f"| {cons} | {r['seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny default corpus, pylibs 25/subpackage, synthetic 3,000, pywide 40 and debian 60/fine class")
    p.add_argument("--corpora", nargs="*", default=list(CORPORA), choices=CORPORA)
    p.add_argument("--methods", nargs="*", default=list(METHODS), choices=METHODS)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="clustering.F=V",
                   help="override a ClusteringConfig field for ours (and global2's shared settings)")
    p.add_argument("--sweep", action="store_true", help="also run ours under each lever override in SWEEP")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    tiny = load_config(ROOT / "configs" / ("clustering_01_tiny.py" if args.quick else "clustering_02_full.py"))
    loaders = {"default": lambda: labelled.load_default(str(ROOT / "configs" / (
                   "clustering_01_tiny.py" if args.quick else "clustering_02_full.py"))),
               "pylibs": lambda: labelled.load_pylibs(25 if args.quick else 150, tiny),
               "synthetic": lambda: labelled.load_synthetic(100 if args.quick else 333, tiny.clustering),
               "pywide": lambda: labelled.load_pywide(40 if args.quick else 150, tiny),
               "debian": lambda: labelled.load_debian(60 if args.quick else 150, tiny)}
    started = datetime.datetime.now()
    datasets = []
    for name in args.corpora:
        data = loaders[name]()
        print(f"quality: {data.describe()}", file=sys.stderr, flush=True)
        datasets.append(data)

    def cfg_for(data: labelled.Labelled, extra: list[str]):
        # n_jobs=1: the bench machine is shared; every method gets one process.
        exp = ExperimentConfig(clustering=dataclasses.replace(data.clustering, n_jobs=1))
        return apply_overrides(exp, args.overrides + extra).clustering

    warm_up(args.methods, cfg_for(datasets[0], []))
    rows, truths = [], {}
    for data in datasets:
        truths[data.name] = (len(set(data.coarse.tolist())), len(set(data.fine.tolist())))
        for m in args.methods:
            print(f"quality: {data.name}: {m} …", file=sys.stderr, flush=True)
            rows.append(evaluate(m, data, cfg_for(data, [])))
            print(f"quality: row {json.dumps(rows[-1])}", file=sys.stderr, flush=True)
        for extra in SWEEP if args.sweep else ():
            label = "ours " + " ".join(e.removeprefix("clustering.") for e in extra)
            print(f"quality: {data.name}: {label} …", file=sys.stderr, flush=True)
            rows.append(evaluate("ours", data, cfg_for(data, extra), label))
            print(f"quality: row {json.dumps(rows[-1])}", file=sys.stderr, flush=True)
    machine, table = machine_info(), markdown(rows, truths)
    sha = machine["git_sha"]
    # a sweep, an override or a subset of methods/corpora does not replace the side-by-side table
    full = not args.overrides and set(args.methods) == set(METHODS) and set(args.corpora) == set(CORPORA)
    kind = "quality-sweep" if args.sweep else ("quality" if full else "quality-adhoc")
    out = RESULTS / f"{started:%Y-%m-%d}-{sha}-{kind}.json"
    atomic_write_json(out, {"started": started.isoformat(timespec="seconds"), "argv": sys.argv[1:],
                            "machine": machine, "truth_counts": truths, "rows": rows,
                            "clustering": {d.name: to_dict(cfg_for(d, [])) for d in datasets}})
    atomic_write_text(RESULTS / f"latest-{kind}.md", (
        f"# Quality benchmark: {started:%Y-%m-%d} {sha}{' (dirty)' if machine['git_dirty'] else ''}, "
        f"{machine['nproc']} cores, `{' '.join(sys.argv[1:])}`\n\n"
        f"k = true coarse/fine counts. NMI/ARI \"all\" count noise as one label; \"clustered\" scores only "
        f"the points a method clustered. Consistency = share of fine clusters whose majority true coarse "
        f"label equals their parent's. Seconds: one run each, shared machine (noisy).\n\n{table}"))
    print(table)
    print(f"quality: {out.relative_to(ROOT)} and {(RESULTS / f'latest-{kind}.md').relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
