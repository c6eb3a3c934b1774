"""The embedding stage: chunks → L2-normalised float32 embeddings (``embeddings.npy``, memmap-able).

Embeddings are written in shards of ``embedding.shard_size`` rows, each renamed into place
when complete, so a run killed mid-way (even ``kill -9``) resumes from its last finished
shard. The shards are joined into ``embeddings.npy`` at the end and ``_SUCCESS`` is written last.

    python embed_chunks.py configs/clustering_01_tiny.py
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from corpus_proximity import cli
from corpus_proximity.cache import (
    StageDir,
    atomic_save_npy,
    check_free_space,
    file_fingerprint,
    stage_key,
    temp_name,
    writing,
)
from corpus_proximity.config import ExperimentConfig, semantic_dict, to_dict
from corpus_proximity.errors import InputError
from corpus_proximity.paths import input_file
from corpus_proximity.text import chunking
from corpus_proximity.text.embedders import default_prefixes, make_embedder, resolve_model_dir

STAGE = "embed"
STAGE_VERSION = 1


def model_identity(cfg: ExperimentConfig) -> dict:
    """What decides the embeddings besides the chunks: the model (or the precomputed file's hash)
    and the document prefix; part of the embed key, and of the query cache's."""
    sem = semantic_dict(cfg.embedding)
    if cfg.embedding.precomputed_path:
        return {"precomputed_sha256": file_fingerprint(input_file(cfg.embedding.precomputed_path,
                                                                   "embedding.precomputed_path"))}
    sem.pop("precomputed_path")
    if not sem.get("fp16"):
        sem.pop("fp16", None)  # float32 keys stay what they were before fp16 existed
    model_dir = resolve_model_dir(cfg.embedding.model)
    if sem["document_prefix"] is None:
        sem["document_prefix"] = default_prefixes(cfg.embedding.model, model_dir)["document"]
    sem.pop("query_prefix")  # queries are embedded by later stages, not here
    return sem


def stage_dir(cfg: ExperimentConfig, chunks: StageDir | None = None) -> StageDir:
    chunks = chunks or chunking.stage_dir(cfg)
    key = stage_key(STAGE, STAGE_VERSION, model_identity(cfg), {"chunks": chunks.key})
    return StageDir.for_key(cfg.cache_dir, STAGE, key)


def embed_to_shards(texts: list[str], embedder, shard_dir: Path, shard_size: int,
                    description: str = "embedding") -> list[Path]:
    """Embed ``texts`` into ``shard_dir/shard-XXXXX.npy``, skipping shards already on disk."""
    shard_dir.mkdir(parents=True, exist_ok=True)
    n_shards = (len(texts) + shard_size - 1) // shard_size
    paths = [shard_dir / f"shard-{i:05d}.npy" for i in range(n_shards)]
    done = sum(min(shard_size, len(texts) - i * shard_size) for i, p in enumerate(paths)
               if _valid_shard(p, min(shard_size, len(texts) - i * shard_size), embedder.dim))
    with cli.progress_bar() as progress:
        task = progress.add_task(description, total=len(texts), completed=done, rate="")
        t0, fresh = time.perf_counter(), 0
        for i, path in enumerate(paths):
            lo, hi = i * shard_size, min(len(texts), (i + 1) * shard_size)
            if _valid_shard(path, hi - lo, embedder.dim):
                continue
            vecs = embedder.encode(texts[lo:hi], lo)
            _check_finite(vecs, f"shard {path.name}")
            atomic_save_npy(path, vecs)
            fresh += hi - lo
            rate = fresh / max(time.perf_counter() - t0, 1e-9)
            progress.update(task, advance=hi - lo, rate=f"{rate:.1f} texts/s")
    return paths


def _valid_shard(path: Path, rows: int, dim: int) -> bool:
    if not path.is_file():
        return False
    try:
        a = np.load(path, mmap_mode="r")
    except Exception:
        return False
    return a.shape == (rows, dim) and a.dtype == np.float32 and bool(np.isfinite(a).all())


def _check_finite(vecs: np.ndarray, where: str) -> None:
    bad = ~np.isfinite(vecs).all(axis=1)
    if bad.any():
        raise InputError(f"{where}: {int(bad.sum())} embeddings contain NaN/inf (first row {int(np.argmax(bad))}); "
                         f"check the model or the precomputed file")


def join_shards(paths: list[Path], out: Path, dim: int, n: int) -> None:
    """Concatenate shards into one .npy without holding them all in memory. The file's blocks are
    allocated before the memmap is written (a write into a memmap on a full disk is a SIGBUS, not an
    error), under a temp name of this process, renamed into place when complete."""
    nbytes = n * dim * 4 + 128
    check_free_space(out.parent, nbytes, str(out))
    tmp = temp_name(out)
    try:
        with writing(out):
            arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, dim))
            with open(tmp, "r+b") as f:
                os.posix_fallocate(f.fileno(), 0, os.path.getsize(tmp))
            pos = 0
            for p in paths:
                block = np.load(p, mmap_mode="r")
                arr[pos:pos + len(block)] = block
                pos += len(block)
            arr.flush()
            del arr
            tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)


def run_embedding(cfg: ExperimentConfig, log=cli.console) -> StageDir:
    """Produce (or reuse) ``embeddings.npy`` aligned with ``chunks.parquet``."""
    chunks = chunking.run_chunking(cfg, log)
    sd = stage_dir(cfg, chunks)
    if sd.complete or not sd.begin():  # begin waits for a concurrent run of this config
        log.print(f"[green]embed: cache hit[/green] {sd.path}")
        sd.tidy("shards")  # a run killed after _SUCCESS left its shards
        return sd
    texts = chunking.read_chunks(chunks, ["text"]).column("text").to_pylist()
    log.print(f"embed: {len(texts)} chunks with {cfg.embedding.precomputed_path or cfg.embedding.model} → {sd.path}")
    embedder = make_embedder(cfg.embedding, len(texts))
    if cfg.embedding.engine == "ray" and not cfg.embedding.precomputed_path:
        from corpus_proximity.text.ray_embed import embed_to_shards_ray

        size, n = cfg.embedding.shard_size, len(texts)
        pending = [i for i in range((n + size - 1) // size)
                   if not _valid_shard(sd.file("shards") / f"shard-{i:05d}.npy", min(size, n - i * size), embedder.dim)]
        sd.file("shards").mkdir(parents=True, exist_ok=True)
        embed_to_shards_ray(cfg.embedding, chunks.file("chunks.parquet"), n, embedder.dim, sd.file("shards"),
                            size, pending)
    paths = embed_to_shards(texts, embedder, sd.file("shards"), cfg.embedding.shard_size)
    join_shards(paths, sd.file("embeddings.npy"), embedder.dim, len(texts))
    sd.finish({"embedding": to_dict(cfg.embedding)}, {"chunks": chunks.key},
              {"n": len(texts), "dim": embedder.dim, "model": cfg.embedding.model})
    sd.tidy("shards")
    return sd


def load_embeddings(sd: StageDir) -> np.ndarray:
    """Memory-map a finished embedding result and check it is what ``config.json`` says."""
    path = sd.file("embeddings.npy")
    if not sd.complete:
        raise InputError(f"{sd.path} has no _SUCCESS marker; it is not a finished result (rerun to compute it)")
    meta = sd.read_meta()
    try:
        emb = np.load(path, mmap_mode="r")
    except Exception as e:
        raise InputError(f"{path}: unreadable ({type(e).__name__}); delete {sd.path} and rerun to recompute") from None
    if emb.ndim != 2 or emb.shape != (meta["n"], meta["dim"]) or emb.dtype != np.float32:
        raise InputError(f"{path}: shape {emb.shape} {emb.dtype}, expected ({meta['n']}, {meta['dim']}) float32 "
                         f"as recorded in config.json; delete {sd.path} and rerun to recompute")
    bad = ~np.isfinite(emb).all(axis=1)
    if bad.any():
        raise InputError(f"{path}: {int(bad.sum())} rows contain NaN/inf (first row {int(np.argmax(bad))}); "
                         f"delete {sd.path} and rerun to recompute")
    return emb
