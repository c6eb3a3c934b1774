"""The report, the viewer files and the dashboard on a slice of the embedded default corpus (real
model, real tree, offline names, model outputs annotated by the real annotate CLI): the HTML
report and its cached 2-D map, bad input, Streamlit's AppTest, and a real browser (streamlit run
+ headless Chromium)."""

import dataclasses
import io
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

import annotate_with_clusters
import visualize_clusters
from corpus_proximity.explore import data as vc
from corpus_proximity.explore import map as map2d
from corpus_proximity.explore import report
from corpus_proximity.naming.stage import load_names
from corpus_proximity.text import chunking
from corpus_proximity.tree import stage as tree_stage
from corpus_proximity.tree.tree import ClusterTree

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def quiet():
    return Console(file=io.StringIO(), width=200)


def write_config(path: Path, cfg) -> Path:
    """A configs/*.py file rebuilding ``cfg`` (the repr of the frozen dataclasses is Python)."""
    path.write_text(f"from corpus_proximity.config import *\n\nconfig = {cfg!r}\n")
    return path


@pytest.fixture(scope="module")
def built(built_default, tmp_path_factory):
    """The session's small default pipeline (read only; this module adds its names and 2-D map to the
    cache) under its own experiment name, and graded synthetic model outputs annotated by the real
    CLI: questions are chunk texts; every output of model "grade" whose question comes from the
    largest top-level cluster is wrong; model "other" is wrong everywhere else."""
    tmp = tmp_path_factory.mktemp("vis")
    cfg = dataclasses.replace(built_default, name="exploration")
    cfg_file = write_config(tmp / "cfg.py", cfg)
    tree = ClusterTree.load(tree_stage.stage_dir(cfg).path)
    texts = chunking.read_chunks(chunking.stage_dir(cfg), ["text"]).column("text").to_pylist()
    big = tree.nodes[tree.root.children[0]]
    other = np.setdiff1d(np.concatenate([tree.nodes[c].members for c in tree.root.children[1:]]), big.members)
    rng = np.random.default_rng(0)
    rows = [{"question": texts[i][:300], "answer": texts[int(rng.choice(other))][:300],
             "grade": {"is_correct": bool(i not in set(big.members.tolist()))},
             "other": {"is_correct": bool(i in set(big.members.tolist()))}}
            for i in np.concatenate([rng.choice(big.members, 12, replace=False), rng.choice(other, 18, replace=False)])]
    results = tmp / "outputs.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ann_dir = cfg.outputs / "annotations" / "outputs"
    rc = annotate_with_clusters.main([str(cfg_file), "--results", str(results), "--text-field", "question",
                                      "--text-field", "answer", "--correct-field", "grade.is_correct",
                                      "--correct-field", "other.is_correct", "--out", str(ann_dir), "--quiet"])
    assert rc == 0
    return cfg, cfg_file, tree, load_names(cfg), big.id


def test_report_shows_tree_map_and_statistics_and_exports_viewer_files(built, capsys):
    cfg, cfg_file, tree, names, big = built
    out = cfg.outputs / "report.html"
    assert visualize_clusters.main([str(cfg_file), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert f"report: {out}" in " ".join(err.split())
    assert f"run dashboard.py --server.address 127.0.0.1 -- {cfg_file}" in " ".join(err.split())
    page = out.read_text()
    assert "<script src=" not in page and "Plotly.newPlot" in page and len(page) > 3_000_000  # plotly.js inlined
    assert json.dumps(names[big])[1:-1] in page  # the tree's trace holds the names
    assert "Model outputs: where the errors are" in page and "graded by grade.is_correct" in page
    assert "cluster × correctness" in page and "all " + str(tree.n_points) + " chunks" in page
    # every model has its view behind the selector, named in its titles; the errors chart says how it counts
    assert "<select id=model-select" in page and ">other.is_correct</option>" in page
    for k, m in enumerate(("grade.is_correct", "other.is_correct")):
        assert f"id=model-{k}" in page and f"Top-level clusters · model {m}" in page and f"errors-{k}" in page
    assert "deepest cluster at or above the chosen depth" in page and "Outside the corpus" in page
    items = json.loads((cfg.outputs / "items.json").read_text())
    coords = np.load(map2d.stage_dir(cfg).file("coords.npy"))
    assert len(items) == tree.n_points and np.isfinite(coords).all()
    d0, d1 = tree.labels_at_depth(0), tree.labels_at_depth(1)
    for i in (0, len(items) // 2, len(items) - 1):
        assert items[i]["cluster_level_0"] == d0[i] and items[i]["cluster_level_1"] == (d1[i] or None)
        assert items[i]["x"] == pytest.approx(coords[i, 0], abs=1e-3)
    clusters = {c["id"]: c for c in json.loads((cfg.outputs / "clusters.json").read_text())}
    assert set(clusters) == set(tree.nodes) - {"root"}
    assert all(clusters[n]["name"] == names[n] and clusters[n]["size"] == tree.nodes[n].size for n in names)
    assert all(c["parent"] in clusters for c in clusters.values() if c["level"] > 0)


def test_map_is_a_cached_stage_keyed_on_embeddings_and_its_own_fields(built):
    cfg = built[0]
    log = quiet()
    t0 = time.perf_counter()
    sd = map2d.run_map(cfg, log)
    assert "map2d: cache hit" in log.file.getvalue() and time.perf_counter() - t0 < 5
    other_tree = dataclasses.replace(cfg, clustering=dataclasses.replace(cfg.clustering, max_depth=1))
    assert map2d.stage_dir(other_tree).path == sd.path
    reseeded = dataclasses.replace(cfg, visualization=dataclasses.replace(cfg.visualization, seed=1))
    assert map2d.stage_dir(reseeded).path != sd.path


def test_large_corpus_map_is_a_deterministic_sample_and_says_so(built):
    cfg, _, tree, _, _ = built
    small = dataclasses.replace(cfg, visualization=dataclasses.replace(cfg.visualization, map_max_points=60))
    ex = vc.load_exploration(small, log=quiet())
    assert len(ex.shown) == 60 and np.array_equal(ex.shown, map2d.map_sample(tree.n_points, 60, 0))
    assert f"a deterministic sample of 60 of {tree.n_points} chunks" in ex.map_note
    assert np.isfinite(ex.coords).all()  # the rest are placed by transform, so outputs have coordinates
    html = report.render_report(ex)
    assert "a deterministic sample of 60" in html
    report.export_viewer_files(ex, Path(small.outputs) / "sampled")
    assert len(json.loads((Path(small.outputs) / "sampled" / "items.json").read_text())) == 60


def test_bad_input_no_tree_unnamed_tree_and_no_annotations(built, tmp_path, capsys):
    cfg, _, tree, _, _ = built
    no_tree = dataclasses.replace(cfg, clustering=dataclasses.replace(cfg.clustering, seed=123))
    f = write_config(tmp_path / "nt.py", no_tree)
    assert visualize_clusters.main([str(f), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no tree for this config" in err and f"python cluster_corpus.py {f}" in err
    # LLM names never made: nodes shown by id, and the note says how to name them
    llm_naming = dataclasses.replace(cfg.naming, namer="llm", llm=dataclasses.replace(cfg.naming.llm, model="m"))
    llm = dataclasses.replace(cfg, name="llm", naming=llm_naming)
    f = write_config(tmp_path / "llm.py", llm)
    assert visualize_clusters.main([str(f), "--quiet", "--out", str(tmp_path / "r.html")]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "no llm names for this config yet" in err and "name_clusters.py CONFIG --name" in err and "shown by id" in err
    clusters = json.loads((tmp_path / "clusters.json").read_text())
    assert all(c["name"] == c["id"] for c in clusters)
    # no annotations under this name's outputs: error views hidden, and how to produce them
    assert "no annotated model outputs" in err and "annotate_with_clusters.py" in err
    assert "where the errors are" not in (tmp_path / "r.html").read_text()
    assert visualize_clusters.main([str(f), "--quiet", "--annotations", str(tmp_path)]) == 2
    assert "no annotated.parquet" in capsys.readouterr().err
    assert visualize_clusters.main([str(built[1]), "--quiet", "--out", str(tmp_path / "x.html"), "--field", "nope"]) == 2
    assert "--field nope: not annotated" in capsys.readouterr().err


# --- the dashboard --------------------------------------------------------------------------------

def _app(monkeypatch, *argv):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setattr(sys, "argv", ["dashboard.py", *argv])
    return AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=120).run()


def test_dashboard_filters_drilldown_and_error_views(built, monkeypatch):
    cfg, cfg_file, tree, names, big = built
    at = _app(monkeypatch, str(cfg_file), "--quiet")
    assert not at.exception and not at.error
    node = at.selectbox(key="node")
    assert node.value == tree.root.children[0]
    assert any(m.value == f"### {big} · {names[big]}" for m in at.markdown)
    clusters = at.dataframe[0].value
    assert len(clusters) == len(tree.nodes) - 1 and clusters["size"].is_monotonic_decreasing
    # sort the table by name, cap the depth, search
    at.selectbox(key="sort_by").set_value("name").run()
    assert at.dataframe[0].value["name"].is_monotonic_decreasing
    at.sidebar.slider(key="depth").set_value(0).run()
    assert set(at.dataframe[0].value["depth"]) == {0}
    word = names[tree.nodes[big].children[0]].split(" · ")[0] if tree.nodes[big].children else names[big]
    at.sidebar.slider(key="depth").set_value(max(tree.n_depths - 1, 0))
    at.sidebar.text_input(key="search").input(word).run()
    opts = at.selectbox(key="node").options
    assert any(word.lower() in o.lower() for o in opts) and len(opts) < len(tree.nodes) - 1
    at.sidebar.text_input(key="search").input("zzz no such node").run()
    assert not at.exception and any("No node matches" in w.value for w in at.warning)
    at.sidebar.text_input(key="search").input("").run()
    # error views: the planted cluster holds the most errors; colour by error rate works
    at.sidebar.selectbox(key="colour").set_value("error rate").run()
    assert not at.exception
    text = " ".join(m.value for m in at.markdown)
    assert "cluster × correctness" in text
    frames = [d.value for d in at.dataframe]
    err_table = next(f for f in frames if "q" in f.columns and "ci_low" in f.columns)
    assert err_table.iloc[0]["cluster"] == big and err_table.iloc[0]["error_rate"] >= 0.7
    agree = next(f for f in frames if "same_cluster" in f.columns)
    assert list(agree["outputs"]) == ["all", "right", "wrong"]
    dist = next(f for f in frames if "p_wrong_farther" in f.columns)
    assert list(dist["distance"]) == ["to_cluster", "to_nearest_chunk"]
    outside = next(f for f in frames if "outside_share" in f.columns)
    assert list(outside["model"]) == ["grade.is_correct", "other.is_correct"] and (outside["n"] == 30).all()
    assert any("deepest cluster at or above the chosen depth" in c.value for c in at.caption)
    # the other model: its name in the titles, its errors elsewhere
    assert at.sidebar.selectbox(key="correct").options == ["grade.is_correct", "other.is_correct"]
    at.sidebar.selectbox(key="correct").set_value("other.is_correct").run()
    assert not at.exception
    # (the model name comes from a results file, so it is Markdown-escaped: compare what is shown)
    assert any("Model: other.is_correct" in h.value.replace("\\", "") for h in at.subheader)
    err_table = next(f for f in (d.value for d in at.dataframe) if "q" in f.columns and "ci_low" in f.columns)
    assert err_table.set_index("cluster").loc[big, "errors"] == 0


def test_dashboard_without_annotations_or_tree_says_what_to_run(built, monkeypatch, tmp_path):
    cfg = built[0]
    bare = write_config(tmp_path / "bare.py", dataclasses.replace(cfg, name="bare"))
    at = _app(monkeypatch, str(bare), "--quiet")
    assert not at.exception and not at.error
    # notes and errors are shown as escaped Markdown (untrusted.markdown): compared without the escapes
    shown = [i.value.replace("\\", "") for i in at.info]
    assert any("error views are hidden" in v and "annotate_with_clusters.py" in v for v in shown)
    assert "error rate" not in at.sidebar.selectbox(key="colour").options
    none = write_config(tmp_path / "none.py", dataclasses.replace(
        cfg, clustering=dataclasses.replace(cfg.clustering, seed=321)))
    at = _app(monkeypatch, str(none), "--quiet")
    assert not at.exception and "python cluster_corpus.py" in at.error[0].value.replace("\\", "")
    at = _app(monkeypatch)
    assert "usage: streamlit run dashboard.py -- CONFIG" in at.error[0].value.replace("\\", "")


# --- a real browser -------------------------------------------------------------------------------

def _chrome():
    if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
        pytest.skip(f"Chromium is not installed ({CHROMIUM}, {CHROMEDRIVER}); `make test` installs the Debian "
                    "packages chromium and chromium-driver (apt-get) before running the tests")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is a dev dependency: pip install -e '.[dev]'")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-dev-shm-usage", "--window-size=1400,1800"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def _wait_for(driver, needle: str, timeout: float, css: str = "body") -> str:
    from selenium.webdriver.common.by import By

    deadline, text = time.time() + timeout, ""
    while time.time() < deadline:
        text = " ".join(e.text for e in driver.find_elements(By.CSS_SELECTOR, css))
        if needle in text:
            return text
        time.sleep(0.5)
    raise AssertionError(f"{needle!r} not shown within {timeout}s; page text: {text[:500]!r}")


@pytest.mark.browser
def test_browser_shows_the_named_tree_in_the_dashboard_and_the_report(built, tmp_path):
    cfg, cfg_file, tree, names, big = built
    driver = _chrome()
    from selenium.webdriver.common.by import By
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "dashboard.py", "--server.headless", "true",
         "--server.address", "127.0.0.1", "--server.port", str(port), "--server.fileWatcherType", "none",
         "--browser.gatherUsageStats", "false", "--", str(cfg_file), "--quiet"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 90
        while True:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise AssertionError(f"streamlit did not start: {server.stdout.read().decode()[-2000:]}") from None
                time.sleep(0.5)
        driver.get(f"http://127.0.0.1:{port}")
        _wait_for(driver, names[big], 120, css="g.slice text")  # the sunburst, drawn by plotly.js
        driver.save_screenshot(str(tmp_path / "dashboard.png"))
        next(t for t in driver.find_elements(By.CSS_SELECTOR, "[role=tab]") if t.text.strip() == "Node").click()
        _wait_for(driver, f"{big} · {names[big]}", 30)  # the drill-down of the largest node
        driver.save_screenshot(str(tmp_path / "dashboard_node.png"))
        # the standalone report, from the file system (plotly.js inlined: no network)
        report = tmp_path / "report.html"
        assert visualize_clusters.main([str(cfg_file), "--quiet", "--out", str(report)]) == 0
        driver.get(report.as_uri())
        _wait_for(driver, names[big], 60, css="g.slice text")
        _wait_for(driver, "cluster × correctness", 10)
        _wait_for(driver, "Top-level clusters · model grade.is_correct", 10)
        driver.save_screenshot(str(tmp_path / "report.png"))
        from selenium.webdriver.support.ui import Select

        Select(driver.find_element(By.ID, "model-select")).select_by_visible_text("other.is_correct")
        _wait_for(driver, "Top-level clusters · model other.is_correct", 10)  # the other model's view shows
        assert "Top-level clusters · model grade.is_correct" not in driver.find_element(By.TAG_NAME, "body").text
        _wait_for(driver, names[big], 10, css="#model-1 g.slice text")  # its tree drawn at full size
    finally:
        driver.quit()
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000 and (tmp_path / "report.png").stat().st_size > 10_000


def test_report_and_dashboard_colour_the_tree_by_a_corpus_stage(built, monkeypatch, tmp_path):
    """The default corpus's sources (BBC News, Python docs) as corpus stages (--set
    contamination.stage_field=source): one colour entry per stage and the stage × node table,
    in the report and in the dashboard."""
    cfg, cfg_file, tree, names, big = built
    out = tmp_path / "stages.html"
    stage = ("--set", "contamination.stage_field=source")
    assert visualize_clusters.main([str(cfg_file), "--quiet", *stage, "--out", str(out)]) == 0
    page = out.read_text()
    for s in ("bbc-news", "python-docs"):
        assert f'"label":"colour: stage share: {s}"' in page
    assert "The corpus has stages" in page and "Corpus stages (field source:" in page and "Cramér's V" in page
    at = _app(monkeypatch, str(cfg_file), "--quiet", *stage)
    assert not at.exception
    colour = at.sidebar.selectbox(key="colour")
    assert {"stage share: bbc-news", "stage share: python-docs"} <= set(colour.options)
    colour.set_value("stage share: python-docs").run()
    assert not at.exception
    table = next(d.value for d in at.dataframe if "Cramér's V" in d.value.columns)
    assert table["p"].iloc[0] < 1e-6  # the tree separates the two sources at depth 0
