"""Sample-fit + assign (corpus_proximity/tree/scale.py): planted two-level hierarchies on the unit
sphere, real UMAP/HDBSCAN on the sample, real exact and faiss IVF search, a real local Ray."""

import io
from dataclasses import replace

import numpy as np
import pytest
from rich.console import Console
from sklearn.metrics import adjusted_rand_score

from corpus_proximity.config import ClusteringConfig
from corpus_proximity.errors import InputError
from corpus_proximity.tree import stage as tree_stage
from corpus_proximity.tree.build import recursive_cluster
from corpus_proximity.tree.scale import build_tree, fit_sample_indices
from corpus_proximity.tree.tree import ClusterTree

from conftest import planted_hierarchy, small_clustering

CFG = small_clustering(root_clusterer="kmeans", kmeans_space="raw", silhouette_threshold=0.95, fit_sample=600)


@pytest.fixture(scope="module")
def planted():
    X, yc, yf = planted_hierarchy(n_coarse=4, n_fine=3, per_fine=200, dim=24, fine_sep=0.3, spread=0.04, seed=1)
    return X, yc, yf, build_tree(X, CFG)


def test_sample_fit_and_assign_recovers_both_levels(planted):
    X, yc, yf, tree = planted
    assert tree.n_points == len(X) == 2400
    assert tree.n_depths == 2 and len(tree.at_depth(0)) == 4 and len(tree.at_depth(1)) == 12
    assert adjusted_rand_score(yc, tree.labels_at_depth(0)) >= 0.9
    assert adjusted_rand_score(yf, tree.labels_at_depth(1)) >= 0.9


def test_the_assembled_tree_is_a_normal_tree(planted, tmp_path):
    X, _, _, tree = planted
    for node in tree.nodes.values():
        if node.children:  # children + noise partition the parent, as in a full fit
            kids = np.concatenate([tree.nodes[c].members for c in node.children] + [node.noise])
            assert np.array_equal(np.sort(kids), node.members)
        else:
            assert len(node.noise) == 0
        assert np.isclose(np.linalg.norm(node.centroid), 1.0, atol=1e-5)
        mean = X[node.members].astype(np.float64).mean(axis=0)
        assert np.allclose(node.centroid, mean / np.linalg.norm(mean), atol=1e-5)  # over all members
        sims = X[node.members] @ node.centroid
        assert node.sample_indices[0] == int(node.members[np.argmax(sims)])
    ids = [f"c{i}" for i in range(len(X))]
    tree.save(tmp_path, ids)
    assert ClusterTree.load(tmp_path).to_json(ids) == tree.to_json(ids)


def test_fitted_chunks_keep_the_paths_of_the_fit_on_the_sample(planted):
    X, _, _, tree = planted
    sample = fit_sample_indices(len(X), CFG.fit_sample, CFG.seed)
    fitted = recursive_cluster(X[sample], CFG)
    for d in range(2):
        assert (tree.labels_at_depth(d)[sample] == fitted.labels_at_depth(d)).all()
    assert {n: fitted.nodes[n].coherence for n in fitted.nodes} == {n: tree.nodes[n].coherence for n in tree.nodes}


def test_deterministic_for_a_seed_and_the_same_with_threads(planted):
    X, _, _, tree = planted
    # a second build, on two threads over 8 shards: shards and threads never change a path
    again = build_tree(X, replace(CFG, n_jobs=2, assign_shard_size=300))
    assert again.to_json() == tree.to_json()
    for nid, node in tree.nodes.items():
        assert np.array_equal(node.members, again.nodes[nid].members)
        assert np.array_equal(node.noise, again.nodes[nid].noise)


def test_ivf_search_above_assign_exact_max_recovers_both_levels(planted):
    X, yc, yf, _ = planted
    tree = build_tree(X, replace(CFG, assign_exact_max=100))
    assert adjusted_rand_score(yc, tree.labels_at_depth(0)) >= 0.9
    assert adjusted_rand_score(yf, tree.labels_at_depth(1)) >= 0.9


def test_far_chunks_stay_as_noise_of_their_top_level_node(planted):
    X, yc, yf, _ = planted
    rng = np.random.default_rng(3)
    far = rng.normal(size=(30, X.shape[1]))
    far = (far / np.linalg.norm(far, axis=1, keepdims=True)).astype(np.float32)
    Xf = np.concatenate([X, far])
    tree = build_tree(Xf, replace(CFG, fit_sample=700))
    sample = set(fit_sample_indices(len(Xf), 700, CFG.seed).tolist())
    assigned_far = [i for i in range(len(X), len(Xf)) if i not in sample]
    d0, d1 = tree.labels_at_depth(0), tree.labels_at_depth(1)
    assert assigned_far and all(d0[i] not in ("", "-1") for i in assigned_far)  # a region, as every chunk
    assert all(d1[i] == "-1" for i in assigned_far)  # but no sub-cluster
    near = [i for i in range(len(X)) if i not in sample]
    assert np.mean([d1[i] == "-1" for i in near]) < 0.05
    off = build_tree(Xf, replace(CFG, fit_sample=700, assign_outside_percentile=0.0))
    assert sum(off.labels_at_depth(1)[i] == "-1" for i in assigned_far) < len(assigned_far)


def test_stratified_sample_takes_every_group_in_proportion():
    groups = np.repeat(["a", "b", "c"], [600, 300, 100])
    docs = np.arange(1000) // 10
    s = fit_sample_indices(1000, 100, seed=0, groups=[groups, docs])
    assert len(s) == 100 and len(set(s.tolist())) == 100 and np.all(np.diff(s) > 0)
    assert [int((groups[s] == g).sum()) for g in "abc"] == [60, 30, 10]
    assert set(np.bincount(docs[s], minlength=100).tolist()) == {1}  # every document once
    assert not np.array_equal(s, fit_sample_indices(1000, 100, seed=1, groups=[groups, docs]))
    assert np.array_equal(fit_sample_indices(50, 100, seed=0), np.arange(50))
    with pytest.raises(InputError, match="fit_sample groups: 3 labels for 1000 chunks"):
        fit_sample_indices(1000, 100, 0, [np.arange(3)])


def test_config_and_cache_key():
    base = tree_stage.clustering_identity(ClusteringConfig())
    assert not {"fit_sample", "assign_k", "assign_outside_percentile", "assign_exact_max",
                "assign_shard_size", "engine", "ray_address"} & set(base)
    assert tree_stage.clustering_identity(ClusteringConfig(fit_sample=0)) == base
    on = tree_stage.clustering_identity(ClusteringConfig(fit_sample=50_000))
    assert on["fit_sample"] == 50_000 and "assign_k" in on and "assign_shard_size" not in on
    assert tree_stage.clustering_identity(ClusteringConfig(fit_sample=50_000, engine="ray", n_jobs=2,
                                                           assign_shard_size=7)) == on
    for kw, needle in ((dict(fit_sample=50), "clustering.fit_sample"), (dict(assign_k=0), "clustering.assign_k"),
                       (dict(assign_outside_percentile=100), "clustering.assign_outside_percentile"),
                       (dict(engine="spark"), "clustering.engine")):
        with pytest.raises(InputError, match=needle):
            ClusteringConfig(**kw)


def test_the_stage_fits_on_a_stratified_sample_and_writes_a_normal_tree(small_default_cfg, tmp_path):
    from corpus_proximity.text import chunking

    cfg = replace(small_default_cfg, chunking=replace(small_default_cfg.chunking, strategy="none"))
    sd_chunks = chunking.run_chunking(cfg, Console(file=io.StringIO()))
    n = sd_chunks.read_meta()["n_chunks"]
    groups = tree_stage.strata(sd_chunks)
    assert len(groups) == 2 and set(groups[0]) == {"bbc-news", "python-docs"}
    X, yc, _ = planted_hierarchy(n_coarse=4, n_fine=1, per_fine=(n + 3) // 4, dim=16, seed=2)
    np.save(tmp_path / "pre.npy", X[:n])
    cc = replace(cfg.clustering, max_depth=1, root_clusterer="kmeans", kmeans_space="raw")
    pre = replace(cfg, embedding=replace(cfg.embedding, precomputed_path=str(tmp_path / "pre.npy")), clustering=cc)
    full = tree_stage.run_clustering(pre, Console(file=io.StringIO()))
    log = Console(file=io.StringIO(), width=200)
    on = tree_stage.run_clustering(replace(pre, clustering=replace(cc, fit_sample=100)), log)
    assert on.key != full.key and "fitting on 100 of" in log.file.getvalue()
    tree = ClusterTree.load(on.path)
    assert tree.n_points == n and len(tree.root.children) == 4
    assert adjusted_rand_score(yc[:n], tree.labels_at_depth(0)) >= 0.9


@pytest.mark.slow
def test_ray_assign_equals_local(planted):
    ray = pytest.importorskip("ray")
    from corpus_proximity.distributed import init_ray

    X, _, _, local = planted
    init_ray(None, num_cpus=2)
    try:
        for extra in ({}, {"assign_exact_max": 100}):  # exact search and faiss IVF through the object store
            cfg = replace(CFG, assign_shard_size=500, **extra)
            on_ray = build_tree(X, replace(cfg, engine="ray"))
            assert on_ray.to_json() == build_tree(X, cfg).to_json()
        assert on_ray.n_points == local.n_points
    finally:
        ray.shutdown()
