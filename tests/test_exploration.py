"""The pure core of the report and the dashboard: node tables and filters, colours, figures,
error views and viewer records on a hand-built tree and synthetic annotations; the 2-D map on
planted blobs."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.neighbors import KNeighborsClassifier

from corpus_proximity.explore import views as ex_
from corpus_proximity.explore.map import fit_map, map_sample
from corpus_proximity.tree.tree import ROOT, ClusterTree, Node

from conftest import planted_hierarchy

NAMES = {"0": "Football", "0.0": "Chelsea", "0.1": "Tennis", "1": "Asyncio", "2": "Markets"}


@pytest.fixture
def tree() -> ClusterTree:
    # 100 points: 0 = rows 0-49 (0.0 = 0-29, 0.1 = 30-44, noise 45-49), 1 = 50-79, 2 = 80-91, root noise 92-99
    def node(nid, parent, depth, members, noise=(), children=(), coh=None):
        return Node(nid, parent, depth, np.array(members, dtype=np.int64), np.array(noise, dtype=np.int64),
                    list(children), coh, None, None, None, np.zeros(4, np.float32), list(members[:3]))
    nodes = {ROOT: node(ROOT, None, -1, range(100), range(92, 100), ["0", "1", "2"]),
             "0": node("0", ROOT, 0, range(50), range(45, 50), ["0.0", "0.1"], 0.1),
             "0.0": node("0.0", "0", 1, range(30), coh=0.3), "0.1": node("0.1", "0", 1, range(30, 45), coh=0.25),
             "1": node("1", ROOT, 0, range(50, 80), coh=0.4), "2": node("2", ROOT, 0, range(80, 92), coh=-0.05)}
    return ClusterTree(nodes, n_points=100, dim=4)


def test_node_table_and_filters_keep_the_tree_connected(tree):
    t = ex_.node_table(tree, {k: v for k, v in NAMES.items() if k != "2"}, {"0.1": "tennis, grand slam"})
    assert t["id"].tolist() == [ROOT, "0", "1", "2", "0.0", "0.1"]
    row = t.set_index("id")
    assert row.loc["2", "name"] == "2"  # unnamed → its id, never invented
    assert row.loc["0", "noise"] == 5 and row.loc["0", "noise_share"] == pytest.approx(0.1)
    # a search hit deep in the tree brings its ancestors along; the depth cap and min size cut
    assert set(ex_.filter_nodes(t, search="grand slam")["id"]) == {ROOT, "0", "0.1"}
    assert set(ex_.filter_nodes(t, search="CHELSEA")["id"]) == {ROOT, "0", "0.0"}
    assert set(ex_.filter_nodes(t, max_depth=0)["id"]) == {ROOT, "0", "1", "2"}
    assert set(ex_.filter_nodes(t, min_size=20)["id"]) == {ROOT, "0", "0.0", "1"}
    assert set(ex_.filter_nodes(t, search="no such thing")["id"]) == {ROOT}


def test_node_errors_and_diverging_error_colours(tree):
    labels0 = np.array(["0"] * 10 + ["1"] * 10 + ["-1"] * 2)
    labels1 = np.array(["0.0"] * 6 + ["0.1"] * 4 + [""] * 12)
    correct = np.array([False] * 8 + [True] * 2 + [True] * 9 + [False] + [True, False])
    graded = np.ones(22, dtype=bool)
    graded[0] = False  # an ungraded row counts nowhere
    e = ex_.node_errors({0: labels0, 1: labels1}, graded, correct)
    assert e.loc[ROOT, "n_outputs"] == 21 and e.loc[ROOT, "errors"] == 9
    assert (e.loc["0", "n_outputs"], e.loc["0", "errors"]) == (9, 7)
    assert (e.loc["0.0", "n_outputs"], e.loc["0.0", "errors"]) == (5, 5)
    assert "-1" not in e.index
    t = ex_.node_table(tree, NAMES, errors=e)
    colours = dict(zip(t["id"], ex_.node_colours(t, "error rate")))
    rgb = {k: tuple(int(x) for x in c[c.index("(") + 1:-1].split(",")) for k, c in colours.items() if c.startswith("rgb")}
    assert rgb["0.0"][0] > rgb["0.0"][2]  # 100% wrong vs 43% overall: red
    assert rgb["1"][2] > rgb["1"][0]      # 10% wrong: blue
    assert colours["2"] == ex_.NA_COLOUR  # no outputs there


def test_tree_figure_labels_sizes_hover_and_switches(tree):
    t = ex_.node_table(tree, NAMES)
    samples = {nid: [f"text of {nid} <b>"] for nid in tree.nodes}
    fig = ex_.tree_figure(t, samples, "icicle", "coherence", switches=True)
    tr = fig.data[0]
    assert tr.type == "icicle" and list(tr.labels)[:3] == ["corpus", "Football", "Asyncio"]
    assert list(tr.values) == t["size"].tolist() and tr.branchvalues == "total"
    assert list(tr.parents)[:2] == ["", ROOT]
    assert "text of 0.1 &lt;b&gt;" in tr.hovertext[list(tr.ids).index("0.1")]  # escaped, not rendered
    kinds = [b.args[0]["type"] for b in fig.layout.updatemenus[0].buttons]
    assert kinds == list(ex_.TREE_KINDS)
    assert [b.label for b in fig.layout.updatemenus[1].buttons] == ["colour: depth", "colour: coherence", "colour: noise share"]
    with pytest.raises(ValueError):
        ex_.tree_figure(t, samples, "pie")


def _annotations(n=120, seed=0) -> ex_.Annotations:
    """Two text fields; cluster "1" holds most errors; wrong answers leave the question's cluster
    and sit farther from every centroid."""
    rng = np.random.default_rng(seed)
    q = rng.choice(["0", "1", "2"], n)
    wrong = np.where(q == "1", rng.random(n) < 0.8, rng.random(n) < 0.1)
    a = np.where(wrong, np.where(q == "2", "0", "2"), q)
    graded = pd.array(np.where(np.arange(n) < n - 5, ~wrong, None), dtype="boolean")  # last 5 ungraded
    table = pd.DataFrame({
        "question": [f"q{i}" for i in range(n)], "correct": graded,
        "question.cluster_depth_0": q, "question.distance_depth_0": np.where(wrong, 0.6, 0.3) + rng.normal(0, 0.05, n),
        "question.nearest_chunk": [f"c{i % 7}" for i in range(n)], "question.nearest_chunk_distance": rng.random(n),
        "gen_answer.cluster_depth_0": a, "gen_answer.distance_depth_0": rng.random(n),
        "gen_answer.nearest_chunk": ["c0"] * n, "gen_answer.nearest_chunk_distance": rng.random(n)})
    analysis = {"text_fields": ["question", "gen.answer"], "correct_fields": ["grade.ok"], "analyses": [
        {"text_field": "question", "correct_field": "grade.ok", "depths": {"depth_0": {"clusters": [], "summary": "s"}}}]}
    return ex_.read_annotations(Path("ann"), table, analysis)


def test_read_annotations_maps_fields_and_correctness_columns():
    ann = _annotations()
    assert list(ann.fields.items()) == [("question", "question."), ("gen.answer", "gen_answer.")]  # the annotator's order
    assert ann.correct_cols == {"grade.ok": "correct"} and ann.depths("question") == [0]
    graded, right = ann.outcome("grade.ok")
    assert graded.sum() == 115 and not right[-5:].any()
    assert ann.stats("question", "grade.ok", 0)["summary"] == "s" and ann.stats("gen.answer", "grade.ok", 0) is None
    single = ex_.read_annotations(Path("a"), pd.DataFrame({"cluster_depth_0": ["0"], "correct.x_ok": [True],
                                                           "correct.y_ok": [False]}),
                                  {"text_fields": ["answer"], "correct_fields": ["x.ok", "y.ok"]})
    assert single.fields == {"answer": ""} and single.correct_cols == {"x.ok": "correct.x_ok", "y.ok": "correct.y_ok"}


def test_error_views_find_the_planted_effects():
    ann = _annotations()
    e = ex_.errors_by_cluster(ann, "question", "grade.ok", 0, NAMES)
    assert e.iloc[0]["cluster"] == "1" and e.iloc[0]["name"] == "Asyncio"
    assert e["n"].sum() == 115 and e["share_of_errors"].sum() == pytest.approx(1.0)
    cross, summary = ex_.cluster_agreement(ann, "question", "gen.answer", 0, "grade.ok")
    s = summary.set_index("outputs")["same_cluster"]
    assert s["right"] == 1.0 and s["wrong"] == 0.0 and 0 < s["all"] < 1
    assert cross.to_numpy().sum() == 120
    d, tests = ex_.distance_by_correctness(ann, "question", "grade.ok")
    t = tests.set_index("distance")
    assert t.loc["to_cluster", "p_wrong_farther"] < 1e-6 and t.loc["to_nearest_chunk", "p_wrong_farther"] > 0.01
    w, r = d.loc[d.outcome == "wrong", "to_cluster"], d.loc[d.outcome == "right", "to_cluster"]
    assert t.loc["to_cluster", "p_wrong_farther"] == pytest.approx(stats.mannwhitneyu(w, r, alternative="greater").pvalue)


def test_outputs_sit_at_their_nearest_chunk():
    ann = _annotations()
    coords = np.arange(14, dtype=np.float32).reshape(7, 2)
    pos = ex_.output_positions(ann, "question", "grade.ok", {f"c{i}": i for i in range(7)}, coords)
    assert len(pos) == 120 and pos["x"].tolist()[:3] == [0.0, 2.0, 4.0] and pos["label"][0] == "q0"
    assert pos["correct"].tolist()[-5:] == [None] * 5 and set(pos["correct"][:115]) == {True, False}
    fig = ex_.map_figure(coords, np.arange(7), np.array(["0", "0", "1", "-1", "1", "2", ""]), NAMES,
                         [f"t{i}" for i in range(7)], outputs=pos)
    names = [tr.name for tr in fig.data]
    assert names[:4] == ["0 Football", "1 Asyncio", "2 Markets", "noise (no top-level cluster)"]
    assert len(fig.data[3].x) == 2  # "-1" and "" (not clustered) are both drawn as noise
    assert any(n.startswith("model output: wrong") for n in names) and any(n == "model output (not graded) (5)" for n in names)


def test_viewer_records(tree):
    coords = np.random.default_rng(0).normal(size=(100, 2)).astype(np.float32)
    levels = [tree.labels_at_depth(0), tree.labels_at_depth(1)]
    items = ex_.items_records(np.array([0, 47, 95]), [f"c{i}" for i in range(100)], [f"d{i}" for i in range(100)],
                              ["word " * 100] * 100, coords, levels, preview_chars=40)
    assert [i["cluster_level_0"] for i in items] == ["0", "0", "-1"]
    assert [i["cluster_level_1"] for i in items] == ["0.0", "-1", None]
    assert items[1]["x"] == pytest.approx(coords[47, 0], abs=1e-4) and len(items[0]["text"]) <= 42
    recs = {r["id"]: r for r in ex_.clusters_records(ex_.node_table(tree, NAMES, {"0": "sport"}))}
    assert ROOT not in recs and recs["0"]["parent"] is None and recs["0.1"]["parent"] == "0"
    assert (recs["0"]["level"], recs["0"]["size"], recs["0"]["n_noise"], recs["0"]["description"]) == (0, 50, 5, "sport")
    assert recs["2"]["name"] == "Markets" and recs["0.0"]["description"] is None


def test_map_keeps_regions_apart_and_places_unfitted_points_near_their_region():
    X, yc, _ = planted_hierarchy(n_coarse=4, n_fine=2, per_fine=60, dim=24, seed=3)
    idx = map_sample(len(X), 200, seed=0)
    assert len(idx) == 200 and np.all(np.diff(idx) > 0) and np.array_equal(idx, map_sample(len(X), 200, seed=0))
    assert np.array_equal(map_sample(50, 200, 0), np.arange(50))
    coords, fitted = fit_map(X, 200, n_neighbors=15, min_dist=0.1, seed=0)
    assert np.array_equal(fitted, idx) and coords.shape == (len(X), 2) and np.isfinite(coords).all()
    rest = np.setdiff1d(np.arange(len(X)), fitted)
    knn = KNeighborsClassifier(5).fit(coords[fitted], yc[fitted])
    assert knn.score(coords[rest], yc[rest]) >= 0.95
    tiny, _ = fit_map(X[:5], 200, 15, 0.1, 0)  # too few for UMAP: principal axes
    assert tiny.shape == (5, 2) and np.isfinite(tiny).all()


def test_stability_column_and_colours(tree):
    plain = ex_.node_table(tree, {})
    assert "stability" not in plain and "stability" not in ex_.colour_options(plain)
    ids = [i for i in plain["id"] if i != ROOT]
    stab = {i: (1.0 if k % 2 else 0.1) for k, i in enumerate(ids)}
    table = ex_.node_table(tree, {}, stability=stab)
    assert "stability" in ex_.colour_options(table)
    assert np.isnan(table.set_index("id").loc[ROOT, "stability"])
    colours = dict(zip(table["id"], ex_.node_colours(table, "stability")))
    stable = [colours[i] for i in ids if stab[i] == 1.0]
    unstable = [colours[i] for i in ids if stab[i] == 0.1]
    assert len(set(stable)) == 1 and len(set(unstable)) == 1 and stable[0] != unstable[0]
    assert colours[ROOT] == ex_.NA_COLOUR
    fig = ex_.tree_figure(table, {}, "sunburst", "stability", switches=True)
    assert any("stability" in (b.label or "") for m in fig.layout.updatemenus for b in m.buttons)


def test_errors_chart_counts_every_output_in_its_deepest_cluster_and_outside_apart():
    # rows 0-39 end at depth 0 in "0" (its largest cluster, most errors); 40-79 reach "1.0"; 80-89 outside
    n = 90
    d0 = np.array(["0"] * 40 + ["1"] * 50)
    d1 = np.array([""] * 40 + ["1.0"] * 50)
    correct = pd.array(np.r_[np.zeros(40, bool), np.ones(40, bool), np.zeros(10, bool)], dtype="boolean")
    table = pd.DataFrame({"cluster_depth_0": d0, "cluster_depth_1": d1, "correct": correct,
                          "outside": np.r_[np.zeros(80, bool), np.ones(10, bool)]})
    ann = ex_.read_annotations(Path("a"), table, {"text_fields": ["question"], "correct_fields": ["m.ok"],
                                                   "outside_percentile": 1.0})
    for depth in (0, 1):
        e = ex_.errors_by_cluster(ann, "question", "m.ok", depth, {}).set_index("cluster")
        assert e["n"].sum() == n  # nobody vanishes at the deeper depth
        assert e.loc["0", "errors"] == 40 and e.loc["outside", "n"] == 10
        assert e.loc["outside", "name"] == "outside the corpus"
    assert "1.0" in ex_.errors_by_cluster(ann, "question", "m.ok", 1, {})["cluster"].tolist()
    o = ex_.outside_by_model(ann, "question").iloc[0]
    assert (o["model"], o["n"], o["outside"], o["error_rate_outside"], o["error_rate_inside"]) == ("m.ok", 90, 10, 1.0, 0.5)
    errs = ex_.errors_by_cluster(ann, "question", "m.ok", 1, {})
    marker = ex_.errors_figure(errs, 50 / 90, "t").data[0].marker
    assert marker.cmin + marker.cmax == pytest.approx(2 * 50 / 90)  # centred on the overall rate
    assert marker.colorscale[0][1] != marker.colorscale[-1][1]  # diverging, not white-to-red


def test_stage_share_columns_colours_and_escaped_labels(tree):
    from corpus_proximity.analysis.contamination_outcomes import stage_shares

    # rows 0-49 (node 0) are mostly "sft", the rest "pretrain"; one stage name is hostile markup
    evil = "<img src=x onerror=alert(1)>"
    stages = np.array(["pretrain"] * 100, dtype=object)
    stages[:40] = "sft"
    stages[95:] = evil
    shares = stage_shares({nid: n.members for nid, n in tree.nodes.items()}, stages)
    assert shares["sft"] == {ROOT: 0.4, "0": 0.8, "0.0": 1.0, "0.1": 10 / 15, "1": 0.0, "2": 0.0}
    assert shares[evil][ROOT] == 0.05 and shares[evil]["0"] == 0.0
    table = ex_.node_table(tree, NAMES, stages=shares)
    assert ex_.colour_options(table)[-3:] == [f"stage share: {s}" for s in sorted(["pretrain", "sft", evil])]
    colours = dict(zip(table["id"], ex_.node_colours(table, "stage share: sft")))
    # diverging around the corpus share (40%): node 0 (80%) and node 1 (0%) sit on opposite sides
    assert colours["0.0"] != colours["1"] and colours[ROOT] not in (colours["0.0"], colours["1"])
    assert colours["1"] == colours["2"]
    assert "(40%)" in ex_.colour_spec(table, "stage share: sft")[2]
    fig = ex_.tree_figure(table, {}, "icicle", "stage share: sft", switches=True)
    raw = fig.to_json()
    assert evil not in raw and "&lt;img src=x onerror=alert(1)&gt;" in raw
    labels = [b.label for m in fig.layout.updatemenus for b in m.buttons]
    assert "colour: stage share: sft" in labels and "share of stage sft" in fig.layout.title.text
    assert "stages: " in fig.data[0].hovertext[1] and "sft 80%" in fig.data[0].hovertext[1]
    assert "stage share: sft" not in ex_.colour_options(ex_.node_table(tree, NAMES))
