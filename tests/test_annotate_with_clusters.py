import contextlib
import io
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from scipy import stats

from annotate_with_clusters import main as annotate_main
from corpus_proximity.analysis import annotate as annotate_with_clusters
from corpus_proximity.analysis.annotate import as_bool, column, expand_fields, get_path
from corpus_proximity.errors import InputError
from corpus_proximity.tree.build import recursive_cluster
from corpus_proximity.tree.index import ExactSearch, IVFSearch, assign_to_clusters, nearest_chunks
from corpus_proximity.tree.tree import ROOT, ClusterTree, Node

from conftest import planted_hierarchy
from test_cluster_corpus import PLANTED_CFG


@pytest.fixture(scope="module")
def tree_and_data():
    X, yc, yf = planted_hierarchy(n_coarse=4, n_fine=3, per_fine=50, dim=24, fine_sep=0.3, spread=0.04, seed=1)
    return X, recursive_cluster(X, PLANTED_CFG)


def _brute_force(x, tree):
    path, dists, node = [], [], tree.root
    while node.children:
        sims = [float(x @ tree.nodes[c].centroid) for c in node.children]
        k = int(np.argmax(sims))
        node = tree.nodes[node.children[k]]
        path.append(node.id)
        dists.append(1 - sims[k])
    return path, dists


def test_assignment_equals_brute_force(tree_and_data):
    X, tree = tree_and_data
    rng = np.random.default_rng(3)
    Q = X[rng.choice(len(X), 60, replace=False)] + 0.2 * rng.normal(size=(60, X.shape[1]))
    Q = (Q / np.linalg.norm(Q, axis=1, keepdims=True)).astype(np.float32)
    a = assign_to_clusters(Q, tree)
    for i, q in enumerate(Q):
        path, dists = _brute_force(q, tree)
        got = [p for p in a.paths[i] if p]
        assert got == path
        assert np.allclose(a.distances[i, : len(dists)], dists, atol=1e-5)
        assert np.isnan(a.distances[i, len(dists):]).all()


def test_copy_of_a_chunk_lands_in_its_leaf_at_distance_zero(tree_and_data):
    X, tree = tree_and_data
    a = assign_to_clusters(X, tree)
    idx, d = nearest_chunks(X, X)
    assert np.array_equal(idx, np.arange(len(X))) and np.allclose(d, 0, atol=1e-5)
    leaf_of = {}
    for leaf in tree.leaves():
        for m in leaf.members:
            leaf_of[int(m)] = leaf.id
    deepest = [next(p for p in row[::-1] if p) for row in a.paths]
    clustered = [i for i in range(len(X)) if i in leaf_of and leaf_of[i] != "root"]
    agree = np.mean([deepest[i] == leaf_of[i] for i in clustered])
    assert agree >= 0.98


def test_dotted_fields_and_booleans():
    row = {"question": "q", "175b_verification": {"solution": "s", "is_correct": True}, "a.b": 1}
    assert get_path(row, "175b_verification.solution") == "s"
    assert get_path(row, "a.b") == 1
    assert as_bool([True, "false", "1", 0, None, ""], "c", Path("r.jsonl")).tolist() == [True, False, True, False,
                                                                                          None, None]
    with pytest.raises(InputError, match=r"field 'c' = 'maybe' is not a boolean"):
        as_bool(["maybe"], "c", Path("r.jsonl"))
    with pytest.raises(InputError, match=r"r.jsonl: row 1 has no field 'answer'"):
        column([row], "answer", Path("r.jsonl"))


def test_gsm8k_published_solutions_shape():
    p = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "example_model_solutions.jsonl"
    if not p.is_file():
        pytest.skip("../shared/data/gsm8k is not beside this checkout")
    rows = [json.loads(line) for line in p.read_text().splitlines()[:20]]
    flags = as_bool(column(rows, "175b_verification.is_correct", p), "175b_verification.is_correct", p)
    assert all(isinstance(v, bool) for v in flags) and len(flags) == 20
    assert all(isinstance(t, str) and t for t in column(rows, "175b_verification.solution", p))


def _random_tree(rng, dim=16, max_depth=3):
    """A random tree: 1-6 children per node, some leaves early, random unit centroids."""
    nodes = {ROOT: Node(ROOT, None, -1, np.arange(1), centroid=np.zeros(dim, np.float32))}
    frontier = [ROOT]
    while frontier:
        pid = frontier.pop()
        parent = nodes[pid]
        if parent.depth + 1 >= max_depth or (pid != ROOT and rng.random() < 0.3):
            continue
        for k in range(int(rng.integers(1, 7))):
            cid = str(k) if pid == ROOT else f"{pid}.{k}"
            c = rng.normal(size=dim).astype(np.float32)
            nodes[cid] = Node(cid, pid, parent.depth + 1, np.arange(1), centroid=c / np.linalg.norm(c))
            parent.children.append(cid)
            frontier.append(cid)
    return ClusterTree(nodes=nodes, n_points=1, dim=dim)


@pytest.mark.parametrize("seed, block", [(0, 65_536), (1, 65_536), (2, 7), (3, 64), (4, 300)])
def test_assignment_equals_brute_force_on_random_trees(seed, block):
    rng = np.random.default_rng(seed)
    tree = _random_tree(rng)
    Q = rng.normal(size=(300, 16)).astype(np.float32)
    Q /= np.linalg.norm(Q, axis=1, keepdims=True)
    a = assign_to_clusters(Q, tree, block=block)
    assert a.paths.shape == (300, tree.n_depths)
    for i in range(0, 300, 7):
        path, dists = _brute_force(Q[i], tree)
        assert [p for p in a.paths[i] if p] == path
        np.testing.assert_allclose(a.distances[i, :len(path)], dists, atol=1e-5)
        assert np.isnan(a.distances[i, len(path):]).all()


def test_field_globs_expand_over_nested_json():
    row = {"question": "q", "6b": {"solution": "s", "is_correct": False},
           "175b": {"solution": "t", "is_correct": True}}
    assert expand_fields([row], ["*.is_correct"]) == ["6b.is_correct", "175b.is_correct"]
    assert expand_fields([row], ["question", "*.solution"]) == ["question", "6b.solution", "175b.solution"]
    assert expand_fields([row], ["nothing.*"]) == []


def test_ivf_search_agrees_with_exact_on_clustered_data():
    X, _, _ = planted_hierarchy(n_coarse=5, n_fine=4, per_fine=150, dim=32, seed=4)
    rng = np.random.default_rng(0)
    Q = X[rng.choice(len(X), 200, replace=False)] + 0.05 * rng.normal(size=(200, 32))
    Q = (Q / np.linalg.norm(Q, axis=1, keepdims=True)).astype(np.float32)
    exact_idx, exact_d = ExactSearch(X).search(Q)
    idx, d = IVFSearch.build(X, nlist=20, nprobe=4).search(Q)
    assert (idx == exact_idx).mean() >= 0.95
    np.testing.assert_allclose(d[idx == exact_idx], exact_d[idx == exact_idx], atol=1e-5)
    assert (d >= exact_d - 1e-5).all()  # an approximate neighbour is never nearer than the exact one


# --- the CLI on a real (small) default-corpus tree ---------------------------------------------

def write_config(path: Path, cfg) -> Path:
    """A configs/*.py file rebuilding ``cfg`` (frozen dataclass reprs are valid constructors)."""
    path.write_text(f"from corpus_proximity.config import *\nconfig = {cfg!r}\n")
    return path


@pytest.fixture(scope="module")
def tiny(built_default, tmp_path_factory):
    """The small default pipeline, a config file for it, and a results file whose questions are
    corpus chunks (so their place in the tree is known), two graded models and ungraded rows."""
    from corpus_proximity.text import chunking
    base = tmp_path_factory.mktemp("annotate")
    cfg = built_default
    chunks = chunking.read_chunks(chunking.stage_dir(cfg), ["chunk_id", "text"]).to_pylist()
    rng = np.random.default_rng(0)
    picks = rng.choice(len(chunks), 60, replace=False)
    rows = []
    for k, i in enumerate(picks):
        rows.append({"question": chunks[i]["text"], "chunk_id": chunks[i]["chunk_id"],
                     "small": {"is_correct": bool(rng.random() < 0.6)},
                     "large": {"is_correct": None if k % 10 == 0 else bool(rng.random() < 0.8)}})
    results = base / "results.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return cfg, write_config(base / "cfg.py", cfg), results, rows


def run_cli(*args) -> tuple[int, str]:
    from corpus_proximity import cli
    buf = io.StringIO()
    old = cli.console
    cli.console = Console(file=buf, width=200)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            rc = annotate_main([str(a) for a in args] + ["--quiet"])
    finally:
        cli.console = old
    return rc, buf.getvalue() + err.getvalue()


def test_cli_annotates_every_row_and_its_chi2_is_scipys(tiny, tmp_path):
    cfg, cfg_file, results, rows = tiny
    rc, out = run_cli(cfg_file, "--results", results, "--text-field", "question", "--correct-field", "*.is_correct",
                      "--out", tmp_path)
    assert rc == 0, out
    df = pd.read_parquet(tmp_path / "annotated.parquet")
    assert len(df) == len(rows) == len(pd.read_csv(tmp_path / "annotated.csv"))
    assert {"cluster_depth_0", "name_depth_0", "distance_depth_0", "nearest_chunk", "nearest_chunk_distance",
            "correct.small_is_correct", "correct.large_is_correct"} <= set(df.columns)
    # a question identical to a corpus chunk is that chunk's nearest neighbour, at distance ~0
    assert (df["nearest_chunk"] == df["chunk_id"]).all()
    assert df["nearest_chunk_distance"].abs().max() < 1e-4
    a = json.loads((tmp_path / "analysis.json").read_text())
    assert a["proximity"] == "exact" and [e["correct_field"] for e in a["analyses"]] == ["small.is_correct",
                                                                                         "large.is_correct"]
    large = a["analyses"][1]
    assert large["n_graded"] == 54 and large["n_ungraded"] == 6
    for e in a["analyses"]:
        for res in e["depths"].values():
            o = res["overall"]
            if o["chi2"] is not None:
                chi2, p, dof, _ = stats.chi2_contingency(np.array(o["table"]), correction=False)
                assert o["chi2"] == pytest.approx(chi2, abs=1e-9) and o["p"] == pytest.approx(p, abs=1e-9)
                assert o["dof"] == dof
            assert sum(c["n"] for c in res["clusters"]) == e["n_graded"]
    assert "where errors concentrate" in out


def test_cli_rerun_embeds_nothing_and_ivf_agrees(tiny, tmp_path, monkeypatch):
    cfg, cfg_file, results, _ = tiny
    assert run_cli(cfg_file, "--results", results, "--out", tmp_path / "a")[0] == 0  # warm the query cache

    def boom(*a, **k):
        raise AssertionError("the model was loaded although every output was cached")

    monkeypatch.setattr(annotate_with_clusters, "SentenceTransformerEmbedder", boom)
    rc, out = run_cli(cfg_file, "--results", results, "--out", tmp_path / "b",
                      "--set", "annotation.exact_search_max_chunks=0")
    assert rc == 0, out
    a = json.loads((tmp_path / "b" / "analysis.json").read_text())
    assert a["proximity"] == "ivf"
    exact = pd.read_parquet(tmp_path / "a" / "annotated.parquet")
    approx = pd.read_parquet(tmp_path / "b" / "annotated.parquet")
    assert (approx["nearest_chunk"] == exact["nearest_chunk"]).mean() >= 0.95
    assert (approx["cluster_depth_0"] == exact["cluster_depth_0"]).all()


def test_cli_without_correctness_annotates_and_says_why(tiny, tmp_path):
    _, cfg_file, results, rows = tiny
    rc, out = run_cli(cfg_file, "--results", results, "--correct-field", "grade", "--out", tmp_path)
    assert rc == 0, out
    a = json.loads((tmp_path / "analysis.json").read_text())
    assert a["analyses"] == [] and a["skipped"][0]["correct_field"] == "grade"
    assert "no correctness field" in a["note"] and "skipped grade" in out
    assert len(pd.read_parquet(tmp_path / "annotated.parquet")) == len(rows)


@pytest.mark.parametrize("args, needle", [
    (["--text-field", "answer"], "row 1 has no field 'answer'"),
    (["--correct-field", "question"], "is not a boolean"),
    (["--results", "missing.jsonl"], "missing.jsonl does not exist"),
])
def test_cli_bad_input_is_one_line(tiny, tmp_path, args, needle):
    _, cfg_file, results, _ = tiny
    if "--results" not in args:
        args = ["--results", str(results)] + args
    rc, out = run_cli(cfg_file, *args, "--out", tmp_path)
    assert rc == 2 and needle in out
    assert len([ln for ln in out.splitlines() if ln.startswith("error:")]) == 1


def test_cli_refuses_a_tree_from_another_config_and_names_it(tiny, tmp_path):
    from corpus_proximity.tree import stage as tree_stage
    cfg, cfg_file, results, _ = tiny
    other = replace(cfg, name="wider", clustering=replace(cfg.clustering, silhouette_threshold=0.6))
    other_tree = tree_stage.run_clustering(other, Console(file=io.StringIO())).path
    rc, out = run_cli(cfg_file, "--results", results, "--tree", other_tree, "--out", tmp_path)
    assert rc == 2 and "config 'wider'" in out and "clustering.silhouette_threshold: 0.6 there, 0.5 here" in out
    # the config's own tree, passed explicitly (or its published copy), is accepted
    own = tree_stage.stage_dir(cfg)
    assert run_cli(cfg_file, "--results", results, "--tree", own.path, "--out", tmp_path, "--limit", "5")[0] == 0


def test_cli_refuses_another_embedding_model(tiny, tmp_path):
    from corpus_proximity.text.embedders import resolve_model_dir
    from corpus_proximity.tree import stage as tree_stage

    cfg, _, results, _ = tiny
    copy = tmp_path / "minilm-copy"
    shutil.copytree(resolve_model_dir(cfg.embedding.model), copy)
    other = write_config(tmp_path / "other.py", replace(cfg, embedding=replace(cfg.embedding, model=str(copy))))
    rc, out = run_cli(other, "--results", results, "--tree", tree_stage.stage_dir(cfg).path, "--out", tmp_path)
    assert rc == 2 and "embeddings are of model 'packaged:all-MiniLM-L6-v2'" in out


def test_main_job_without_results_says_how(tiny):
    _, cfg_file, _, _ = tiny
    rc, out = run_cli(cfg_file, "--if-configured")
    assert rc == 0 and "annotate_with_clusters.py" in out and "--results FILE" in out
    rc, out = run_cli(cfg_file)
    assert rc == 2 and "--results is required" in out


def test_gsm8k_published_solutions_all_four_models(tiny, tmp_path):
    p = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "example_model_solutions.jsonl"
    if not p.is_file():
        pytest.skip("../shared/data/gsm8k is not beside this checkout")
    _, cfg_file, _, _ = tiny
    rc, out = run_cli(cfg_file, "--results", p, "--text-field", "question", "--correct-field", "*.is_correct",
                      "--limit", "150", "--out", tmp_path)
    assert rc == 0, out
    a = json.loads((tmp_path / "analysis.json").read_text())
    assert sorted(e["correct_field"] for e in a["analyses"]) == sorted(
        f"{m}.is_correct" for m in ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification"))
    assert all(e["n_graded"] == 150 for e in a["analyses"])
    df = pd.read_parquet(tmp_path / "annotated.parquet")
    assert len(df) == 150 and df["cluster_depth_0"].str.len().gt(0).all()
