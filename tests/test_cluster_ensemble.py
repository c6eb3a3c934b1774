"""Ensembles of trees: partition distances against brute force, clusterboot stability on planted
structure, the registry under concurrent writers, the CLI end to end, and the Ray engine."""

from __future__ import annotations

import itertools
import json
import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest
from sklearn.cluster import KMeans

import cluster_ensemble
from corpus_proximity.config import EnsembleConfig
from corpus_proximity.ensemble import compare as ens
from corpus_proximity.ensemble import runs as ce
from corpus_proximity.ensemble.registry import Registry
from corpus_proximity.tree.tree import ROOT, ClusterTree, Node

from conftest import planted_hierarchy, small_clustering


def _brute_hamming(a, b) -> float:
    ua, ub = np.unique(a), np.unique(b)
    k = max(len(ua), len(ub))
    best = 0
    for perm in itertools.permutations(range(k), len(ua)):  # label i of a ↦ label perm[i] of b (≥ len(ub): none)
        hits = sum(int(((a == la) & (b == ub[p])).sum()) for la, p in zip(ua, perm) if p < len(ub))
        best = max(best, hits)
    return 1 - best / len(a)


def _brute_matching(a, b) -> float:
    pairs = list(itertools.combinations(range(len(a)), 2))
    return sum((a[i] == a[j]) != (b[i] == b[j]) for i, j in pairs) / len(pairs)


def test_distances_equal_brute_force_on_small_cases():
    rng = np.random.default_rng(0)
    for case in range(60):
        n = int(rng.integers(2, 14))
        a = rng.integers(0, rng.integers(1, 5), size=n)
        b = rng.integers(0, rng.integers(1, 6), size=n)
        assert ens.perm_hamming(a, b) == pytest.approx(_brute_hamming(a, b)), (case, a, b)
        assert ens.matching_distance(a, b) == pytest.approx(_brute_matching(a, b)), (case, a, b)


def test_relabelled_copy_is_at_distance_zero_and_a_changed_one_is_not():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 6, size=300)
    relabel = np.array(["x", "q", "noise", "3.1", "b", "z"], dtype=object)[rng.permutation(6)]
    b = relabel[a]
    for m in ens.METHODS:
        assert ens.distance(a, b, m) == pytest.approx(0.0, abs=1e-12), m
    c = a.copy()
    c[:30] = (c[:30] + 1) % 6
    assert ens.perm_hamming(a, c) == pytest.approx(0.1)
    assert all(ens.distance(a, c, m) > 0.01 for m in ens.METHODS)
    d = ens.pairwise([a, b, c], "hamming")
    assert np.allclose(d, d.T) and np.allclose(np.diag(d), 0) and d[0, 1] == 0 and d[0, 2] > 0


def _tree(n_points: int, seen: np.ndarray, labels: np.ndarray) -> ClusterTree:
    """A one-level tree over the points ``seen``: children by ``labels`` (-1 = noise)."""
    root = Node(ROOT, None, -1, np.asarray(seen), noise=np.asarray(seen)[labels < 0])
    nodes = {ROOT: root}
    for k in np.unique(labels[labels >= 0]):
        nodes[str(k)] = Node(str(k), ROOT, 0, np.asarray(seen)[labels == k])
        root.children.append(str(k))
    return ClusterTree(nodes, n_points, 2)


def test_partition_at_depth_keeps_noise_on_its_node_and_leaves_below_their_depth():
    t = _tree(6, np.array([0, 1, 2, 3, 4]), np.array([0, 0, 1, 1, -1]))
    t.nodes["0"].children = ["0.0"]
    t.nodes["0"].noise = np.array([1])
    t.nodes["0.0"] = Node("0.0", "0", 1, np.array([0]))
    assert list(ens.partition_at_depth(t, 0)) == ["0", "0", "1", "1", ROOT, ""]
    assert list(ens.partition_at_depth(t, 1)) == ["0.0", "0", "1", "1", ROOT, ""]
    assert ens.seen_mask(t).tolist() == [True] * 5 + [False]


def test_stability_of_a_clean_cluster_is_one_and_of_a_noise_split_is_low():
    rng = np.random.default_rng(0)
    clean = rng.normal(size=(80, 2)) * 0.2 + [10.0, 0.0]        # a tight, isolated blob
    disc = rng.uniform(-1, 1, size=(400, 2))
    disc = disc[(disc ** 2).sum(1) <= 1][:160] * 3.0             # one round blob, no structure inside
    X = np.concatenate([clean, disc])
    n = len(X)

    def kmeans_tree(rows: np.ndarray, seed: int) -> ClusterTree:
        # k = 3 on two real groups: the round blob is cut in two along an arbitrary line
        return _tree(n, rows, KMeans(3, n_init=1, random_state=seed).fit_predict(X[rows]))

    ref = kmeans_tree(np.arange(n), 0)
    runs = [kmeans_tree(np.sort(rng.choice(n, int(0.8 * n), replace=False)), s) for s in range(1, 13)]
    stab = ens.node_stability(ref, runs, threshold=0.6)
    clean_id = next(i for i in ref.root.children if set(ref.nodes[i].members) == set(range(80)))
    halves = [i for i in ref.root.children if i != clean_id]
    assert stab.mean[clean_id] == pytest.approx(1.0)
    assert all(stab.mean[h] < 0.85 for h in halves), stab.mean
    assert max(stab.mean[h] for h in halves) < stab.mean[clean_id] - 0.15
    assert set(stab.unstable()) <= set(halves)
    # to_json / from_json round trip (what name_clusters and the report read)
    again = ens.Stability.from_json(json.loads(json.dumps(stab.to_json())))
    assert again.mean[clean_id] == pytest.approx(stab.mean[clean_id], abs=1e-4)


def test_best_jaccard_is_restricted_to_the_points_the_run_saw():
    ref = _tree(10, np.arange(10), np.array([0] * 5 + [1] * 5))
    run = _tree(10, np.array([0, 1, 2, 5, 6]), np.array([0, 0, 0, 1, 1]))   # saw half of each node
    assert ens.best_jaccard(ref, run) == {"0": 1.0, "1": 1.0}
    none_seen = _tree(10, np.array([0, 1, 2, 3, 4]), np.array([0, 0, 0, 1, 1]))
    j = ens.best_jaccard(ref, none_seen)
    assert np.isnan(j["1"]) and j["0"] == pytest.approx(3 / 5)


def test_run_plans_vary_what_they_say_and_nest():
    five = ce.plan_runs(EnsembleConfig(runs=5, vary="seed"), 42)
    assert len({s.seed for s in five}) == 5 and all(s.draw_seed is None for s in five)
    draws = ce.plan_runs(EnsembleConfig(runs=5, vary="bootstrap"), 42)
    assert all(s.seed == 42 for s in draws) and len({s.draw_seed for s in draws}) == 5
    ten = ce.plan_runs(EnsembleConfig(runs=10, vary="both"), 42)
    assert ten[:5] == ce.plan_runs(EnsembleConfig(runs=5, vary="both"), 42)
    idx = ens.draw_indices(1000, "subsample", 0.8, 3)
    assert len(idx) == 800 and len(np.unique(idx)) == 800
    boot = ens.draw_indices(1000, "bootstrap", 0.8, 3)
    assert 580 < len(boot) < 680 and np.all(np.diff(boot) > 0)   # ~63% distinct rows


def _register(path: str, worker: int) -> None:
    reg = Registry(path, timeout_s=60)
    for e in range(5):
        key = f"ens-{worker}-{e}"
        reg.start_ensemble(key, "tree", "t", "tree-key", Path("/x"), {"w": worker}, [(f"r{i}", {"i": i}) for i in range(4)])
        for i in range(4):
            reg.finish_run(key, i, Path(f"/x/{i}"), 0.1)
        reg.finish_ensemble(key)


def test_registry_is_safe_under_concurrent_writers(tmp_path):
    db = str(tmp_path / "registry.db")
    Registry(db)
    procs = [mp.get_context("fork").Process(target=_register, args=(db, w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert all(p.exitcode == 0 for p in procs)
    reg = Registry(db)
    for w in range(4):
        for e in range(5):
            runs = reg.runs(f"ens-{w}-{e}")
            assert [r["status"] for r in runs] == ["done"] * 4 and runs[2]["config"] == {"i": 2}
    assert reg.latest("tree-key")["status"] == "done"
    assert reg.latest("other") is None


PLANTED = dict(n_coarse=3, n_fine=2, per_fine=30, dim=16, fine_sep=0.3, spread=0.04, seed=2)
CC = small_clustering(root_clusterer="kmeans", kmeans_space="raw", silhouette_threshold=0.95, max_depth=2)


@pytest.fixture
def planted_config(tmp_path) -> Path:
    """A config file over a planted corpus: one document per row, precomputed embeddings."""
    X, _, _ = planted_hierarchy(**PLANTED)
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": f"d{i}", "text": f"document number {i} text"}) + "\n" for i in range(len(X))))
    np.save(tmp_path / "emb.npy", X)
    cfg = tmp_path / "planted_cfg.py"
    cfg.write_text(
        "from corpus_proximity.config import *\n"
        f"config = ExperimentConfig(name='planted', cache_dir={str(tmp_path / 'cache')!r}, "
        f"output_dir={str(tmp_path / 'out')!r}, corpus=CorpusConfig(path={str(docs)!r}), "
        "chunking=ChunkingConfig(strategy='none'), "
        f"embedding=EmbeddingConfig(precomputed_path={str(tmp_path / 'emb.npy')!r}), "
        f"clustering=ClusteringConfig(**{json.dumps({k: getattr(CC, k) for k in ('umap_n_components', 'min_cluster_floor', 'floor_base', 'base_pct', 'max_depth', 'seed', 'root_clusterer', 'kmeans_space', 'silhouette_threshold')})}), "
        "ensemble=EnsembleConfig(n_jobs=1))\n")
    return cfg


def test_cli_end_to_end_distances_stability_cache_and_tree_view(planted_config, tmp_path, capsys):
    assert cluster_ensemble.main([str(planted_config), "--runs", "3", "--vary", "both", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "perm-invariant" in err and "stab=" in err
    sd = next((tmp_path / "cache").glob("ensemble-*"))
    meta = json.loads((sd / "ensemble_meta.json").read_text())
    assert meta["n_runs"] == 3 and len({r["key"] for r in meta["runs"]}) == 3
    for m in ens.METHODS:
        d = np.load(sd / f"distances_{m}.npz")["distances"]
        assert d.shape == (2, 3, 3) and np.allclose(d, d.transpose(0, 2, 1)) and np.all(d >= 0) and np.all(d <= 1)
        assert (sd / f"distances_{m}.png").stat().st_size > 1000
    # planted, well separated: the top level comes out the same in every run, every node stable
    assert np.allclose(np.load(sd / "distances_hamming.npz")["distances"][0], 0)
    stab = json.loads((sd / "stability.json").read_text())
    assert all(v["stability"] > 0.9 for nid, v in stab["nodes"].items() if "." not in nid) and stab["unstable"] == []
    assert (tmp_path / "out" / "planted" / "ensemble" / "stability.json").is_file()
    # registry: the ensemble and its runs
    reg = Registry(tmp_path / "registry.db")
    assert [r["status"] for r in reg.runs(meta_key(sd))] == ["done"] * 3
    # again: every run and the ensemble are cache hits; more runs reuse the first three
    assert cluster_ensemble.main([str(planted_config), "--runs", "3", "--quiet"]) == 0
    assert "ensemble: cache hit" in capsys.readouterr().err
    # the tree view shows the stability of the latest ensemble
    import name_clusters
    assert name_clusters.main([str(planted_config), "--tree", "--quiet", "--set", "naming.namer=none"]) == 0
    assert "stab=" in capsys.readouterr().err


def meta_key(sd: Path) -> str:
    return json.loads((sd / "config.json").read_text())["key"]


def test_ray_engine_gives_the_same_trees_as_local():  # ~35 s, mostly Ray start-up; in CI (ray is a dev extra)
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'corpus-proximity[ray]')")
    X, _, _ = planted_hierarchy(**PLANTED)
    specs = ce.plan_runs(EnsembleConfig(runs=2, vary="both"), CC.seed)
    local = {i: t for i, t, _ in ce.execute(X, CC, specs, EnsembleConfig(runs=2, n_jobs=1))}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}})
    try:
        remote = {i: t for i, t, _ in ce.execute(X, CC, specs, EnsembleConfig(runs=2, engine="ray"))}
    finally:
        ray.shutdown()
    assert set(local) == set(remote) == {0, 1}
    for i in local:
        assert remote[i].to_json() == local[i].to_json()
        for nid, nd in local[i].nodes.items():
            assert np.array_equal(nd.members, remote[i].nodes[nid].members)
