"""annotation.engine = "ray" on a local Ray instance with 2 CPU actors: outputs embedded by the Ray
actor pool and placed by Ray actors holding the corpus index once give the local engine's paths,
similarities and outside flags (corpus_proximity/tree/ray_place.py, text/ray_embed.py)."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

pytest.importorskip("ray")

from annotate_with_clusters import main as annotate_main  # noqa: E402
from corpus_proximity.config import AnnotationConfig  # noqa: E402
from corpus_proximity.tree.build import recursive_cluster  # noqa: E402
from corpus_proximity.tree.index import ExactSearch, IVFSearch  # noqa: E402
from corpus_proximity.tree.placement import place_outputs  # noqa: E402

from conftest import planted_hierarchy  # noqa: E402
from test_cluster_corpus import PLANTED_CFG  # noqa: E402


@pytest.fixture(scope="module")
def ray_2cpu():
    """One local Ray (2 CPUs, started by the first engine=ray call) for the module, shut down after."""
    import ray

    yield ray
    ray.shutdown()


def _unit(X):
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def planted():
    X, _, _ = planted_hierarchy(n_coarse=4, n_fine=3, per_fine=50, dim=24, fine_sep=0.3, spread=0.04, seed=1)
    return X, recursive_cluster(X, PLANTED_CFG)


@pytest.mark.parametrize("kind,placement", [("exact", "knn"), ("exact", "centroid"), ("ivf", "knn")])
def test_ray_placer_equals_local_placement_on_planted_data(ray_2cpu, planted, kind, placement):
    from corpus_proximity.tree.ray_place import RayPlacer

    X, tree = planted
    rng = np.random.default_rng(2)
    Q = _unit(np.concatenate([X[rng.choice(len(X), 150)] + 0.15 * rng.normal(size=(150, X.shape[1])),
                              rng.normal(size=(50, X.shape[1]))]))  # near chunks, and far from all of them
    search = ExactSearch(X) if kind == "exact" else IVFSearch.build(X, nlist=12, nprobe=4)
    local = place_outputs(Q, search, tree, placement, 15)
    cfg = AnnotationConfig(engine="ray", ray_actors=2, ray_batch=64, placement=placement)  # 4 batches, 2 actors
    placer = RayPlacer(search, tree, cfg)
    try:
        remote = placer.place(Q)
        assert len({m["pid"] for m in placer.memory()}) == 2  # two worker processes placed the batches
    finally:
        placer.close()
    assert ray_2cpu.cluster_resources().get("CPU") == 2
    np.testing.assert_array_equal(remote.assignment.paths, local.assignment.paths)
    np.testing.assert_allclose(remote.assignment.distances, local.assignment.distances, atol=1e-6)
    np.testing.assert_array_equal(remote.nearest, local.nearest)
    np.testing.assert_allclose(remote.nn_sim, local.nn_sim, atol=1e-6)
    assert len(set(local.assignment.paths[:, 0])) >= 3  # a real tree, not one region for all


def _copy(built_default, folder: Path):
    """The session pipeline's chunks, embeddings and tree in a cache of their own (its query and
    calibration stages start empty, so each engine embeds the outputs itself)."""
    from corpus_proximity.text import chunking, embedding
    from corpus_proximity.tree import stage as tree_stage

    for sd in (chunking.stage_dir(built_default), embedding.stage_dir(built_default),
               tree_stage.stage_dir(built_default)):
        shutil.copytree(sd.path, folder / "cache" / sd.path.name)
    cfg = dataclasses.replace(built_default, name="copy", cache_dir=str(folder / "cache"),
                              output_dir=str(folder / "outputs"))
    (folder / "cfg.py").write_text(f"from corpus_proximity.config import *\nconfig = {cfg!r}\n")
    return folder / "cfg.py"


def _run(*args) -> tuple[int, str]:
    from corpus_proximity import cli

    buf, old = io.StringIO(), cli.console
    cli.console = Console(file=buf, width=200)
    try:
        with contextlib.redirect_stderr(buf):
            rc = annotate_main([str(a) for a in args] + ["--quiet"])
    finally:
        cli.console = old
    return rc, buf.getvalue()


@pytest.mark.slow  # ~30 s over the session pipeline; the planted tests above are the fast variant
def test_cli_ray_engine_annotates_like_the_local_engine(ray_2cpu, built_default, tmp_path):
    from corpus_proximity.text import chunking

    chunks = chunking.read_chunks(chunking.stage_dir(built_default), ["text"]).column("text").to_pylist()
    rng = np.random.default_rng(0)
    far = ["qwxz vbnm " * 20, "0 1 1 2 3 5 8 13 21 34 55 89 144 233 377 610 987", "ééé ààà ùùù ööö " * 10]
    rows = [{"question": chunks[i][:400], "m": {"is_correct": bool(rng.random() < 0.6)}}
            for i in rng.choice(len(chunks), 40, replace=False)] + \
           [{"question": t, "m": {"is_correct": False}} for t in far]
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = {}
    for engine in ("local", "ray"):
        cfg_file = _copy(built_default, tmp_path / engine)
        rc, log = _run(cfg_file, "--results", results, "--out", tmp_path / engine / "ann",
                       "--set", f"annotation.engine={engine}", "--set", "annotation.ray_batch=16")
        assert rc == 0, log
        out[engine] = pd.read_parquet(tmp_path / engine / "ann" / "annotated.parquet")
    assert ray_2cpu.is_initialized() and ray_2cpu.cluster_resources().get("CPU") == 2
    local, remote = out["local"], out["ray"]
    assert list(remote.columns) == list(local.columns)
    for col in local.columns:
        if col.startswith(("cluster_depth_", "name_depth_")) or col in ("nearest_chunk", "outside"):
            assert remote[col].tolist() == local[col].tolist(), col
        elif col.startswith("distance_depth_") or col in ("nn_sim", "nearest_chunk_distance"):
            np.testing.assert_allclose(remote[col].to_numpy(float), local[col].to_numpy(float), atol=1e-5,
                                       err_msg=col)
    assert local["outside"].sum() >= 1 and (~local["outside"]).sum() >= 30  # both kinds of output
    # the Ray run embedded the outputs itself (its own cache), to the local model's vectors
    embs = {e: np.load(next((tmp_path / e / "cache").glob("queries-*/embeddings.npy"))) for e in out}
    assert np.abs(embs["ray"] - embs["local"]).max() < 1e-5
    queries = next((tmp_path / "ray" / "cache").glob("queries-*"))
    assert sorted(p.name for p in queries.iterdir()) == [".lock", "_SUCCESS", "config.json", "embeddings.npy"]
    a = {e: json.loads((tmp_path / e / "ann" / "analysis.json").read_text()) for e in out}
    assert a["ray"]["analyses"] == a["local"]["analyses"] and a["ray"]["outside"] == a["local"]["outside"]
