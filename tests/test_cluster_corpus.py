from dataclasses import replace

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from corpus_proximity.config import ClusteringConfig
from corpus_proximity.errors import InputError
from corpus_proximity.tree.build import _add_children, coherence_per_cluster, min_cluster_size, recursive_cluster
from corpus_proximity.tree.clusterers import make_clusterer
from corpus_proximity.tree.tree import ROOT, ClusterTree, Node

from conftest import planted_hierarchy, small_clustering

PLANTED_CFG = small_clustering(root_clusterer="kmeans", kmeans_space="raw", silhouette_threshold=0.95)


@pytest.fixture(scope="module")
def planted():
    # Fine blobs well separated inside well separated regions. HDBSCAN at the root would take
    # the 12 dense blobs as the top level here (its EOM selection prefers them), which is why
    # the root has its own clusterer; below it, HDBSCAN on the re-fitted UMAP finds the blobs.
    X, yc, yf = planted_hierarchy(n_coarse=4, n_fine=3, per_fine=50, dim=24, fine_sep=0.3, spread=0.04, seed=1)
    tree = recursive_cluster(X, PLANTED_CFG)
    return X, yc, yf, tree


def test_planted_two_level_hierarchy_is_recovered(planted):
    X, yc, yf, tree = planted
    d0, d1 = tree.labels_at_depth(0), tree.labels_at_depth(1)
    assert tree.n_depths == 2
    assert adjusted_rand_score(yc, d0) >= 0.9
    assert adjusted_rand_score(yf, d1) >= 0.9
    assert len(tree.at_depth(0)) == 4 and len(tree.at_depth(1)) == 12


def test_tree_invariants(planted):
    X, _, _, tree = planted
    for node in tree.nodes.values():
        if node.children:
            kids = np.concatenate([tree.nodes[c].members for c in node.children] + [node.noise])
            # children + noise partition the parent exactly: noise is kept, never forced
            assert np.array_equal(np.sort(kids), np.sort(node.members))
            assert all(c.startswith(node.id + ".") or node.id == "root" for c in node.children)
            sizes = [tree.nodes[c].size for c in node.children]
            assert sizes == sorted(sizes, reverse=True)  # ids ordered by size
        else:
            assert node.leaf_reason in {"max_depth", "too_small", "coherent", "no_structure"}
            assert len(node.noise) == 0
        assert np.isclose(np.linalg.norm(node.centroid), 1.0, atol=1e-5)
        assert node.sample_indices and set(node.sample_indices) <= set(node.members.tolist())


def test_deterministic(planted):
    X, _, _, tree = planted
    again = recursive_cluster(X, PLANTED_CFG)
    assert again.to_json() == tree.to_json()
    for nid, node in tree.nodes.items():
        assert np.array_equal(node.members, again.nodes[nid].members)


def test_parallel_siblings_give_the_same_tree(planted):
    X, _, _, tree = planted
    par = recursive_cluster(X, replace(PLANTED_CFG, n_jobs=2, parallel_min_points=0))
    assert par.to_json() == tree.to_json()


def test_save_load_roundtrip_and_labels(planted, tmp_path):
    X, _, _, tree = planted
    ids = [f"c{i}" for i in range(len(X))]
    tree.save(tmp_path, ids)
    back = ClusterTree.load(tmp_path)
    assert back.to_json(ids) == tree.to_json(ids)
    tree.export_labels(tmp_path / "labels.csv", ids, [f"d{i}" for i in range(len(X))])
    lines = (tmp_path / "labels.csv").read_text().splitlines()
    assert lines[0] == "id,doc_id,depth0,depth1" and len(lines) == len(X) + 1
    row = dict(zip(lines[0].split(","), lines[1].split(",")))
    assert row["depth1"] == "" or row["depth1"].startswith(row["depth0"] + ".") or row["depth1"] == "-1"


def test_noise_stays_on_its_node_and_is_minus_one_at_its_depth():
    # UMAP(min_dist=0) pulls synthetic outliers into clusters, so the bookkeeping is checked
    # on a split with planted noise labels; the real-corpus test checks noise end to end.
    X, yc, _ = planted_hierarchy(n_coarse=3, n_fine=1, per_fine=40, dim=16, seed=3)
    labels = yc.copy()
    labels[::7] = -1
    root = Node(id=ROOT, parent=None, depth=-1, members=np.arange(len(X)))
    nodes = {ROOT: root}
    _add_children(X, root, labels, small_clustering(max_depth=1), nodes)
    tree = ClusterTree(nodes=nodes, n_points=len(X), dim=X.shape[1])
    assert np.array_equal(root.noise, np.flatnonzero(labels == -1))
    d0 = tree.labels_at_depth(0)
    assert set(d0[labels == -1]) == {"-1"}
    assert all(not np.isin(root.noise, tree.nodes[c].members).any() for c in root.children)
    assert [tree.nodes[c].size for c in root.children] == [int((labels == k).sum()) for k in range(3)]


def test_silhouette_gate_splits_only_incoherent_children():
    rng = np.random.default_rng(5)
    dim = 16
    a = rng.normal(size=dim)
    a /= np.linalg.norm(a)
    tight = a + 0.05 * rng.normal(size=(150, dim))             # one coherent blob
    b = -a
    subs = []
    for _ in range(3):                                          # a region of three sub-blobs
        off = rng.normal(size=dim)
        subs.append(b + 0.8 * off / np.linalg.norm(off) + 0.05 * rng.normal(size=(60, dim)))
    X = np.concatenate([tight] + subs)
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    labels = np.r_[np.zeros(150, int), np.ones(180, int)]
    coh = coherence_per_cluster(X, labels, cap=3000, seed=0)
    assert coh[0] > coh[1]
    thr = float(coh.mean())
    gate = dict(root_clusterer="kmeans", kmeans_space="raw")
    tree = recursive_cluster(X, small_clustering(silhouette_threshold=thr, **gate))
    by_size = {n.size: n for n in tree.at_depth(0)}
    coherent, incoherent = by_size[150], by_size[180]
    assert coherent.leaf_reason == "coherent" and not coherent.children
    assert incoherent.children and len(incoherent.children) == 3
    low = recursive_cluster(X, small_clustering(silhouette_threshold=-1.0, **gate))
    assert all(n.leaf_reason == "coherent" for n in low.at_depth(0))


def test_default_gate_zooms_into_separated_regions_that_hold_sub_blobs():
    # Regions of three tight blobs each: well separated from their siblings (coherence far above
    # the seed's .3), yet not homogeneous. The default gate splits them into their blobs; the
    # seed's .3 stopped at the regions, which is how the planted bench lost its fine level.
    X, coarse, fine = planted_hierarchy(n_coarse=3, n_fine=3, per_fine=60, dim=24, spread=0.03, seed=4)
    gate = dict(root_clusterer="kmeans", kmeans_space="raw")
    tree = recursive_cluster(X, small_clustering(**gate))
    assert ClusteringConfig().silhouette_threshold == small_clustering().silhouette_threshold
    regions = tree.at_depth(0)
    assert len(regions) == 3 and min(n.coherence for n in regions) > 0.3
    assert all(len(n.children) == 3 for n in regions)
    assert adjusted_rand_score(fine, tree.labels_at_depth(1)) > 0.95
    seed_gate = recursive_cluster(X, small_clustering(silhouette_threshold=0.3, **gate))
    assert all(n.leaf_reason == "coherent" and not n.children for n in seed_gate.at_depth(0))


def test_hybrid_outliers_keeps_far_noise_and_takes_back_points_inside_a_region():
    from corpus_proximity.tree.clusterers import attach_inside

    rng = np.random.default_rng(2)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    X = np.concatenate([c + rng.normal(size=(200, 2)) for c in centres] + [
        np.array([[30.0, 30.0], [-25.0, 20.0], [5.0, -30.0]])])   # far from every region
    cfg = ClusteringConfig(hdbscan_min_samples=5)
    assert (make_clusterer("hybrid", cfg).fit_predict(X, 30, 0) >= 0).all()    # assign: no noise
    out = make_clusterer("hybrid", replace(cfg, hybrid_noise="outliers")).fit_predict(X, 30, 0)
    assert (out[600:] == -1).all()                                # far points stay noise
    for k in range(3):                                            # the regions are the blobs
        assert len(set(out[200 * k:200 * (k + 1)].tolist())) == 1 and out[200 * k] >= 0
    # the rule on its own: a noise point at a region's centre joins it, one beyond every
    # region's 95% extent does not, clustered points keep their labels
    labels = np.r_[np.repeat([0, 1, 2], 200), -1, -1, -1]
    Y = np.concatenate([X[:600], centres[1:2] + 0.1, [[5.0, 5.0]], X[600:601]])
    got = attach_inside(Y, labels, 0.95)
    assert got[600] == 1 and got[601] == -1 and got[602] == -1 and (got[:600] == labels[:600]).all()
    assert (attach_inside(Y, labels, 0.0)[600:] == -1).all()     # a zero extent takes nothing back


def test_min_cluster_size_formula():
    cfg = ClusteringConfig()  # base .05, decay .7, floor max(10, 50 / 2**depth)
    assert min_cluster_size(10000, 0, cfg) == 500
    assert min_cluster_size(10000, 1, cfg) == 350
    assert min_cluster_size(10000, 2, cfg) == int(10000 * 0.05 * 0.49)
    assert min_cluster_size(100, 0, cfg) == 50       # floor 50 at the root
    assert min_cluster_size(100, 1, cfg) == 25       # floor 50 / 2
    assert min_cluster_size(100, 3, cfg) == 10       # floor never below 10


def test_kmeans_root_and_fallback(planted):
    X, yc, _, tree = planted
    assert tree.root.method == "kmeans" and len(tree.root.noise) == 0  # k-means leaves no noise
    assert {tree.nodes[c].method for c in tree.root.children} == {"hdbscan"}
    # one uniform cloud: HDBSCAN (so the default hybrid root) finds no structure; the k-means
    # fallback still splits it
    rng = np.random.default_rng(0)
    cloud = rng.normal(size=(300, 8))
    cloud = (cloud / np.linalg.norm(cloud, axis=1, keepdims=True)).astype(np.float32)
    plain = recursive_cluster(cloud, small_clustering(max_depth=1, min_cluster_floor=60, floor_base=120))
    fb = recursive_cluster(cloud, small_clustering(max_depth=1, min_cluster_floor=60, floor_base=120,
                                                   fallback="kmeans"))
    assert plain.root.leaf_reason == "no_structure" and plain.n_depths == 0
    assert fb.root.method == "kmeans-fallback" and fb.n_depths == 1


def _regions(n_coarse, n_fine, per, coarse_sep, fine_sep, spread, seed=0):
    """2-d regions on a circle of radius ``coarse_sep``, each holding ``n_fine`` sub-blobs on a
    circle of radius ``fine_sep``: fast, deterministic stand-ins for a root's UMAP projection."""
    rng = np.random.default_rng(seed)
    xs, yc = [], []
    for c in range(n_coarse):
        centre = coarse_sep * np.array([np.cos(2 * np.pi * c / n_coarse), np.sin(2 * np.pi * c / n_coarse)])
        for f in range(n_fine):
            off = fine_sep * np.array([np.cos(2 * np.pi * f / n_fine), np.sin(2 * np.pi * f / n_fine)])
            xs.append(centre + off + spread * rng.normal(size=(per, 2)))
            yc += [c] * per
    return np.concatenate(xs).astype(np.float32), np.array(yc)


def _n_clusters(labels):
    return len(set(labels[labels >= 0].tolist()))


def test_hybrid_root_takes_the_coarse_level_where_either_parent_method_misses_it():
    cfg = small_clustering(kmeans_kmax=30)
    fit = {m: make_clusterer(m, cfg) for m in ("hdbscan", "kmeans", "hybrid")}
    # Real-corpus shape: 3 regions, each 3 overlapping density pockets. HDBSCAN takes the pockets
    # (7 clusters), the silhouette prefers the regions; hybrid keeps k-means' answer.
    X, yc = _regions(3, 3, 80, coarse_sep=10.0, fine_sep=1.0, spread=0.3)
    hd, km, hy = (fit[m].fit_predict(X, 30, 3) for m in ("hdbscan", "kmeans", "hybrid"))
    assert _n_clusters(hd) > 3 and adjusted_rand_score(yc, hd) < 0.8
    assert _n_clusters(hy) == 3 and adjusted_rand_score(yc, hy) == 1.0 and (hy >= 0).all()
    # Planted shape: 6 regions of 5 tight blobs smaller than min_cluster_size. The silhouette
    # keeps rising with k (k-means cuts blobs: k = 20, the cap n // min_cluster_size); HDBSCAN
    # sees the 6 regions, and its count bounds hybrid's k.
    X, yc = _regions(6, 5, 20, coarse_sep=6.0, fine_sep=1.5, spread=0.05)
    hd, km, hy = (fit[m].fit_predict(X, 30, 3) for m in ("hdbscan", "kmeans", "hybrid"))
    assert _n_clusters(km) == 20 and adjusted_rand_score(yc, km) < 0.6
    assert _n_clusters(hy) <= _n_clusters(hd)
    assert adjusted_rand_score(yc, hy) == 1.0 and (hy >= 0).all()


def test_hybrid_is_the_default_root_and_leaves_no_root_noise(planted):
    X, yc, _, _ = planted
    tree = recursive_cluster(X, small_clustering(max_depth=1))
    density = recursive_cluster(X, small_clustering(max_depth=1, root_clusterer="hdbscan"))
    assert ClusteringConfig().root_clusterer == "hybrid" and tree.root.method == "hybrid"
    assert len(tree.root.noise) == 0
    # Here the fine blobs exceed min_cluster_size, so HDBSCAN takes them as the top level and
    # hybrid, bounded by its count, cannot do coarser than the silhouette allows; it never
    # mixes regions, though, and never has more top clusters than HDBSCAN.
    assert len(tree.at_depth(0)) <= len(density.at_depth(0))
    d0 = tree.labels_at_depth(0)
    assert all(len(set(yc[d0 == c].tolist())) == 1 for c in set(d0.tolist()))


def test_max_depth_one_makes_single_level(planted):
    X, *_ = planted
    tree = recursive_cluster(X, small_clustering(max_depth=1))
    assert tree.n_depths == 1 and all(n.leaf_reason == "max_depth" for n in tree.at_depth(0))


def test_bad_embeddings():
    X, *_ = planted_hierarchy(n_coarse=2, n_fine=1, per_fine=30, dim=8)
    with pytest.raises(InputError, match="NaN/inf"):
        recursive_cluster(np.where(np.arange(len(X))[:, None] == 3, np.nan, X), small_clustering())
    with pytest.raises(InputError, match="needs at least"):
        recursive_cluster(X[:1], small_clustering())
    same = np.repeat(X[:1], 200, axis=0)
    with pytest.raises(InputError, match="same vector"):
        recursive_cluster(same, small_clustering())


# run with the tests folder as the working directory: `python -c` imports from there
_CHILD = """
import json
from conftest import planted_hierarchy
from test_cluster_corpus import PLANTED_CFG
from corpus_proximity.tree.build import recursive_cluster
X, *_ = planted_hierarchy(n_coarse=4, n_fine=3, per_fine=50, dim=24, fine_sep=0.3, spread=0.04, seed=1)
print(json.dumps(recursive_cluster(X, PLANTED_CFG).to_json(), sort_keys=True))
"""


def test_identical_tree_across_concurrent_processes(planted):
    """Separate interpreters running at the same time (threads contending) build the same tree."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    here = Path(__file__).resolve().parent
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True, cwd=here) for _ in range(2)]
    outs = [json.loads(p.communicate(timeout=600)[0]) for p in procs]
    expected = json.loads(json.dumps(planted[3].to_json(), sort_keys=True))
    assert all(o == expected for o in outs)


def test_small_node_umap_sees_the_exact_cosine_neighbours():
    # Below umap-learn's 4,096-point cut-over the reducer hands UMAP exact cosine distances from
    # one matrix product (umap-learn's own path calls its metric once per pair from Python).
    from corpus_proximity.tree.clusterers import cosine_distances

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 20)).astype(np.float32)
    X[5] = 0.0                                         # a zero vector is at distance 1 from all
    D = cosine_distances(X)
    Y = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    ref = np.clip(1.0 - Y.astype(np.float64) @ Y.T.astype(np.float64), 0, 2)
    np.fill_diagonal(ref, 0)
    ref[5, :] = ref[:, 5] = 1.0
    ref[5, 5] = 0.0
    assert D.dtype == np.float64 and np.allclose(D, ref, atol=1e-9) and np.allclose(D, D.T)
    from sklearn.metrics.pairwise import cosine_distances as sk

    ok = np.ones(len(X), bool)
    ok[5] = False
    assert np.allclose(D[np.ix_(ok, ok)], sk(X[ok].astype(np.float64)), atol=1e-9)
    # same seed, same projection; the blobs of a planted set stay apart in it
    Xp, coarse, _ = planted_hierarchy(n_coarse=3, n_fine=1, per_fine=100, dim=24, seed=1)
    from corpus_proximity.tree.clusterers import make_reducer

    a = make_reducer(small_clustering()).fit_transform(Xp, 3)
    b = make_reducer(small_clustering()).fit_transform(Xp, 3)
    assert np.array_equal(a, b)
    labels = make_clusterer("hdbscan", small_clustering()).fit_predict(a, 20, 3)
    assert adjusted_rand_score(coarse, labels) > 0.95


def test_knn_consistency_is_zero_for_random_labels_and_one_for_clean_clusters():
    from corpus_proximity.tree.build import knn_consistency

    X, coarse, _ = planted_hierarchy(n_coarse=4, n_fine=1, per_fine=80, dim=16, spread=0.05, seed=2)
    assert knn_consistency(X, coarse, 15, 3000, 0) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    shuffled = rng.permutation(coarse)
    assert abs(knn_consistency(X, shuffled, 15, 3000, 0)) < 0.1
    # noise is left out; a sample below the cap gives the same answer as far as purity goes
    with_noise = np.where(rng.random(len(coarse)) < 0.2, -1, coarse)
    assert knn_consistency(X, with_noise, 15, 3000, 0) == pytest.approx(1.0)
    assert knn_consistency(X, coarse, 15, 120, 0) == pytest.approx(1.0)
    # size-aware: clusters smaller than k can still score 1; when every point sees every other
    # one (k >= n - 1) a split cannot be told from chance, and scores 0
    small = np.r_[np.zeros(12, int), np.ones(12, int)]
    assert knn_consistency(np.concatenate([X[:12], X[80:92]]), small, 15, 3000, 0) == pytest.approx(1.0)
    tiny = np.r_[np.zeros(5, int), np.ones(5, int)]
    assert knn_consistency(np.concatenate([X[:5], X[80:85]]), tiny, 15, 3000, 0) == 0.0


def test_splits_that_umap_invents_inside_a_homogeneous_blob_are_rejected(tmp_path):
    # Three regions, each one homogeneous Gaussian blob. The default gate recurses into them;
    # UMAP + HDBSCAN then cut each blob into 3-4 clumps, which the original space does not
    # support (kNN consistency ~.2-.3): with the check they stay leaves, without it they split.
    X, _, _ = planted_hierarchy(n_coarse=3, n_fine=1, per_fine=400, dim=64, spread=0.05, seed=3)
    gate = dict(root_clusterer="kmeans", kmeans_space="raw")
    off = recursive_cluster(X, small_clustering(split_min_consistency=0.0, **gate))
    assert all(len(n.children) >= 2 for n in off.at_depth(0))
    on = recursive_cluster(X, small_clustering(**gate))
    assert ClusteringConfig().split_min_consistency == 0.5
    assert on.root.split_consistency == pytest.approx(1.0)
    for n in on.at_depth(0):
        assert not n.children and n.leaf_reason == "no_structure" and n.split_consistency < 0.5
    on.save(tmp_path)                                   # kept in tree.json
    back = ClusterTree.load(tmp_path)
    assert [back.nodes[i].split_consistency for i in on.nodes] == pytest.approx(
        [on.nodes[i].split_consistency for i in on.nodes], abs=1e-6)


def test_a_small_fit_sample_is_still_a_sample(monkeypatch):
    # Exact distances are handed over only when UMAP is fitted on every member: with a fit sample
    # below the cut-over the rest must be transformed, which "precomputed" cannot do.
    from corpus_proximity.tree import clusterers
    shapes = []
    real = clusterers.cosine_distances
    monkeypatch.setattr(clusterers, "cosine_distances", lambda X: shapes.append(X.shape) or real(X))
    X, _, _ = planted_hierarchy(n_coarse=2, n_fine=1, per_fine=250, dim=16, seed=0)
    out = clusterers.UMAPReducer(5, 15, 0.0, fit_sample=200, n_epochs=50).fit_transform(X, 0)
    assert out.shape == (500, 5) and np.isfinite(out).all() and shapes == []
    clusterers.UMAPReducer(5, 15, 0.0, fit_sample=None, n_epochs=50).fit_transform(X, 0)
    assert shapes == [(500, 16)]


@pytest.mark.slow  # ~1.5 min, and a strict xfail: it documents a target not met yet
@pytest.mark.xfail(strict=True, reason="issue 20 open: EVoC's layers over this projection hold the 60 blobs and no "
                   "12-region layer, so the pick returns the blobs (top ARI .31); the root rule still has to find it")
def test_layers_root_finds_many_top_level_regions_and_their_blobs():
    # 12 regions x 5 sub-blobs: the breadth a pretraining corpus has. A root capped at a few
    # regions (hybrid: k <= HDBSCAN's count at min_cluster_size 5% of n) cannot reach 12. The
    # most persistent layer here is the 60 blobs (the fine level), and even with max_children=20
    # no layer of 12 exists: the target of issue 20 this rule does not meet yet.
    X, yc, yf = planted_hierarchy(n_coarse=12, n_fine=5, per_fine=30, dim=32, spread=0.04, seed=5)
    tree = recursive_cluster(X, small_clustering(root_clusterer="layers", max_children=20))
    d0, d1 = tree.labels_at_depth(0), tree.labels_at_depth(1)
    assert tree.root.method == "layers" and len(tree.root.noise) == 0
    assert adjusted_rand_score(yc, d0) >= 0.9
    assert adjusted_rand_score(yf, np.where(d1 == "", d0, d1)) >= 0.9


def test_layer_pick_takes_the_most_persistent_layer_within_the_bounds():
    from corpus_proximity.tree.clusterers import pick_layer

    layers = [np.repeat(np.arange(k), 4) for k in (12, 6, 3)]
    assert _n_clusters(pick_layer(layers, [0.0, 0.9, 0.5], 2, 60)) == 6
    assert _n_clusters(pick_layer(layers, [0.0, 0.9, 0.5], 2, 4)) == 3  # max_children bounds it
    assert _n_clusters(pick_layer(layers, [0.0, 0.9, 0.5], 10, 60)) == 12  # min_children bounds it
    assert _n_clusters(pick_layer(layers, [0.0, 0.9, 0.5], 20, 60)) == 12  # none in range: the nearest


def test_small_nodes_run_numba_on_one_thread_with_the_same_tree(monkeypatch):
    # Below SERIAL_BELOW a node's numba kernels run on one thread (parallel Borůvka spins on a
    # busy machine); the tree must not depend on it, and the caller's thread count is restored.
    import numba

    from corpus_proximity.tree import build

    X, _, _ = planted_hierarchy(n_coarse=3, n_fine=2, per_fine=60, dim=16, seed=2)
    seen = []
    real = build._split_node
    monkeypatch.setattr(build, "_split_node", lambda *a: seen.append(numba.get_num_threads()) or real(*a))
    before = numba.get_num_threads()
    serial = build.recursive_cluster(X, small_clustering())
    assert seen and set(seen) == {1} and numba.get_num_threads() == before
    monkeypatch.setattr(build, "SERIAL_BELOW", 0)
    seen.clear()
    threaded = build.recursive_cluster(X, small_clustering())
    assert set(seen) == {before}
    assert sorted(serial.nodes) == sorted(threaded.nodes)
    for i, nd in serial.nodes.items():
        assert np.array_equal(nd.members, threaded.nodes[i].members)


def test_child_epochs_reach_the_nodes_below_the_root_and_stay_out_of_the_key_by_default(monkeypatch):
    from corpus_proximity.tree import clusterers
    from corpus_proximity.tree.stage import clustering_identity

    seen = []

    class Recording(clusterers.UMAPReducer):
        def fit_transform(self, X, seed):
            seen.append((len(X), self.n_epochs))
            return super().fit_transform(X, seed)

    monkeypatch.setattr(clusterers, "UMAPReducer", Recording)
    X, _, _ = planted_hierarchy(n_coarse=3, n_fine=3, per_fine=50, dim=24, fine_sep=0.3, spread=0.04, seed=1)
    recursive_cluster(X, small_clustering(umap_n_epochs=60, umap_child_epochs=20))
    assert seen[0] == (len(X), 60) and len(seen) > 1  # the root first, on every point
    assert {e for n, e in seen[1:]} == {20} and all(n < len(X) for n, _ in seen[1:])
    # None: every node gets umap_n_epochs
    assert clusterers.make_reducer(small_clustering(umap_n_epochs=60), is_root=False).n_epochs == 60
    # None (or the root's own count) is the same tree, so it keeps the key trees had before the field
    base = clustering_identity(ClusteringConfig())
    assert "umap_child_epochs" not in base
    assert clustering_identity(ClusteringConfig(umap_child_epochs=200)) == base
    assert clustering_identity(ClusteringConfig(umap_child_epochs=100))["umap_child_epochs"] == 100
    with pytest.raises(InputError, match="clustering.umap_child_epochs"):
        ClusteringConfig(umap_child_epochs=5)
