"""Time to tree and peak memory vs N for ours and the peers on the same vectors, and the
embedding throughput of ``embed_chunks.py`` against a plain ``SentenceTransformer.encode``.

Clustering (one planted dataset per N, 384-d unit vectors, ``bench_tree.planted_sphere``:
10 coarse regions × 5 fine blobs, seeded):

- **ours**: ``cluster_corpus.recursive_cluster`` with the default ``ClusteringConfig`` (n_jobs=1).
- **global**: one UMAP of all vectors with our root's reducer (no fit sample) + HDBSCAN once with
  the root's min_cluster_size: what most topic pipelines do (``bench_tree.run_peer``).
- **bertopic**: ``BERTopic`` with precomputed embeddings and its defaults (UMAP 5-d cosine,
  seeded; HDBSCAN min_cluster_size 10; c-TF-IDF) and then ``hierarchical_topics(docs)``: its tree.
  BERTopic needs documents: each vector gets 20 words drawn from a 2,000-word vocabulary with a
  per-blob bias, so c-TF-IDF has realistic work to do.
- **evoc**: ``evoc.EVoC(random_state=0).fit_predict``: all of its cluster layers.

Each method runs in its own subprocess (this script with ``--worker``): imports and numba JIT are
warmed up on a small set outside the timings, then the sizes run in ascending order; before each
the peak-RSS counter is reset (``/proc/self/clear_refs``), so a size's peak is its own. A method
that takes longer than ``--max-seconds`` at one size is not run at the larger ones (said in the
table). Reported: seconds, CPU seconds, peak RSS and peak above the process's baseline; ratios
ours / peer at each N from the same run; the exponent b of a least-squares fit log t = a + b log N.

Embedding: the same chunk texts of the default corpus embedded by the stage's path
(``embed_chunks.embed_to_shards`` + ``join_shards`` through ``SentenceTransformerEmbedder``: sharded,
atomic, resumable) and by one ``model.encode(texts, normalize_embeddings=True)`` call on the same
loaded model, alternating, best of two each; the vectors are checked to agree.

    .venv/bin/python bench/speed.py --quick      # N = 5k, 10k; 64 texts (make bench)
    .venv/bin/python bench/speed.py              # N = 10k, 30k, 100k, 300k; 2,048 texts (long on 2 cores)
    .venv/bin/python bench/speed.py --sizes 3000 6000 --methods ours evoc --embed-texts 0

Writes ``bench/results/<date>-<git sha>-speed.json`` and ``bench/results/latest-speed.md``
(``-speed-quick`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from corpus_proximity.cache import atomic_write_json, atomic_write_text
from corpus_proximity.config import ClusteringConfig, load_config, to_dict
from corpus_proximity.tree.build import recursive_cluster

from bench_tree import DIM, _proc_kib, _warm_up, machine_info, planted_sphere, run_peer

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
METHODS = ("ours", "global", "bertopic", "evoc")
PEERS = METHODS[1:]
QUICK_SIZES, FULL_SIZES = (5000, 10000), (10000, 30000, 100000, 300000)


# --- the methods: (X, docs, cfg) -> facts about the result ----------------------------------------

def run_ours(X, docs, cfg: ClusteringConfig) -> dict:
    tree = recursive_cluster(X, cfg)
    return {"clusters": len(tree.nodes) - 1, "depths": tree.n_depths,
            "noise_share": sum(len(nd.noise) for nd in tree.nodes.values()) / tree.n_points}


def run_global(X, docs, cfg: ClusteringConfig) -> dict:
    r = run_peer(X, cfg, None)
    return {"clusters": r["n_clusters"], "depths": 1, "noise_share": r["noise_share"]}


def _bertopic(seed: int):
    from bertopic import BERTopic
    from umap import UMAP

    return BERTopic(umap_model=UMAP(n_neighbors=15, n_components=5, min_dist=0.0, metric="cosine",
                                    random_state=seed))


def run_bertopic(X, docs, cfg: ClusteringConfig) -> dict:
    model = _bertopic(cfg.seed)
    topics = np.asarray(model.fit_transform(docs, embeddings=np.asarray(X))[0])
    hier = model.hierarchical_topics(docs)
    return {"clusters": len(set(topics.tolist()) - {-1}), "depths": None, "merges": len(hier),
            "noise_share": float((topics < 0).mean())}


def run_evoc(X, docs, cfg: ClusteringConfig) -> dict:
    import evoc

    model = evoc.EVoC(random_state=cfg.seed)
    labels = np.asarray(model.fit_predict(np.asarray(X)))
    return {"clusters": sum(len(set(np.asarray(layer).tolist()) - {-1}) for layer in model.cluster_layers_),
            "depths": len(model.cluster_layers_), "noise_share": float((labels < 0).mean())}


RUNNERS = {"ours": run_ours, "global": run_global, "bertopic": run_bertopic, "evoc": run_evoc}


def planted_docs(fine: np.ndarray, seed: int = 0, words: int = 20, vocab: int = 2000) -> list[str]:
    """Per point ``words`` words: half from its blob's 40-word topic, half from the whole vocabulary."""
    rng = np.random.default_rng(seed)
    topic_words = rng.integers(0, vocab, size=(int(fine.max()) + 1, 40))
    own = topic_words[fine[:, None], rng.integers(0, 40, size=(len(fine), words // 2))]
    shared = rng.integers(0, vocab, size=(len(fine), words - words // 2))
    return [" ".join(f"w{w}" for w in row) for row in np.concatenate([own, shared], axis=1)]


def _warm_up_method(method: str, cfg: ClusteringConfig, max_n: int) -> None:
    """Imports and numba JIT of one method on small planted data, untimed."""
    if method == "ours" and cfg.umap_fit_sample is not None and max_n > cfg.umap_fit_sample:
        _warm_up(cfg)  # also UMAP's transform, which our nodes above umap_fit_sample use
    # 4,500 points: above UMAP's 4,096 cut-over to NN-descent, so that path is compiled here too
    X, _, fine = planted_sphere(4500, seed=99)
    RUNNERS[method](X, planted_docs(fine, 99), cfg)


def worker(spec_path: str) -> int:
    """One method over every size, ascending; appends a row per size to the spec's output file."""
    spec = json.loads(Path(spec_path).read_text())
    method, cfg = spec["method"], ClusteringConfig(**spec["clustering"])
    out = Path(spec["out"])
    t0 = time.perf_counter()
    _warm_up_method(method, cfg, max(d["n"] for d in spec["data"]))
    warm = time.perf_counter() - t0
    rows = []
    for entry in spec["data"]:
        X = np.load(entry["npy"], mmap_mode="r")
        docs = json.loads(Path(entry["docs"]).read_text()) if method == "bertopic" else None
        gc.collect()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM: this size's peak, not an earlier one's
        baseline = _proc_kib("self", "VmRSS")
        cpu0, t0 = os.times(), time.perf_counter()
        facts = RUNNERS[method](X, docs, cfg)
        seconds, cpu1 = time.perf_counter() - t0, os.times()
        peak = _proc_kib("self", "VmHWM")
        rows.append({"n": entry["n"], "seconds": seconds, "warmup_s": warm,
                     "cpu_s": (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system),
                     "baseline_mib": baseline / 1024, "peak_mib": peak / 1024,
                     "peak_above_baseline_mib": (peak - baseline) / 1024, **facts})
        out.write_text(json.dumps(rows))  # written per size: a later crash or timeout keeps these
        print(f"speed: {method} N={entry['n']}: {seconds:.1f} s, peak {peak / 1024:.0f} MiB",
              file=sys.stderr, flush=True)
        del X, docs
        if seconds > spec["max_seconds"]:
            break
    return 0


def run_method(method: str, data: list[dict], cfg: ClusteringConfig, max_seconds: float, tmp: Path) -> list[dict]:
    spec, out = tmp / f"{method}-spec.json", tmp / f"{method}-out.json"
    spec.write_text(json.dumps({"method": method, "data": data, "clustering": to_dict(cfg), "out": str(out),
                                "max_seconds": max_seconds}))
    print(f"speed: {method} on N = {', '.join(str(d['n']) for d in data)} …", file=sys.stderr, flush=True)
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", str(spec)], cwd=ROOT)
    rows = json.loads(out.read_text()) if out.is_file() else []
    if proc.returncode != 0:
        print(f"speed: the {method} worker exited {proc.returncode} after {len(rows)} size(s) "
              f"(its stderr is above); the rest is reported as failed", file=sys.stderr)
        rows += [{"n": d["n"], "error": f"worker exited {proc.returncode}"} for d in data[len(rows):]]
    else:
        rows += [{"n": d["n"], "skipped": f"a smaller N took > {max_seconds:.0f} s"} for d in data[len(rows):]]
    return rows


def exponent(rows: list[dict]) -> float | None:
    """b in log t = a + b log N, least squares over the sizes measured (None with fewer than 2)."""
    pts = [(math.log(r["n"]), math.log(r["seconds"])) for r in rows if "seconds" in r]
    if len(pts) < 2:
        return None
    x, y = np.array(pts).T
    return float(np.polyfit(x, y, 1)[0])


# --- embedding throughput ------------------------------------------------------------------------

def embedding_throughput(n_texts: int, rounds: int = 2) -> dict:
    """Stage path vs plain encode on the same texts and loaded model, alternating, best of ``rounds``."""
    from corpus_proximity.text import chunking
    from corpus_proximity.text.embedders import SentenceTransformerEmbedder
    from corpus_proximity.text.embedding import embed_to_shards, join_shards

    cfg = load_config(ROOT / "configs" / "clustering_01_tiny.py")
    if not Path(cfg.cache_dir).is_absolute():
        cfg = dataclasses.replace(cfg, cache_dir=str(ROOT / cfg.cache_dir))
    texts = chunking.read_chunks(chunking.run_chunking(cfg), ["text"]).column("text").to_pylist()
    step = max(1, len(texts) // n_texts)
    texts = texts[::step][:n_texts]  # spread over the corpus: both sources, all lengths
    embedder = SentenceTransformerEmbedder(cfg.embedding)
    model = embedder.model
    inputs = [embedder.prefix + t for t in texts] if embedder.prefix else texts
    embedder.encode(texts[:64], 0)  # warm-up: first-call allocations and kernels
    stage_s, plain_s = [], []
    with tempfile.TemporaryDirectory(prefix="bench-embed-") as tmp:
        for r in range(rounds):
            t0 = time.perf_counter()
            plain = model.encode(inputs, batch_size=cfg.embedding.batch_size, convert_to_numpy=True,
                                 normalize_embeddings=True, show_progress_bar=False)
            plain_s.append(time.perf_counter() - t0)
            shard_dir, out = Path(tmp) / f"shards-{r}", Path(tmp) / f"embeddings-{r}.npy"
            t0 = time.perf_counter()
            paths = embed_to_shards(texts, embedder, shard_dir, cfg.embedding.shard_size)
            join_shards(paths, out, embedder.dim, len(texts))
            stage_s.append(time.perf_counter() - t0)
            ours = np.load(out)
    max_diff = float(np.abs(ours - np.asarray(plain, dtype=np.float32)).max())
    s, p = min(stage_s), min(plain_s)
    return {"model": cfg.embedding.model, "texts": len(texts), "batch_size": cfg.embedding.batch_size,
            "shard_size": cfg.embedding.shard_size, "mean_chars": float(np.mean([len(t) for t in texts])),
            "stage_s": stage_s, "plain_s": plain_s, "stage_texts_per_s": len(texts) / s,
            "plain_texts_per_s": len(texts) / p, "time_ratio": s / p, "max_abs_diff": max_diff}


# --- report --------------------------------------------------------------------------------------

def markdown(results: dict[str, list[dict]], exps: dict, embed: dict | None) -> str:
    sizes = sorted({r["n"] for rows in results.values() for r in rows})
    by = {(m, r["n"]): r for m, rows in results.items() for r in rows}
    methods = list(results)
    peers = [m for m in methods if m != "ours"]
    head = ("| N | " + " | ".join(f"{m} s" for m in methods) + " | "
            + " | ".join(f"ours / {p} time" for p in peers) + " | "
            + " | ".join(f"{m} peak MiB (above base)" for m in methods) + " |")
    lines = ["Time to tree and peak RSS (one process per method, JIT warmed up; ratios from the same run):",
             "", head, "|" + "---|" * (head.count(" | ") + 1)]

    def cell(m, n, key):
        r = by.get((m, n))
        if r is None:
            return "–"
        if "seconds" not in r:
            return "skipped" if "skipped" in r else "failed"
        return f"{r[key]:.1f}" if key == "seconds" else f"{r['peak_mib']:.0f} ({r['peak_above_baseline_mib']:.0f})"

    def ratio(p, n):
        a, b = by.get(("ours", n), {}), by.get((p, n), {})
        return f"{a['seconds'] / b['seconds']:.2f}" if "seconds" in a and "seconds" in b else "–"

    for n in sizes:
        lines.append(f"| {n:,} | " + " | ".join(cell(m, n, "seconds") for m in methods) + " | "
                     + " | ".join(ratio(p, n) for p in peers) + " | "
                     + " | ".join(cell(m, n, "peak") for m in methods) + " |")
    lines += ["", "Exponent b of time ∝ N^b (least squares on log-log over the sizes each method ran): "
              + ", ".join(f"{m} {'–' if exps[m] is None else f'{exps[m]:.2f}'}" for m in methods) + "."]
    if embed:
        lines += ["", f"Embedding {embed['texts']} chunk texts of the default corpus (mean {embed['mean_chars']:.0f} "
                  f"chars) with {embed['model']}, batch {embed['batch_size']}: embed_chunks stage path "
                  f"{embed['stage_texts_per_s']:.1f} texts/s, plain `SentenceTransformer.encode` "
                  f"{embed['plain_texts_per_s']:.1f} texts/s; time ratio stage / plain {embed['time_ratio']:.2f} "
                  f"(best of {len(embed['stage_s'])} each, alternating); max |Δ| between the vectors "
                  f"{embed['max_abs_diff']:.1e}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="N = 5k, 10k and 64 texts (make bench)")
    p.add_argument("--sizes", type=int, nargs="+", help="N to run (default 10k 30k 100k 300k)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--max-seconds", type=float, default=1800.0,
                   help="a method slower than this at one N is not run at larger N")
    p.add_argument("--embed-texts", type=int, default=None, help="texts for the embedding comparison (0 = skip)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args.worker)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.sizes and min(args.sizes) < 1000:
        p.error(f"--sizes: each N must be at least 1000 (got {min(args.sizes)}); planted data has 50 blobs")
    sizes = sorted(args.sizes or (QUICK_SIZES if args.quick else FULL_SIZES))
    n_texts = args.embed_texts if args.embed_texts is not None else (64 if args.quick else 2048)
    cfg = ClusteringConfig()
    started = datetime.datetime.now()
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-speed-") as tmp_dir:
        tmp, data = Path(tmp_dir), []
        for n in sizes:
            X, _, fine = planted_sphere(n, seed=0)
            npy, docs = tmp / f"x-{n}.npy", tmp / f"docs-{n}.json"
            np.save(npy, X)
            docs.write_text(json.dumps(planted_docs(fine)))
            data.append({"n": n, "npy": str(npy), "docs": str(docs)})
            del X
        for m in args.methods:
            results[m] = run_method(m, data, cfg, args.max_seconds, tmp)
    exps = {m: exponent(rows) for m, rows in results.items()}
    embed = None
    if n_texts > 0:
        print(f"speed: embedding {n_texts} texts, stage path vs plain encode …", file=sys.stderr, flush=True)
        embed = embedding_throughput(n_texts)
    machine = machine_info()
    table = markdown(results, exps, embed)
    sha = machine["git_sha"]
    # a quick run does not replace the full table, nor does a run on other sizes or methods
    adhoc = args.sizes is not None or set(args.methods) != set(METHODS) or args.embed_texts is not None
    kind = "speed-adhoc" if adhoc else ("speed-quick" if args.quick else "speed")
    out = RESULTS / f"{started:%Y-%m-%d}-{sha}-{kind}.json"
    atomic_write_json(out, {"started": started.isoformat(timespec="seconds"), "argv": sys.argv[1:],
                            "machine": machine, "clustering": to_dict(cfg), "dim": DIM, "results": results,
                            "exponents": exps, "embedding": embed})
    atomic_write_text(RESULTS / f"latest-{kind}.md", (
        f"# Speed benchmark: {started:%Y-%m-%d} {sha}{' (dirty)' if machine['git_dirty'] else ''}, "
        f"{machine['nproc']} cores, `{' '.join(sys.argv[1:])}`\n\nPlanted 384-d unit vectors (10 regions × "
        f"5 blobs). Seconds are one run on a shared machine: read the ratios.\n\n{table}"))
    print(table)
    print(f"speed: {out.relative_to(ROOT)} and {(RESULTS / f'latest-{kind}.md').relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
