"""Scale-out: the Ray engines against the local ones in the same run, and streaming chunking's memory.

1. **Embedding** (``embedding.engine``): chunks/s of the local engine (one process, torch's own
   threads) and of the Ray actor pool with 1 and 2 actors (``ray_embed.embed_to_shards_ray``, one
   CPU and one model per actor) on real chunks of the small default corpus, model loading included
   on both sides (the Ray pipeline's start too; ``ray.init`` is paid once, before, and reported).
2. **Placement** (``annotation.engine``): outputs/s of ``place_outputs`` (exact k-nearest-chunk
   search + vote) here and on a ``RayPlacer`` pool of 1 and 2 actors holding the corpus once in the
   object store, on bench_placement's synthetic labelled corpus; the pool's start (index shipped,
   actors built) is reported apart. The Ray paths are checked equal to the local ones.
3. **Peak RSS per Ray worker**: psutil samples every worker process of the local Ray instance
   (``ray::`` titles) during each phase; the largest peak of the phase's actors is reported (RSS
   counts the object-store pages an actor reads, so the shared corpus counts in every placer).
4. **Streaming chunking** (``--chunk-mb``, 0 to skip): peak RSS of chunking a synthetic JSONL of
   that size (``chunking.strategy = "none"``, no tokenizer: reading and writing only) by
   ``iter_corpus`` + ``write_chunks`` against the pre-streaming path (the whole file in one
   DataFrame, all rows, one table), each in a fresh subprocess.

    .venv/bin/python bench/bench_scale.py --quick      # 192 chunks, 20k x 8k placement, 200 MB JSONL: ~4 min
    .venv/bin/python bench/bench_scale.py              # 512 chunks, 50k x 20k placement

Writes ``bench/results/<date>-<git sha>-scale.json`` and ``bench/results/latest-scale.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench_annotate import clustered_corpus  # noqa: E402
from bench_placement import labelled_tree  # noqa: E402

from corpus_proximity.cache import atomic_write_json, atomic_write_text  # noqa: E402
from corpus_proximity.config import AnnotationConfig, CorpusConfig, ExperimentConfig  # noqa: E402

from bench_tree import machine_info  # noqa: E402

RESULTS = ROOT / "bench" / "results"


class WorkerSampler:
    """Peak RSS / USS (bytes) of every Ray worker process, by pid, sampled in a thread."""

    def __init__(self, every: float = 0.25):
        self.every, self.peak, self.titles = every, {}, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.is_set():
            for p in me.children(recursive=True):
                try:
                    title = " ".join(p.cmdline())[:80]
                    if not title.startswith("ray::"):
                        continue
                    m = p.memory_full_info()
                except (psutil.Error, OSError):
                    continue
                old = self.peak.get(p.pid, (0, 0))
                self.peak[p.pid] = (max(old[0], m.rss), max(old[1], m.uss))
                self.titles.setdefault(p.pid, set()).add(title.split()[0])
            self._stop.wait(self.every)

    def of(self, needle: str) -> dict:
        pids = [pid for pid, t in self.titles.items() if any(needle in x for x in t)]
        if not pids:
            return {"workers": 0}
        return {"workers": len(pids), "peak_rss_mb": max(self.peak[p][0] for p in pids) / 1e6,
                "peak_uss_mb": max(self.peak[p][1] for p in pids) / 1e6}


def bench_embedding(n_chunks: int, workers: list[int], tmp: Path) -> dict:
    from corpus_proximity.distributed import init_ray
    from corpus_proximity.text import chunking, embedding
    from corpus_proximity.text.embedders import SentenceTransformerEmbedder
    from corpus_proximity.text.ray_embed import embed_to_shards_ray

    cfg = ExperimentConfig(name="scale", cache_dir=str(tmp / "cache"), output_dir=str(tmp / "out"),
                           corpus=CorpusConfig(default_bbc_per_topic=30, default_stdlib_packages=("email", "asyncio"),
                                               default_stdlib_per_package=40, default_maths_per_category=0))
    from rich.console import Console

    chunks = chunking.run_chunking(cfg, Console(file=io.StringIO()))
    texts = chunking.read_chunks(chunks, ["text"]).column("text").to_pylist()[:n_chunks]
    src = tmp / "chunks.parquet"
    import pyarrow as pa
    import pyarrow.parquet as pq

    size = 32
    pq.write_table(pa.table({"text": texts}), src, row_group_size=size)
    out = {"chunks": len(texts), "shard_size": size, "model": cfg.embedding.model}
    t0 = time.perf_counter()
    emb = SentenceTransformerEmbedder(cfg.embedding)
    paths = embedding.embed_to_shards(texts, emb, tmp / "local", size)
    local_s = time.perf_counter() - t0
    ref = np.concatenate([np.load(p) for p in paths])
    del emb
    out["local"] = {"seconds": local_s, "chunks_per_s": len(texts) / local_s}
    t0 = time.perf_counter()
    init_ray(None, num_cpus=max(workers))  # what the engines start: local, 127.0.0.1, the package shipped
    out["ray_init_s"] = time.perf_counter() - t0
    n_shards = (len(texts) + size - 1) // size
    for w in workers:
        shard_dir = tmp / f"ray{w}"
        shard_dir.mkdir()
        with WorkerSampler() as s:
            t0 = time.perf_counter()
            embed_to_shards_ray(dataclasses.replace(cfg.embedding, ray_actors=w), src, len(texts), ref.shape[1],
                                shard_dir, size, list(range(n_shards)))
            sec = time.perf_counter() - t0
        got = np.concatenate([np.load(shard_dir / f"shard-{i:05d}.npy") for i in range(n_shards)])
        out[f"ray_{w}"] = {"seconds": sec, "chunks_per_s": len(texts) / sec, "max_abs_diff": float(np.abs(got - ref).max()),
                           **s.of("ShardEmbedder")}
    return out


def bench_placement(n_corpus: int, n_queries: int, workers: list[int]) -> dict:
    from corpus_proximity.tree.index import ExactSearch
    from corpus_proximity.tree.placement import place_outputs
    from corpus_proximity.tree.ray_place import RayPlacer

    corpus, queries = clustered_corpus(n_corpus, n_queries)
    tree = labelled_tree(corpus)
    search = ExactSearch(corpus)
    a = AnnotationConfig()
    t0 = time.perf_counter()
    local = place_outputs(queries, search, tree, a.placement, a.knn_k)
    sec = time.perf_counter() - t0
    out = {"corpus": n_corpus, "queries": n_queries, "k": a.knn_k, "batch": a.ray_batch,
           "corpus_mb": corpus.nbytes / 1e6, "local": {"seconds": sec, "outputs_per_s": n_queries / sec}}
    for w in workers:
        with WorkerSampler() as s:
            t0 = time.perf_counter()
            placer = RayPlacer(search, tree, dataclasses.replace(a, engine="ray", ray_actors=w))
            placer.place(queries[:w])  # every actor built (index fetched, paths computed)
            start = time.perf_counter() - t0
            t0 = time.perf_counter()
            got = placer.place(queries)
            sec = time.perf_counter() - t0
            own = placer.memory()
            placer.close()
        out[f"ray_{w}"] = {"start_s": start, "seconds": sec, "outputs_per_s": n_queries / sec,
                           "same_paths": bool((got.assignment.node_index == local.assignment.node_index).all()),
                           "nn_sim_max_diff": float(np.abs(got.nn_sim - local.nn_sim).max()),
                           "actor_peak_rss_mb": max(m["peak_rss"] for m in own) / 1e6, **s.of("_Placer")}
    return out


# --- streaming chunking's memory ---------------------------------------------------------------

def synthetic_jsonl(path: Path, mb: int, seed: int = 0) -> int:
    """~``mb`` MB of JSONL documents of random words (about 2 KB each); returns the document count."""
    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i:x}" for i in range(20_000)])
    n, written = 0, 0
    with open(path, "w") as f:
        while written < mb * 1_000_000:
            words = vocab[rng.integers(0, len(vocab), (1000, 330))]
            lines = "".join(json.dumps({"id": f"d{n + i}", "text": " ".join(w), "topic": int(i % 7)}) + "\n"
                            for i, w in enumerate(words))
            f.write(lines)
            written += len(lines)
            n += 1000
    return n


def _chunk_worker(mode: str, src: str, dst: str) -> None:
    """In a fresh process: chunk ``src`` into ``dst`` one way; print seconds and VmHWM (MB) as JSON."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from corpus_proximity.config import ChunkingConfig
    from corpus_proximity.text.chunking import chunk_documents, write_chunks
    from corpus_proximity.text.corpus import frame_records, iter_corpus, parse_jsonl

    corpus, cfg = CorpusConfig(path=src), ChunkingConfig(strategy="none")
    t0 = time.perf_counter()
    if mode == "streaming":
        _, n = write_chunks(iter_corpus(corpus), cfg, None, 256, Path(dst))
    else:  # the pre-streaming path: whole file decoded, one DataFrame, every row, one table
        df = pd.DataFrame(parse_jsonl(Path(src).read_bytes().decode("utf-8"), Path(src)))
        docs = [d for d in frame_records(df, corpus, 0) if d["text"].strip()]
        del df
        rows = chunk_documents(docs, cfg, None, 256)
        pq.write_table(pa.Table.from_pylist(rows), dst)
        n = len(rows)
    sec = time.perf_counter() - t0
    hwm = next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM")) / 1024
    print(json.dumps({"seconds": sec, "peak_rss_mb": hwm, "chunks": n}))


def bench_chunking(mb: int, tmp: Path) -> dict:
    src = tmp / "corpus.jsonl"
    n_docs = synthetic_jsonl(src, mb)
    out = {"file_mb": src.stat().st_size / 1e6, "docs": n_docs}
    for mode in ("streaming", "read_all"):
        dst = tmp / f"{mode}.parquet"
        r = subprocess.run([sys.executable, __file__, "--chunk-worker", mode, str(src), str(dst)], cwd=ROOT,
                           capture_output=True, text=True, check=True)
        out[mode] = json.loads(r.stdout.strip().splitlines()[-1])
    import pyarrow.parquet as pq

    out["same_table"] = pq.read_table(tmp / "streaming.parquet").equals(pq.read_table(tmp / "read_all.parquet"))
    return out


def markdown(r: dict) -> str:
    e, p = r["embedding"], r["placement"]
    md = [f"# Scale-out bench ({r['date']}, {r['git']}, {r['environment']['nproc']} cpus)\n",
          f"Embedding: {e['chunks']} chunks of the default corpus, {e['model']}, shards of {e['shard_size']}; "
          f"ray.init {e['ray_init_s']:.1f} s once. Placement: {p['queries']:,} outputs x {p['corpus']:,} chunks "
          f"(384-d, {p['corpus_mb']:.0f} MB), exact k={p['k']} + vote, Ray batches of {p['batch']}.\n",
          "| stage | engine | chunks or outputs/s | ratio vs local | peak RSS / USS per worker (MB) | equal to local |",
          "|---|---|---|---|---|---|",
          f"| embedding | local | {e['local']['chunks_per_s']:.1f} | 1.00 | (driver) | |"]
    for k in sorted(x for x in e if x.startswith("ray_") and x != "ray_init_s"):
        v = e[k]
        md.append(f"| embedding | ray, {k[4:]} actor(s) | {v['chunks_per_s']:.1f} | "
                  f"{v['chunks_per_s'] / e['local']['chunks_per_s']:.2f} | "
                  f"{v.get('peak_rss_mb', float('nan')):.0f} / {v.get('peak_uss_mb', float('nan')):.0f} | "
                  f"max abs diff {v['max_abs_diff']:.1e} |")
    md.append(f"| placement | local | {p['local']['outputs_per_s']:,.0f} | 1.00 | (driver) | |")
    for k in sorted(x for x in p if x.startswith("ray_")):
        v = p[k]
        md.append(f"| placement | ray, {k[4:]} actor(s) (start {v['start_s']:.1f} s) | {v['outputs_per_s']:,.0f} | "
                  f"{v['outputs_per_s'] / p['local']['outputs_per_s']:.2f} | "
                  f"{v.get('peak_rss_mb', float('nan')):.0f} / {v.get('peak_uss_mb', float('nan')):.0f} | "
                  f"paths {'same' if v['same_paths'] else 'DIFFER'}, nn_sim diff {v['nn_sim_max_diff']:.1e} |")
    c = r.get("chunking")
    if c:
        s, a = c["streaming"], c["read_all"]
        md.append(f"\nStreaming chunking of a {c['file_mb']:.0f} MB JSONL ({c['docs']:,} documents, strategy none): "
                  f"peak RSS {s['peak_rss_mb']:.0f} MB streaming vs {a['peak_rss_mb']:.0f} MB reading it all "
                  f"({s['peak_rss_mb'] / a['peak_rss_mb']:.2f}x), {s['seconds']:.1f} s vs {a['seconds']:.1f} s; "
                  f"same table: {c['same_table']}.")
    return "\n".join(md) + "\n"


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--chunk-worker":
        _chunk_worker(*sys.argv[2:5])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--chunks", type=int, default=None, help="chunks embedded per engine")
    ap.add_argument("--corpus-size", type=int, default=None)
    ap.add_argument("--queries", type=int, default=None)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--chunk-mb", type=int, default=200, help="synthetic JSONL size for streaming chunking (0 = skip)")
    args = ap.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    r = {"date": datetime.date.today().isoformat()}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as d:
        tmp = Path(d)
        if args.chunk_mb:  # first, before Ray's processes share the machine
            r["chunking"] = bench_chunking(args.chunk_mb, tmp)
            print(json.dumps(r["chunking"]), file=sys.stderr, flush=True)
        r["embedding"] = bench_embedding(args.chunks or (192 if args.quick else 512), workers, tmp)
        print(json.dumps(r["embedding"]), file=sys.stderr, flush=True)
        r["placement"] = bench_placement(args.corpus_size or (20_000 if args.quick else 50_000),
                                         args.queries or (8_000 if args.quick else 20_000), workers)
    import ray

    ray.shutdown()
    machine = machine_info()
    r.update({"git": machine["git_sha"], "environment": machine})
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_json(RESULTS / f"{r['date']}-{r['git']}-scale.json", r)
    md = markdown(r)
    atomic_write_text(RESULTS / "latest-scale.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
