"""The embedding stage on Ray: the same shards, written by the same driver, computed by an actor pool.

``embedding.engine = "ray"`` runs a Ray Data pipeline over the shards still missing from the stage
directory: one dataset row per shard (its index and row range), ``map_batches`` with a pool of
``embedding.ray_actors`` actors, each loading the model once (one GPU per actor where the cluster
has GPUs, else one CPU), reading its rows of ``chunks.parquet`` and returning the shard's vectors.
The driver streams the results back and writes each shard atomically under the name the local
engine uses, so the two engines share one cache layout: a killed Ray run resumes from its finished
shards with either engine, and the join, checks and ``_SUCCESS`` are the local path's.

The workers read ``chunks.parquet`` by path, so on a multi-node cluster the cache directory must
be on storage every node mounts (as for any Ray Data read); the vectors travel back to the driver,
which alone writes.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from corpus_proximity import cli
from corpus_proximity.cache import atomic_save_npy
from corpus_proximity.config import EmbeddingConfig
from corpus_proximity.distributed import init_ray
from corpus_proximity.errors import InputError


def read_rows(path: Path, lo: int, hi: int, column: str = "text") -> list:
    """Rows ``lo:hi`` of one column of a Parquet file, reading only the row groups they span."""
    f = pq.ParquetFile(path)
    out, start = [], 0
    for g in range(f.num_row_groups):
        n = f.metadata.row_group(g).num_rows
        if start + n > lo and start < hi:
            col = f.read_row_group(g, columns=[column]).column(column).to_pylist()
            out.extend(col[max(lo - start, 0):min(hi - start, n)])
        start += n
        if start >= hi:
            break
    return out


class _ShardEmbedder:
    """A Ray Data actor: one model per actor, one shard per call."""

    def __init__(self, cfg: EmbeddingConfig, chunks_path: str):
        from corpus_proximity.text.embedders import SentenceTransformerEmbedder

        self.embedder = SentenceTransformerEmbedder(cfg)
        self.chunks_path = Path(chunks_path)

    def __call__(self, batch: dict) -> dict:
        shards, vecs = [], []
        for i, lo, hi in zip(batch["shard"], batch["lo"], batch["hi"]):
            texts = read_rows(self.chunks_path, int(lo), int(hi))
            shards.append(int(i))
            vecs.append(self.embedder.encode(texts, int(lo)))
        return {"shard": np.asarray(shards), "vecs": np.stack(vecs)}  # batch_size=1: one shard per call


def embed_to_shards_ray(cfg: EmbeddingConfig, chunks_path: Path, n: int, dim: int, shard_dir: Path,
                        shard_size: int, pending: list[int], description: str = "embedding (ray)") -> None:
    """Compute the ``pending`` shards on Ray and write them into ``shard_dir`` as they arrive."""
    try:
        import ray
    except ImportError:
        raise InputError("embedding.engine=ray needs Ray: pip install 'corpus-proximity[ray]' "
                         "(or use embedding.engine=local)") from None
    if not pending:
        return
    init_ray(cfg.ray_address, num_cpus=cfg.ray_actors, field="embedding.ray_address")
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    rows = [{"shard": i, "lo": i * shard_size, "hi": min(n, (i + 1) * shard_size)} for i in pending]
    ds = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
        _ShardEmbedder, fn_constructor_args=(cfg, str(chunks_path)), batch_size=1,
        concurrency=cfg.ray_actors, num_gpus=gpus, num_cpus=1)
    todo = sum(r["hi"] - r["lo"] for r in rows)
    with cli.progress_bar() as progress:
        task = progress.add_task(description, total=todo, rate="")
        t0, done = time.perf_counter(), 0
        for batch in ds.iter_batches(batch_size=1, batch_format="numpy"):
            i, vecs = int(batch["shard"][0]), np.asarray(batch["vecs"][0], dtype=np.float32)
            expect = min(n, (i + 1) * shard_size) - i * shard_size
            if vecs.shape != (expect, dim):
                raise RuntimeError(f"ray shard {i}: got {vecs.shape}, expected {(expect, dim)}")
            atomic_save_npy(shard_dir / f"shard-{i:05d}.npy", vecs)
            done += expect
            progress.update(task, advance=expect, rate=f"{done / max(time.perf_counter() - t0, 1e-9):.1f} texts/s")
