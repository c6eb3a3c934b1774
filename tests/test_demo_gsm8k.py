"""The demo's answer means something: GSM8K questions placed against the tiny config's tree (built
cold in a temporary cache: slow) land in its maths region, with their nearest chunks."""

import dataclasses
import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from corpus_proximity.analysis.annotate import annotate, embed_queries
from corpus_proximity.text import chunking, embedding
from corpus_proximity.tree import stage as tree_stage
from corpus_proximity.tree.index import ExactSearch
from corpus_proximity.tree.tree import ClusterTree

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT.parent / "shared" / "data" / "gsm8k" / "example_model_solutions.jsonl"


@pytest.mark.slow
def test_gsm8k_lands_in_the_demo_maths_region(tmp_path):
    if not SOLUTIONS.is_file():
        pytest.skip("../shared/data/gsm8k/example_model_solutions.jsonl is not beside this checkout")
    from corpus_proximity.text.corpus import read_jsonl

    spec = importlib.util.spec_from_file_location("tiny", ROOT / "configs" / "clustering_01_tiny.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cfg = dataclasses.replace(mod.config, cache_dir=str(tmp_path / "cache"), output_dir=str(tmp_path / "out"))
    tree_stage.run_clustering(cfg, Console(file=io.StringIO()))
    tree_sd = tree_stage.stage_dir(cfg)
    tree = ClusterTree.load(tree_sd.path)
    doc_ids = np.array(chunking.read_chunks(chunking.stage_dir(cfg), ["doc_id"]).column("doc_id").to_pylist())
    is_maths = np.char.startswith(doc_ids.astype(str), "maths/")
    maths_region = {n.id for n in tree.at_depth(0) if is_maths[n.members].mean() > 0.5}
    assert maths_region, "no top-level cluster is mostly maths"
    rows = read_jsonl(SOLUTIONS)
    df, analysis = annotate(cfg, rows, SOLUTIONS, ["question"], ["*.is_correct"], tree_sd)
    in_maths = df["cluster_depth_0"].isin(maths_region)
    assert in_maths.mean() >= 0.90, f"{in_maths.mean():.1%} of GSM8K questions in the maths region {maths_region}"
    # the top-level path agrees with the 15 nearest chunks' majority
    emb = embed_queries(cfg, [r["question"] for r in rows])
    idx, _ = ExactSearch(embedding.load_embeddings(embedding.stage_dir(cfg))).search_k(emb, 15)
    top = tree.labels_at_depth(0)[idx]
    majority = [max(set(r) - {"-1"} or {"-1"}, key=list(r).count) for r in top]
    agree = np.mean(df["cluster_depth_0"].to_numpy() == np.array(majority))
    assert agree >= 0.95
    assert len(analysis["analyses"]) == 4  # the error analysis of each of the four models runs
    assert analysis["outside"]["question"]["share"] < 0.5
