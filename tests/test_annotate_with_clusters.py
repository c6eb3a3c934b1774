import json
from pathlib import Path

import numpy as np
import pytest

from annotate_with_clusters import as_bool, assign_to_clusters, column, get_path, nearest_chunks
from cluster_corpus import recursive_cluster
from conftest import planted_hierarchy
from errors import InputError
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
    assert as_bool([True, "false", "1", 0], "c", Path("r.jsonl")).tolist() == [True, False, True, False]
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
    assert flags.dtype == bool and len(flags) == 20
    assert all(isinstance(t, str) and t for t in column(rows, "175b_verification.solution", p))
