"""The embedding stage on Ray: the same shards, written by the same driver, computed by an actor pool.

``embedding.engine = "ray"`` runs a Ray Data pipeline over the shards still missing from the stage
directory: one dataset row per shard (its index and row range), ``map_batches`` with a pool of
``embedding.ray_actors`` actors, each loading the model once (one GPU per actor where the cluster
has GPUs, else one CPU), reading its rows of ``chunks.parquet`` and returning the shard's vectors.
The driver streams the results back and writes each shard atomically under the name the local
engine uses, so the two engines share one cache layout: a killed Ray run resumes from its finished
shards with either engine, and the join, checks and ``_SUCCESS`` are the local path's.

:func:`embed_texts_ray` does the same for texts the driver holds (the annotation's model outputs,
``annotation.engine = "ray"``): they are written to a scratch Parquet file beside the shards first.

The workers read ``chunks.parquet`` by path, so on a multi-node cluster the cache directory must
be on storage every node mounts (as for any Ray Data read); the vectors travel back to the driver,
which alone writes.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from corpus_proximity import cli
from corpus_proximity.cache import atomic_save_npy, atomic_writer
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

    def __init__(self, cfg: EmbeddingConfig, chunks_path: str, prefix: str | None = None):
        from corpus_proximity.text.embedders import SentenceTransformerEmbedder

        self.embedder = SentenceTransformerEmbedder(cfg)
        if prefix is not None:  # queries (annotation): the model's query prefix, not the document one
            self.embedder.prefix = prefix
        self.chunks_path = Path(chunks_path)

    def __call__(self, batch: dict) -> dict:
        shards, vecs = [], []
        for i, lo, hi in zip(batch["shard"], batch["lo"], batch["hi"]):
            texts = read_rows(self.chunks_path, int(lo), int(hi))
            shards.append(int(i))
            vecs.append(self.embedder.encode(texts, int(lo)))
        return {"shard": np.asarray(shards), "vecs": np.stack(vecs)}  # batch_size=1: one shard per call


def embed_to_shards_ray(cfg: EmbeddingConfig, chunks_path: Path, n: int, dim: int | None, shard_dir: Path,
                        shard_size: int, pending: list[int], description: str = "embedding (ray)",
                        prefix: str | None = None) -> int | None:
    """Compute the ``pending`` shards on Ray and write them into ``shard_dir`` as they arrive;
    returns the vectors' dimension (``dim``, or the first shard's where ``dim`` is None)."""
    try:
        import ray
    except ImportError:
        raise InputError("embedding.engine=ray needs Ray: pip install 'corpus-proximity[ray]' "
                         "(or use embedding.engine=local)") from None
    if not pending:
        return dim
    init_ray(cfg.ray_address, num_cpus=cfg.ray_actors, field="embedding.ray_address")
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    rows = [{"shard": i, "lo": i * shard_size, "hi": min(n, (i + 1) * shard_size)} for i in pending]
    ds = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
        _ShardEmbedder, fn_constructor_args=(cfg, str(chunks_path), prefix), batch_size=1,
        concurrency=cfg.ray_actors, num_gpus=gpus, num_cpus=1)
    todo = sum(r["hi"] - r["lo"] for r in rows)
    with cli.progress_bar() as progress:
        task = progress.add_task(description, total=todo, rate="")
        t0, done = time.perf_counter(), 0
        for batch in ds.iter_batches(batch_size=1, batch_format="numpy"):
            i, vecs = int(batch["shard"][0]), np.asarray(batch["vecs"][0], dtype=np.float32)
            expect = min(n, (i + 1) * shard_size) - i * shard_size
            dim = vecs.shape[1] if dim is None and vecs.ndim == 2 else dim
            if vecs.shape != (expect, dim):
                raise RuntimeError(f"ray shard {i}: got {vecs.shape}, expected {(expect, dim)}")
            atomic_save_npy(shard_dir / f"shard-{i:05d}.npy", vecs)
            done += expect
            progress.update(task, advance=expect, rate=f"{done / max(time.perf_counter() - t0, 1e-9):.1f} texts/s")
    return dim


def _shard_rows(path: Path, rows: int) -> int | None:
    """The dimension of a finished shard of ``rows`` finite float32 vectors, None if it is not one."""
    try:
        a = np.load(path, mmap_mode="r")
    except Exception:
        return None
    ok = a.ndim == 2 and len(a) == rows and a.dtype == np.float32 and bool(np.isfinite(a).all())
    return int(a.shape[1]) if ok else None


def embed_texts_ray(cfg: EmbeddingConfig, texts: list[str], shard_dir: Path, shard_size: int, prefix: str,
                    description: str = "embedding outputs (ray)") -> tuple[list[Path], int]:
    """Texts held by the driver (model outputs) embedded on Ray into ``shard_dir``: the texts go to
    ``shard_dir/texts.parquet`` (one row group per shard, read by the actors like the chunks), the
    shards already there are kept. Returns the shard paths, in order, and the dimension."""
    n = len(texts)
    shard_dir.mkdir(parents=True, exist_ok=True)
    n_shards = (n + shard_size - 1) // shard_size
    paths = [shard_dir / f"shard-{i:05d}.npy" for i in range(n_shards)]
    dims = [_shard_rows(p, min(shard_size, n - i * shard_size)) for i, p in enumerate(paths)]
    pending = [i for i, d in enumerate(dims) if d is None]
    dim = next((d for d in dims if d is not None), None)
    if pending:
        src = shard_dir / "texts.parquet"
        atomic_writer(src, lambda p: pq.write_table(pa.table({"text": pa.array(texts, pa.string())}), p,
                                                    row_group_size=shard_size))
        dim = embed_to_shards_ray(cfg, src, n, dim, shard_dir, shard_size, pending, description, prefix)
        src.unlink(missing_ok=True)
    if dim is None or any(_shard_rows(p, min(shard_size, n - i * shard_size)) != dim for i, p in enumerate(paths)):
        raise RuntimeError(f"{shard_dir}: the ray engine left shards of another shape than {dim}-d rows")
    return paths, dim
