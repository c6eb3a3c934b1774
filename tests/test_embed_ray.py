"""embedding.engine = "ray" on a local Ray instance with 2 CPU actors: the same vectors as the local
engine, the same cache layout, and a killed Ray run resumes from the shards it finished."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

pytest.importorskip("ray")

from corpus_proximity.config import CorpusConfig, EmbeddingConfig, ExperimentConfig  # noqa: E402
from corpus_proximity.text import embedding  # noqa: E402
from corpus_proximity.text.corpus import load_default_corpus  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory) -> Path:
    """96 real BBC / docstring documents of the default corpus as a user's JSONL file."""
    docs = load_default_corpus(CorpusConfig(default_bbc_per_topic=12, default_stdlib_packages=("email", "asyncio"),
                                            default_stdlib_per_package=18))
    path = tmp_path_factory.mktemp("corpus") / "docs.jsonl"
    path.write_text("".join(json.dumps({"id": d["doc_id"], "text": d["text"]}) + "\n" for d in docs[:96]))
    return path


def _cfg(tmp: Path, corpus: Path, engine: str) -> ExperimentConfig:
    return ExperimentConfig(name="ray", cache_dir=str(tmp / "cache"), output_dir=str(tmp / "out"),
                            corpus=CorpusConfig(path=str(corpus)),
                            embedding=EmbeddingConfig(shard_size=16, engine=engine, ray_actors=2))


def _embed(cfg: ExperimentConfig) -> np.ndarray:
    sd = embedding.run_embedding(cfg, Console(file=io.StringIO()))
    return np.asarray(embedding.load_embeddings(sd))


def test_ray_engine_gives_the_local_engines_vectors_in_the_same_cache(tmp_path, corpus_file):
    import ray

    local = _embed(_cfg(tmp_path / "local", corpus_file, "local"))
    cfg = _cfg(tmp_path / "ray", corpus_file, "ray")
    try:
        remote = _embed(cfg)
        assert ray.is_initialized() and ray.cluster_resources().get("CPU") == 2
    finally:
        ray.shutdown()
    assert remote.shape == local.shape and np.abs(remote - local).max() < 1e-5
    # the engine is not part of the key: both runs wrote the same stage directory name
    assert embedding.stage_dir(cfg).path.name == embedding.stage_dir(_cfg(tmp_path, corpus_file, "local")).path.name
    # and left what the local engine leaves: no shard, no temp file (the claim's .lock stays, as for every stage)
    assert sorted(p.name for p in embedding.stage_dir(cfg).path.iterdir()) == [".lock", "_SUCCESS", "config.json",
                                                                              "embeddings.npy"]


@pytest.mark.slow
def test_a_killed_ray_run_resumes_from_its_finished_shards(tmp_path, corpus_file):
    cfg = _cfg(tmp_path, corpus_file, "ray")
    cfg_file = tmp_path / "ray_cfg.py"
    cfg_file.write_text("from corpus_proximity.config import *\n"
                        f"config = ExperimentConfig(name='ray', cache_dir={cfg.cache_dir!r}, output_dir={cfg.output_dir!r},"
                        f" corpus=CorpusConfig(path={str(corpus_file)!r}),"
                        " embedding=EmbeddingConfig(shard_size=16, engine='ray', ray_actors=2))\n")
    shards = embedding.stage_dir(cfg).path / "shards"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen([sys.executable, "embed_chunks.py", str(cfg_file), "--quiet"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and len(list(shards.glob("shard-*.npy"))) < 2 and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)   # the driver and the Ray processes it started
    proc.wait()
    finished = {p.name: p.stat().st_mtime_ns for p in shards.glob("shard-*.npy")}
    assert len(finished) >= 2, proc.stderr.read().decode()[-2000:]
    assert not (embedding.stage_dir(cfg).path / "_SUCCESS").exists()
    # resume with the local engine: the shard files are shared, and the finished ones are kept as they were
    after = {}
    orig = embedding.embed_to_shards

    def spy(texts, embedder, shard_dir, shard_size, description="embedding"):
        paths = orig(texts, embedder, shard_dir, shard_size, description)
        after.update({p.name: p.stat().st_mtime_ns for p in paths})
        return paths

    embedding.embed_to_shards = spy
    try:
        resumed = _embed(dataclasses.replace(cfg, embedding=dataclasses.replace(cfg.embedding, engine="local")))
    finally:
        embedding.embed_to_shards = orig
    assert len(finished) < len(after) and all(after[name] == t for name, t in finished.items())
    local = _embed(_cfg(tmp_path / "local", corpus_file, "local"))
    assert np.abs(resumed - local).max() < 1e-5
