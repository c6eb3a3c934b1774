"""End to end on the embedded default corpus with the packaged model: real text, real model,
real UMAP/HDBSCAN; cache hit/miss rules; resume after kill -9; bad input through the CLI."""

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from sklearn.metrics import normalized_mutual_info_score

import cluster_corpus
from corpus_proximity.config import to_dict
from corpus_proximity.errors import InputError
from corpus_proximity.text import chunking, embedding
from corpus_proximity.text.embedders import resolve_model_dir
from corpus_proximity.tree import stage as tree_stage
from corpus_proximity.tree.tree import ClusterTree

ROOT = Path(__file__).resolve().parents[1]


def quiet_log():
    return Console(file=io.StringIO(), width=200)


def logged(log) -> str:
    return log.file.getvalue()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from conftest import small_default_cfg

    cfg = small_default_cfg.__wrapped__(tmp_path_factory.mktemp("e2e"))
    log = quiet_log()
    sd = tree_stage.run_clustering(cfg, log)
    return cfg, sd, logged(log)


def test_default_corpus_tree_has_two_depths_and_sane_sizes(built):
    cfg, sd, log = built
    assert "chunks: computing" in log and "embed:" in log
    tree, labels_path = tree_stage.publish(cfg, sd, None)
    assert tree.n_depths >= 2
    assert 2 <= len(tree.root.children) <= 30
    for node in (n for n in tree.nodes.values() if n.children):
        assert sum(tree.nodes[c].size for c in node.children) + len(node.noise) == node.size
    # depth 0 follows the corpus' real topics (BBC folders / stdlib packages)
    chunks = chunking.read_chunks(chunking.stage_dir(cfg)).to_pandas()
    topic = chunks["metadata"].map(lambda m: json.loads(m)["topic"]).to_numpy()
    d0 = tree.labels_at_depth(0)
    clustered = d0 != "-1"
    assert normalized_mutual_info_score(topic[clustered], d0[clustered]) >= 0.5
    lines = labels_path.read_text().splitlines()
    assert lines[0].startswith("id,doc_id,depth0,depth1") and len(lines) == tree.n_points + 1
    assert (Path(cfg.output_dir) / cfg.name / "tree.json").is_file()
    meta = json.loads(sd.file("tree.json").read_text())
    assert all("sample_chunk_ids" in n for n in meta["nodes"])


def test_rerun_is_all_cache_hits(built):
    cfg, sd, _ = built
    log = quiet_log()
    t0 = time.perf_counter()
    again = tree_stage.run_clustering(cfg, log)
    assert again.path == sd.path
    out = logged(log)
    assert "chunks: cache hit" in out and "embed: cache hit" in out and "tree: cache hit" in out
    assert time.perf_counter() - t0 < 30


def test_clustering_change_reuses_chunks_and_embeddings(built):
    cfg, sd, _ = built
    emb_file = embedding.stage_dir(cfg).file("embeddings.npy")
    mtime = emb_file.stat().st_mtime_ns
    other = replace(cfg, clustering=replace(cfg.clustering, max_depth=1))
    log = quiet_log()
    sd2 = tree_stage.run_clustering(other, log)
    out = logged(log)
    assert "chunks: cache hit" in out and "embed: cache hit" in out and "tree: clustering" in out
    assert sd2.path != sd.path and emb_file.stat().st_mtime_ns == mtime
    assert ClusterTree.load(sd2.path).n_depths == 1


def test_model_change_reuses_chunks_only(built, tmp_path):
    cfg, _, _ = built
    copy = tmp_path / "minilm-copy"
    shutil.copytree(resolve_model_dir(cfg.embedding.model), copy)
    other = replace(cfg, embedding=replace(cfg.embedding, model=str(copy)))
    assert embedding.stage_dir(other).path != embedding.stage_dir(cfg).path
    log = quiet_log()
    embedding.run_embedding(other, log)
    out = logged(log)
    assert "chunks: cache hit" in out and "embed: cache hit" not in out
    same = np.allclose(embedding.load_embeddings(embedding.stage_dir(other)),
                       embedding.load_embeddings(embedding.stage_dir(cfg)), atol=1e-5)
    assert same  # the same weights under another path give the same vectors


def test_incomplete_cache_dir_is_recomputed_and_corrupt_one_is_refused(built, tmp_path):
    cfg, _, _ = built
    fresh = replace(cfg, cache_dir=str(tmp_path / "cache"))
    chunks_sd = chunking.run_chunking(fresh, quiet_log())
    sd = embedding.stage_dir(fresh)
    sd.path.mkdir(parents=True)
    np.save(sd.file("embeddings.npy"), np.full((3, 3), np.nan, np.float32))  # no _SUCCESS
    embedding.run_embedding(fresh, quiet_log())
    emb = embedding.load_embeddings(sd)
    assert emb.shape[0] == chunks_sd.read_meta()["n_chunks"] and np.isfinite(emb).all()
    # a finished result that was corrupted afterwards: one clear error naming the file and the fix
    bad = np.array(emb)
    bad[5] = np.nan
    np.save(sd.file("embeddings.npy"), bad)
    with pytest.raises(InputError, match=r"embeddings.npy: 1 rows contain NaN/inf .*delete .* and rerun"):
        embedding.load_embeddings(sd)
    np.save(sd.file("embeddings.npy"), emb[:, :10].copy())
    with pytest.raises(InputError, match=r"embeddings.npy: shape .* expected"):
        embedding.load_embeddings(sd)


def _write_config(path: Path, cfg) -> None:
    d = to_dict(cfg)
    path.write_text(
        "from corpus_proximity.config import *\n"
        f"config = ExperimentConfig(name={d['name']!r}, cache_dir={d['cache_dir']!r}, output_dir={d['output_dir']!r},\n"
        f"    corpus=CorpusConfig(**{d['corpus']!r}),\n"
        f"    chunking=ChunkingConfig(**{d['chunking']!r}),\n"
        f"    embedding=EmbeddingConfig(**{d['embedding']!r}),\n"
        f"    clustering=ClusteringConfig(**{d['clustering']!r}))\n"
        .replace("'default_stdlib_packages': [", "'default_stdlib_packages': (").replace("], 'default_stdlib_per", "), 'default_stdlib_per"))


def test_kill_9_during_embedding_resumes_from_last_shard(built, tmp_path, monkeypatch):
    cfg, _, _ = built
    cfg = replace(cfg, cache_dir=str(tmp_path / "cache"), embedding=replace(cfg.embedding, shard_size=16))
    cfg_file = tmp_path / "cfg.py"
    _write_config(cfg_file, cfg)
    sd = embedding.stage_dir(cfg)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "embed_chunks.py"), str(cfg_file), "--quiet"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(sd.file("shards").glob("shard-*.npy"))) < 3:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = sorted(sd.file("shards").glob("shard-*.npy"))
    assert len(done) >= 3 and not sd.complete
    n_total = chunking.run_chunking(cfg, quiet_log()).read_meta()["n_chunks"]
    assert len(done) * 16 < n_total, "the run finished before it was killed; nothing to resume"

    encoded = []
    real = embedding.make_embedder

    def counting(ecfg, n_rows):
        emb = real(ecfg, n_rows)
        enc = emb.encode
        emb.encode = lambda texts, start: (encoded.append(start), enc(texts, start))[1]
        return emb

    monkeypatch.setattr(embedding, "make_embedder", counting)
    embedding.run_embedding(cfg, quiet_log())
    assert sd.complete
    assert min(encoded) >= len(done) * 16  # finished shards were not embedded again
    resumed = embedding.load_embeddings(sd)
    reference = embedding.load_embeddings(embedding.stage_dir(built[0]))
    assert np.allclose(resumed, reference, atol=1e-5)


def test_precomputed_embeddings(built, tmp_path):
    cfg, _, _ = built
    fresh = replace(cfg, cache_dir=str(tmp_path / "cache"),
                    chunking=replace(cfg.chunking, strategy="none"))
    n = chunking.run_chunking(fresh, quiet_log()).read_meta()["n_chunks"]
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 12))
    vecs = (centres[np.arange(n) % 4] + 0.05 * rng.normal(size=(n, 12))).astype(np.float32)
    np.save(tmp_path / "pre.npy", vecs)
    pre = replace(fresh, embedding=replace(fresh.embedding, precomputed_path=str(tmp_path / "pre.npy")),
                  clustering=replace(fresh.clustering, max_depth=1, root_clusterer="kmeans", kmeans_space="raw"))
    tree = ClusterTree.load(tree_stage.run_clustering(pre, quiet_log()).path)
    assert len(tree.root.children) == 4
    np.save(tmp_path / "pre.npy", vecs[:-1])
    with pytest.raises(InputError, match=r"precomputed_path: .* has shape .* but the corpus has"):
        embedding.run_embedding(replace(pre, cache_dir=str(tmp_path / "c2")), quiet_log())


def test_unreachable_hub_model_says_how_to_use_a_local_copy(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    resolve_model_dir.cache_clear()
    with pytest.raises(InputError, match=r"not in the local Hugging Face cache.*embedding.model=DIR"):
        resolve_model_dir("Snowflake/snowflake-arctic-embed-l")


@pytest.mark.parametrize("args, needle", [
    (["configs/nope.py"], "config file configs/nope.py does not exist"),
    (["configs/clustering_01_tiny.py", "--set", "clustering.max_dept=2"], "unknown field 'max_dept'"),
    (["configs/clustering_01_tiny.py", "--set", "corpus.path=/nonexistent/c.jsonl"], "corpus.path: /nonexistent/c.jsonl does not exist"),
])
def test_cli_bad_input_is_one_line(args, needle, capsys, tmp_path):
    code = cluster_corpus.main(args + ["--quiet", "--set", f"cache_dir={tmp_path}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and needle in err and len(err.splitlines()) == 1


def _one_line_error(err: str, needle: str) -> bool:
    last = err.splitlines()[-1]
    return last.startswith("error: ") and needle in last and "Traceback" not in err


@pytest.mark.parametrize("texts, needle", [
    (["Only one document here, with enough words to be a chunk."], "needs at least"),
    (["The very same sentence repeated for every row."] * 120, "same vector"),
])
def test_degenerate_corpora(texts, needle, tmp_path, capsys):
    p = tmp_path / "c.jsonl"
    p.write_text("\n".join(json.dumps({"id": i, "text": t}) for i, t in enumerate(texts)))
    code = cluster_corpus.main(["configs/clustering_01_tiny.py", "--quiet", "--set", f"corpus.path={p}",
                                "--set", f"cache_dir={tmp_path / 'cache'}"])
    assert code == 2 and _one_line_error(capsys.readouterr().err.strip(), needle)
