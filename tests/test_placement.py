"""Placement by the nearest chunks' vote, and the outside-the-corpus calibration (tree/placement.py)."""

import numpy as np
import pytest

from corpus_proximity.analysis.stats import OUTSIDE, analyze_clusters
from corpus_proximity.tree.build import recursive_cluster
from corpus_proximity.tree.index import ExactSearch, IVFSearch, assign_to_clusters
from corpus_proximity.tree.placement import calibrate_outside, chunk_paths, outside_flags, vote_placement
from corpus_proximity.tree.tree import ROOT, ClusterTree, Node

from conftest import planted_hierarchy
from test_cluster_corpus import PLANTED_CFG


def _unit(X):
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def planted():
    X, yc, yf = planted_hierarchy(n_coarse=4, n_fine=3, per_fine=50, dim=24, fine_sep=0.3, spread=0.04, seed=1)
    return X, recursive_cluster(X, PLANTED_CFG)


def _tight_and_broad(dim=8, seed=0):
    """Two top-level clusters: "0" tight (30 points within ~0.05 rad of its centre), "1" broad (300
    points about 1.2 rad from its centre, half leaning towards cluster 0, half away). Near a
    leaning point of "1", cluster 0's centroid is the nearer one, though the nearby chunks are in "1"."""
    rng = np.random.default_rng(seed)
    a, b = np.eye(dim)[0], np.eye(dim)[1]
    tight = _unit(a + 0.05 * rng.normal(size=(30, dim)))
    dirs = rng.normal(size=(300, dim))
    dirs[:150, 0] = np.abs(dirs[:150, 0]) * 5  # lean towards a
    dirs[150:, 0] = -np.abs(dirs[150:, 0]) * 5
    dirs[:, 1] = 0
    broad = _unit(b + 2.5 * dirs / np.linalg.norm(dirs, axis=1, keepdims=True))
    X = np.concatenate([tight, broad])
    nodes = {ROOT: Node(ROOT, None, -1, np.arange(len(X)), children=["0", "1"], centroid=_unit(X.mean(0)[None])[0])}
    for cid, m in (("0", np.arange(30)), ("1", np.arange(30, len(X)))):
        nodes[cid] = Node(cid, ROOT, 0, m, centroid=_unit(X[m].mean(0)[None])[0])
    return X, ClusterTree(nodes=nodes, n_points=len(X), dim=dim)


def test_search_k_is_exact_and_ivf_recalls_it(planted):
    X, _ = planted
    rng = np.random.default_rng(0)
    Q = _unit(X[rng.choice(len(X), 100, replace=False)] + 0.1 * rng.normal(size=(100, X.shape[1])))
    idx, sims = ExactSearch(X, block=17).search_k(Q, 15)
    full = Q @ X.T
    np.testing.assert_array_equal(idx, np.argsort(-full, axis=1, kind="stable")[:, :15])
    np.testing.assert_allclose(sims, -np.sort(-full, axis=1)[:, :15], atol=1e-6)
    i2, s2 = IVFSearch.build(X, nlist=12, nprobe=4).search_k(Q, 15)
    recall = np.mean([len(set(a) & set(b)) / 15 for a, b in zip(idx, i2)])
    assert recall >= 0.9
    big_idx, big_sims = ExactSearch(X[:5]).search_k(Q[:3], 8)  # fewer chunks than k
    assert (big_idx[:, 5:] == -1).all() and np.isinf(big_sims[:, 5:]).all()


def test_vote_places_outputs_with_their_nearest_chunks_where_descent_does_not():
    X, tree = _tight_and_broad()
    rng = np.random.default_rng(1)
    Q = _unit(X[30:180] + 0.03 * rng.normal(size=(150, X.shape[1])))  # near the leaning broad points
    idx, sims = ExactSearch(X).search_k(Q, 15)
    ids, P = chunk_paths(tree)
    majority = [np.bincount(P[row, 0], weights=np.maximum(s, 0), minlength=2).argmax() for row, s in zip(idx, sims)]
    vote = vote_placement(Q, idx, sims, tree).paths[:, 0]
    assert np.mean(vote == ids[majority]) >= 0.99
    assert np.mean(vote == "1") >= 0.99
    descent = assign_to_clusters(Q, tree).paths[:, 0]
    assert np.mean(descent == "0") >= 0.5  # the failure the vote fixes: the tight cluster's centroid wins


def test_vote_paths_are_tree_paths_held_by_a_neighbour(planted):
    X, tree = planted
    rng = np.random.default_rng(2)
    Q = _unit(X[rng.choice(len(X), 300)] + 0.15 * rng.normal(size=(300, X.shape[1])))
    idx, sims = ExactSearch(X).search_k(Q, 15)
    a = vote_placement(Q, idx, sims, tree, block=64)
    ids, P = chunk_paths(tree)
    paths = a.paths
    for i in range(len(Q)):
        path = [p for p in paths[i] if p]
        assert path and all(paths[i, len(path):] == "")
        assert all(tree.nodes[c].parent == (ROOT if d == 0 else path[d - 1]) for d, c in enumerate(path))
        for d, c in enumerate(path):  # some neighbour's own path passes through every chosen node
            assert (ids[P[idx[i], d]] == c).any()
        for d, c in enumerate(path):
            assert a.distances[i, d] == pytest.approx(1 - Q[i] @ tree.nodes[c].centroid, abs=1e-5)
    # copies of clustered chunks land in their own leaf
    clustered = np.flatnonzero((P >= 0).sum(1) == tree.n_depths)
    idx, sims = ExactSearch(X).search_k(X[clustered], 15)
    got = vote_placement(X[clustered], idx, sims, tree).node_index
    assert np.mean((got == P[clustered]).all(axis=1)) >= 0.99


def test_noise_neighbours_keep_an_output_in_their_node():
    X, tree = _tight_and_broad()
    tree.nodes["1"].children = ["1.0"]  # one child holding half of "1"; the other half is noise of "1"
    tree.nodes["1.0"] = Node("1.0", "1", 1, np.arange(30, 180), centroid=_unit(X[30:180].mean(0)[None])[0])
    tree.nodes["1"].noise = np.arange(180, 330)
    idx, sims = ExactSearch(X).search_k(X[180:330], 5)
    paths = vote_placement(X[180:330], idx, sims, tree).paths
    assert np.mean((paths[:, 0] == "1") & (paths[:, 1] == "")) >= 0.9
    idx, sims = ExactSearch(X).search_k(X[30:180], 5)
    assert np.mean(vote_placement(X[30:180], idx, sims, tree).paths[:, 1] == "1.0") >= 0.9


def test_far_outputs_are_outside_and_held_out_chunks_are_not(planted):
    X, _ = planted
    rng = np.random.default_rng(3)
    docs = np.arange(len(X)) // 3  # three consecutive chunks (same fine blob) per document
    held = np.isin(docs, rng.choice(docs.max() + 1, (docs.max() + 1) // 5, replace=False))
    corpus, corpus_docs = X[~held], docs[~held]
    cal = calibrate_outside(corpus, corpus_docs, 10_000, seed=0, block=50)
    assert len(cal) == len(corpus) and np.all(np.diff(cal) >= 0)
    # leave-one-document-out: never a chunk of its own document (brute force on a few)
    for i in range(0, len(corpus), 37):
        other = corpus_docs != corpus_docs[i]
        assert np.isclose(cal, (corpus[other] @ corpus[i]).max(), atol=1e-5).any()
    assert not np.isclose(cal, 1.0, atol=1e-4).any()  # no chunk found itself
    _, sims = ExactSearch(corpus).search_k(X[held], 1)
    pct, outside = outside_flags(sims[:, 0], cal, 1.0)
    assert outside.mean() <= 0.02  # false-outside rate on held-out corpus chunks
    assert ((pct >= 0) & (pct <= 100)).all()
    far = _unit(rng.normal(size=(200, X.shape[1])))
    _, fs = ExactSearch(corpus).search_k(far, 1)
    fpct, fout = outside_flags(fs[:, 0], cal, 1.0)
    assert fout.all() and (fpct < 1.0).all()
    assert calibrate_outside(corpus, corpus_docs, 50, seed=5).tolist() == \
        calibrate_outside(corpus, corpus_docs, 50, seed=5).tolist()


def test_outside_outputs_are_their_own_row_not_tested():
    labels = np.array(["a"] * 40 + ["b"] * 40 + [OUTSIDE] * 20)
    correct = np.array([True] * 30 + [False] * 10 + [True] * 20 + [False] * 20 + [False] * 20)
    r = analyze_clusters(labels, correct, min_n=5)
    assert r["n"] == 80 and r["errors"] == 30
    assert {c["cluster"] for c in r["clusters"]} == {"a", "b"}
    assert r["outside"] == {"n": 20, "errors": 20, "error_rate": 1.0, "share": 0.2}
    assert "20 outputs (20%) are outside the corpus" in r["summary"]
    assert analyze_clusters(labels[:80], correct[:80], min_n=5)["overall"] == r["overall"]
