"""Fault injection: concurrent cold runs, a full or read-only disk (a real tmpfs where this process may
mount one, else a patched write), kills during a claim, a publish and an annotation, every corrupt
artifact, hostile markup and control bytes in corpus text and LLM labels, U+2028 in JSONL, path and
config checks, orphaned workers and the dashboard's bind address (a local Ray's in
tests/test_reliability_ray.py).

The LLM's faults (a trickling server, an endpoint that echoes the key, retries) are in
tests/test_llm_caller.py and tests/test_naming_llm.py."""

from __future__ import annotations

import dataclasses
import errno
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import tomllib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

import annotate_with_clusters
import cluster_corpus
import name_clusters
import visualize_clusters
from corpus_proximity import cache
from corpus_proximity.analysis.annotate import load_query_embeddings, tree_for, write_outputs
from corpus_proximity.cache import StageDir, atomic_save_npy
from corpus_proximity.config import ClusteringConfig, ExperimentConfig
from corpus_proximity.errors import InputError
from corpus_proximity.naming.base import NamingResult, NodeName
from corpus_proximity.naming.inspect import display_names, list_table, print_inspect
from corpus_proximity.text.corpus import parse_jsonl
from corpus_proximity.text.embedding import join_shards
from corpus_proximity.tree import stage as tree_stage
from corpus_proximity.tree.tree import ROOT as ROOT_ID
from corpus_proximity.tree.tree import render
from corpus_proximity.untrusted import hover, markdown, term

from conftest import write_config

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def run_cli(main, argv, capsys) -> tuple[int, str]:
    rc = main(argv)
    return rc, capsys.readouterr().err


@contextmanager
def tmpfs(size: str):
    """A real tmpfs of ``size`` (None where this process may not mount one)."""
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="cp-tmpfs-"))
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(d)],
                        capture_output=True).returncode == 0
    try:
        yield d if ok else None
    finally:
        if ok:
            subprocess.run(["umount", "-l", str(d)], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)


def remount_ro(d: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(d)], check=True, capture_output=True)


def _error_line(err: str) -> str:
    """The one error line of a failed script (progress lines before it go to stderr too)."""
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and err.rstrip().endswith(lines[0]), err
    return lines[0]


def stray(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name.endswith((".tmp", ".old"))
                  or p.name.startswith("shard-"))


# --- concurrency -----------------------------------------------------------------------------------

def test_two_concurrent_cold_runs_both_succeed_with_identical_results(tmp_path):
    docs = [{"id": i, "text": f"document {i} about {'cats' if i % 2 else 'ships'}, line {i * 7}"} for i in range(48)]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    cfg = ExperimentConfig(name="conc", cache_dir=str(tmp_path / "cache"), output_dir=str(tmp_path / "out"))
    # precomputed vectors take the same shards-and-join path as a model without loading one twice
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(48, 16)).astype(np.float32)
    np.save(tmp_path / "vecs.npy", vecs / np.linalg.norm(vecs, axis=1, keepdims=True))
    cfg = dataclasses.replace(cfg, corpus=dataclasses.replace(cfg.corpus, path=str(tmp_path / "c.jsonl")),
                              chunking=dataclasses.replace(cfg.chunking, strategy="none"),
                              embedding=dataclasses.replace(cfg.embedding, shard_size=4,
                                                            precomputed_path=str(tmp_path / "vecs.npy")))
    cfg_file = write_config(tmp_path / "cfg.py", cfg)
    procs = [subprocess.Popen([PY, "embed_chunks.py", str(cfg_file), "--quiet"], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    embeds = list((tmp_path / "cache").glob("embed-*"))
    assert len(embeds) == 1
    assert sorted(p.name for p in embeds[0].iterdir()) == [".lock", "_SUCCESS", "config.json", "embeddings.npy"]
    assert stray(tmp_path / "cache") == []
    # one run embedded, the other waited for it (or found it finished) and reused it
    assert sum("embed: cache hit" in o for o in outs) == 1, outs
    sd = StageDir("embed", "", embeds[0])
    sd.verify(full=True)
    assert np.load(embeds[0] / "embeddings.npy").shape[0] == 48


CLAIM = textwrap.dedent("""
    import sys, time
    from corpus_proximity.cache import StageDir, atomic_write_json
    sd = StageDir.for_key(sys.argv[1], "s", "cd" * 32)
    assert sd.begin()
    atomic_write_json(sd.file("a.json"), {"by": "child"})
    print("claimed", flush=True)
    time.sleep(float(sys.argv[2]))
    sd.finish({}, {})
""")


def test_a_second_claim_waits_for_the_first_and_reuses_it(tmp_path):
    p = subprocess.Popen([PY, "-c", CLAIM, str(tmp_path), "1.5"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "claimed"
    sd = StageDir.for_key(tmp_path, "s", "cd" * 32)
    t0 = time.perf_counter()
    assert sd.begin() is False  # waited, then found the child's finished result
    assert time.perf_counter() - t0 > 0.5 and p.wait(10) == 0
    assert sd.complete and json.loads(sd.file("a.json").read_text()) == {"by": "child"}


def test_a_killed_claim_is_taken_over_and_its_leftovers_removed(tmp_path):
    p = subprocess.Popen([PY, "-c", CLAIM, str(tmp_path), "60"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "claimed"
    sd = StageDir.for_key(tmp_path, "s", "cd" * 32)
    (sd.path / f".a.json.{p.pid}-dead.tmp").write_text("half")  # a temp file of the killed writer
    p.kill()
    p.wait(10)
    t0 = time.perf_counter()
    assert sd.begin() is True and time.perf_counter() - t0 < 5
    assert not list(sd.path.glob("*.tmp")) and not list(sd.path.glob(".*.tmp"))
    sd.finish({}, {})
    assert sd.complete


def test_temp_names_differ_per_call_and_carry_the_pid(tmp_path):
    a, b = cache.temp_name(tmp_path / "x.npy"), cache.temp_name(tmp_path / "x.npy")
    assert a != b and a.parent == tmp_path and a.name.startswith(f".x.npy.{os.getpid()}-")


# --- full and read-only disks ----------------------------------------------------------------------

def test_full_disk_is_one_line_naming_the_path_and_leaves_nothing_half_written(tmp_path, monkeypatch):
    shards = tmp_path / "shards"
    paths = []
    for i in range(3):
        paths.append(shards / f"shard-{i:05d}.npy")
        atomic_save_npy(paths[-1], np.ones((400, 384), np.float32))
    with tmpfs("1m") as fs:
        if fs is None:  # no mount here: the write fails as a full disk would
            fs = tmp_path / "full"
            fs.mkdir()
            monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1 << 20, 1 << 20, 0))
            real_save = np.save
            monkeypatch.setattr(np, "save", lambda f, a: (real_save(f, a[:1]), (_ for _ in ()).throw(
                OSError(errno.ENOSPC, "No space left on device")))[1])
        with pytest.raises(InputError, match=r"cannot write .*embeddings.npy: it needs 1.8 MB .* MB free") as e:
            join_shards(paths, fs / "embeddings.npy", 384, 1200)  # the run that died with SIGBUS
        assert "\n" not in str(e.value)
        with pytest.raises(InputError, match=r"cannot write .*big.npy: the disk is full"):
            atomic_save_npy(fs / "big.npy", np.ones((1200, 384), np.float32))
        assert list(fs.iterdir()) == []  # no temp file keeps the disk full, nothing under a final name


@contextmanager
def read_only_copy(cfg, cfg_file: Path):
    """(config, config file) of a read-only copy of ``cfg``'s cache: a tmpfs remounted read-only where
    this process may mount one (root, whom file modes do not stop), else folders made unwritable
    (chmod a-w); skipped where neither holds. The outputs stay writable."""
    with tmpfs("64m") as fs:
        root = os.geteuid() == 0
        if fs is None and root:
            pytest.skip("root, and no tmpfs can be mounted: nothing here makes a folder read-only for root")
        base = fs if fs is not None else Path(cfg.cache_dir).parent / "ro"
        shutil.copytree(cfg.cache_dir, base / "cache")
        ro = dataclasses.replace(cfg, cache_dir=str(base / "cache"))
        ro_file = write_config(cfg_file.with_name("ro.py"), ro)
        if fs is not None:
            remount_ro(fs)
        else:
            subprocess.run(["chmod", "-R", "a-w", str(base)], check=True)
        try:
            yield ro, ro_file
        finally:
            if fs is None:
                subprocess.run(["chmod", "-R", "u+w", str(base)], check=True)


def test_read_only_cache_reading_stages_compute_offline_names_in_memory(copied, capsys):
    with read_only_copy(*copied) as (ro, ro_file):
        rc = name_clusters.main([str(ro_file), "--tree", "--quiet"])
        err = capsys.readouterr().err
        assert rc == 0, err
        assert "not writable; offline names computed in memory" in " ".join(err.split())
        rc, err = run_cli(name_clusters.main, [str(ro_file), "--name", "--quiet"], capsys)
        assert rc == 2 and _error_line(err).startswith(f"error: cannot write {Path(ro.cache_dir).parent}"), err


def test_read_only_cache_without_a_map_computes_it_in_memory(copied, capsys, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from corpus_proximity.explore import map as map2d

    cfg, cfg_file = copied
    assert not list(Path(cfg.cache_dir).glob("map2d-*"))  # the copy has no map
    with read_only_copy(cfg, cfg_file) as (ro, ro_file):
        rc, err = run_cli(visualize_clusters.main, [str(ro_file), "--quiet"], capsys)
        assert rc == 0, err
        assert "map2d: " in err and "is not writable; the 2-D map computed in memory" in " ".join(err.split())
        assert (ro.outputs / "report.html").is_file() and not list(Path(ro.cache_dir).glob("map2d-*"))
        coords, shown, in_memory = map2d.load_map(ro)
        monkeypatch.setattr(sys, "argv", ["dashboard.py", str(ro_file), "--quiet"])
        at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=120).run()
        assert not at.exception and not at.error
        assert any("2\\-D map was computed in memory" in i.value for i in at.info), [i.value for i in at.info]
    assert in_memory
    cached, cached_shown, again = map2d.load_map(cfg)  # the writable copy computes and caches it: the same map
    assert not again and np.array_equal(coords, cached) and np.array_equal(shown, cached_shown)


# --- kills during publish and annotation -----------------------------------------------------------

def test_kill_during_publish_never_yields_a_mixed_tree_folder(copied, monkeypatch):
    cfg, _ = copied
    sd = tree_stage.stage_dir(cfg)
    tree_stage.publish(cfg, sd, None)
    out = cfg.outputs
    assert tree_for(cfg, out, "CFG").path == out
    real = os.replace
    calls = []

    def dying(src, dst):  # the process dies after the first file is renamed into place
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(src, dst)

    monkeypatch.setattr(tree_stage.os, "replace", dying)
    with pytest.raises(KeyboardInterrupt):
        tree_stage.publish(cfg, sd, None)
    monkeypatch.setattr(tree_stage.os, "replace", real)
    with pytest.raises(InputError, match="not a tree folder|half-published tree folder"):
        tree_for(cfg, out, "CFG")  # refused in one line, no KeyError
    # a folder holding another tree's arrays beside this tree's config: refused by the checksums
    tree_stage.publish(cfg, sd, None)
    arr = dict(np.load(out / "tree_arrays.npz"))
    arr["centroids"] = arr["centroids"][::-1].copy()
    with open(out / "tree_arrays.npz", "wb") as f:
        np.savez(f, **arr)
    with pytest.raises(InputError, match=r"tree_arrays.npz is corrupt .*rerun `python cluster_corpus.py"):
        tree_for(cfg, out, "CFG")
    tree_stage.publish(cfg, sd, None)  # the next publish completes it and tidies up
    assert tree_for(cfg, out, "CFG").path == out
    assert stray(out) == [] and not [p for p in out.iterdir() if p.name.startswith(".")]


def test_kill_during_annotation_keeps_one_runs_folder(tmp_path, monkeypatch):
    import pandas as pd

    out = tmp_path / "ann" / "run"
    write_outputs(out, pd.DataFrame({"q": ["a"] * 100}), {"n_rows": 100, "results": "old.jsonl"})
    real = pd.DataFrame.to_parquet
    monkeypatch.setattr(pd.DataFrame, "to_parquet", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        write_outputs(out, pd.DataFrame({"q": ["b"] * 300}), {"n_rows": 300, "results": "new.jsonl"})
    monkeypatch.setattr(pd.DataFrame, "to_parquet", real)
    assert json.loads((out / "analysis.json").read_text())["n_rows"] == 100
    assert len(pd.read_csv(out / "annotated.csv")) == 100 and len(pd.read_parquet(out / "annotated.parquet")) == 100
    write_outputs(out, pd.DataFrame({"q": ["b"] * 300}), {"n_rows": 300, "results": "new.jsonl"})
    assert len(pd.read_parquet(out / "annotated.parquet")) == 300
    assert sorted(p.name for p in out.parent.iterdir()) == ["run"]


def test_shards_left_after_success_are_removed_by_a_rerun(copied):
    from corpus_proximity.text import embedding

    cfg, _ = copied
    sd = embedding.stage_dir(cfg)
    atomic_save_npy(sd.file("shards") / "shard-00000.npy", np.zeros((2, 2), np.float32))  # killed in clean-up
    embedding.run_embedding(cfg, Console(file=io.StringIO()))
    assert not sd.file("shards").exists()


# --- corrupt artifacts -----------------------------------------------------------------------------

def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


@pytest.mark.parametrize("stage,name,damage", [
    ("tree", "tree.json", _truncate),
    ("tree", "tree_arrays.npz", _truncate),
    ("chunks", "chunks.parquet", _truncate),
    ("tree", "config.json", lambda p: p.write_text("{garbage")),
    ("embed", "embeddings.npy", "swap"),
])
def test_each_corrupt_artifact_is_one_line_naming_the_file_and_the_fix(copied, capsys, stage, name, damage):
    cfg, cfg_file = copied
    (sd,) = Path(cfg.cache_dir).glob(f"{stage}-*")
    if damage == "swap":  # two rows swapped: same size, same shape, another tree
        a = np.load(sd / name)
        a[[0, 1]] = a[[1, 0]]
        np.save(sd / name, a)
    else:
        damage(sd / name)
    rc, err = run_cli(cluster_corpus.main, [str(cfg_file), "--quiet"], capsys)
    line = _error_line(err)
    assert rc == 2 and line.startswith(f"error: {sd / name} is corrupt") and line.endswith(f"delete {sd} and rerun")
    assert not (cfg.outputs / "tree_config.json").exists()  # nothing copied to the outputs


def test_corrupt_names_and_small_artifacts_are_named(tmp_path):
    for name, data in (("names.json", b'{"nodes": []}'), ("coords.npy", None), ("fitted.npy", None)):
        sd = StageDir.for_key(tmp_path, name.split(".")[0], "ef" * 32)
        assert sd.begin()
        if data is None:
            atomic_save_npy(sd.file(name), np.arange(20, dtype=np.float32).reshape(10, 2))
        else:
            sd.file(name).write_bytes(data)
        sd.finish({}, {})
        raw = bytearray(sd.file(name).read_bytes())
        raw[-1] ^= 0xFF  # one flipped byte, same size
        sd.file(name).write_bytes(bytes(raw))
        with pytest.raises(InputError, match=rf"{name} is corrupt \(its sha256 differs.*delete .* and rerun"):
            sd.complete
    n_ok, bad = cache.verify_all(tmp_path)  # what verify_cache.py reports
    assert n_ok == 0 and len(bad) == 3 and all("is corrupt" in b for b in bad)
    q = StageDir.for_key(tmp_path, "queries", "ab" * 32)
    q.path.mkdir(parents=True)
    q.file("embeddings.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(InputError, match=r"embeddings.npy is corrupt \(unreadable"):
        load_query_embeddings(q, 3)


# --- hostile text ----------------------------------------------------------------------------------

HOSTILE = "[/dim] [bold red]x[/] \x1b[31mred\x1b[0m nul\x00 bell\x07 ![img](http://example.invalid/p.png) <img src=x>"


def _console() -> Console:
    return Console(file=io.StringIO(), width=200, force_terminal=True, color_system=None)


def test_hostile_corpus_text_and_llm_labels_print_without_crash_or_escapes(copied):
    from corpus_proximity.naming.stage import load_inputs
    from corpus_proximity.tree.tree import ClusterTree

    cfg, _ = copied
    tree_sd = tree_stage.stage_dir(cfg)
    tree, texts, _ = load_inputs(cfg, tree_sd)
    texts = [HOSTILE] * len(texts)
    nid = tree.root.children[0]
    names = {n: NodeName(id=n, name="[/cyan] label\x1b]8;;http://x\x07", source="llm", summary=HOSTILE,
                      keywords=["[/]"]) for n in tree.nodes if n != ROOT_ID}
    c = _console()
    c.print(render(ClusterTree.load(tree_sd.path), display_names(names)))
    c.print(list_table(tree, names))
    print_inspect(tree, names, texts, nid, 2, 0, c)
    out = c.file.getvalue()
    assert "[/cyan] label" in out and "[/dim] [bold red]x[/]" in out  # shown literally
    assert "\x1b]8" not in out and "\x00" not in out and "\x07" not in out and "\x1b[31m" not in out


def test_escapes_for_markdown_and_plotly():
    import re

    md = markdown(HOSTILE)
    assert not re.search(r"(?<!\\)[!\[\]()<>*`]", md) and "\x1b" not in md  # every metacharacter escaped
    assert md.replace("\\", "").startswith("[/dim]")  # the text is all there, escaped
    assert hover("<b>x</b>\x00") == "&lt;b&gt;x&lt;/b&gt;"
    assert term("[/dim]\x1b[2J") == "\\[/dim][2J"  # markup escaped; ESC dropped, so the rest is plain text


def test_dashboard_node_view_shows_names_as_text(copied, monkeypatch):
    from streamlit.testing.v1 import AppTest

    cfg, cfg_file = copied
    names_cfg = dataclasses.replace(cfg, name="hostile")
    f = write_config(cfg_file.with_name("hostile.py"), names_cfg)
    from corpus_proximity.naming import stage as naming_stage

    tree_sd = naming_stage.tree_stage(names_cfg)
    sd = naming_stage.stage_dir(names_cfg, tree_sd)
    from corpus_proximity.tree.tree import ClusterTree

    tree = ClusterTree.load(tree_sd.path)
    result = NamingResult({n: NodeName(id=n, name="![x](http://example.invalid/a.png)", source="llm",
                                       summary="<img src=x> **b**") for n in tree.nodes if n != ROOT_ID})
    naming_stage.write_names(sd, names_cfg, tree_sd, result, 0.0)
    monkeypatch.setattr(sys, "argv", ["dashboard.py", str(f), "--quiet"])
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=120).run()
    assert not at.exception
    shown = " ".join(m.value for m in at.markdown)
    import re

    assert "\\!\\[x\\]" in shown  # the name is shown, escaped: no image, no tag can come of it
    assert not re.search(r"(?<!\\)!\[|(?<!\\)<img|(?<!\\)\*\*b", shown)


def test_dashboard_errors_show_untrusted_text_as_text(tmp_path, monkeypatch):
    import re

    from streamlit.testing.v1 import AppTest

    hostile = tmp_path / "![x](http://example.invalid/a.png) <img src=x> **b**.py"  # no such config file
    monkeypatch.setattr(sys, "argv", ["dashboard.py", str(hostile), "--quiet"])
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=60).run()
    assert not at.exception and len(at.error) == 1
    body = at.error[0].value
    assert "does not exist" in body and "example.invalid" in body.replace("\\", "")  # the message, escaped
    assert not re.search(r"(?<!\\)!\[|(?<!\\)<img|(?<!\\)\*\*b|(?<!\\)\]\(", body), body


# --- input -----------------------------------------------------------------------------------------

def test_jsonl_splits_on_newline_only():
    rows = parse_jsonl('{"t": "a\u2028b"}\n{"t": "c\u0085d\u2029e"}\r\n\n', Path("x.jsonl"))
    assert [r["t"] for r in rows] == ["a\u2028b", "c\u0085d\u2029e"]


def test_path_arguments_are_checked(copied, capsys, tmp_path):
    cfg, cfg_file = copied
    d = tmp_path / "a_dir"
    d.mkdir()
    rc, err = run_cli(cluster_corpus.main, [str(cfg_file), "--quiet", "--export-labels", str(d)], capsys)
    assert rc == 2 and err.count("\n") == 1 and "--export-labels" in err and "is a directory" in err
    rc, err = run_cli(visualize_clusters.main, [str(cfg_file), "--quiet", "--out", str(d)], capsys)
    assert rc == 2 and "--out" in err and "is a directory" in err
    f = tmp_path / "a_file"
    f.write_text("x")
    rc, err = run_cli(annotate_with_clusters.main, [str(cfg_file), "--quiet", "--out", str(f), "--results", str(f)],
                      capsys)
    assert rc == 2 and "--out" in err and "is a file" in err
    rc, err = run_cli(annotate_with_clusters.main, [str(cfg_file), "--quiet", "--results", str(d)], capsys)
    assert rc == 2 and "--results" in err and "is a directory" in err
    for field, value in (("cache_dir", str(f)), ("output_dir", str(f)), ("embedding.precomputed_path", str(d))):
        rc, err = run_cli(cluster_corpus.main, [str(cfg_file), "--quiet", "--set", f"{field}={value}"], capsys)
        assert rc == 2 and err.count("\n") == 1 and field in err, (field, err)


@pytest.mark.parametrize("cls,kw,field", [
    (ClusteringConfig, {"n_samples_per_node": -1}, "clustering.n_samples_per_node"),
    (ClusteringConfig, {"hdbscan_min_samples": 100000}, "clustering.hdbscan_min_samples"),
    (ExperimentConfig, {"name": ".."}, "name"),
    (ExperimentConfig, {"name": "a\x1bb"}, "name"),
])
def test_impossible_config_values_are_refused(cls, kw, field):
    with pytest.raises(InputError, match=f"config field {field}: "):
        cls(**kw)


def test_min_samples_above_the_corpus_size_is_refused():
    from corpus_proximity.tree.build import recursive_cluster

    X = np.random.default_rng(0).normal(size=(60, 8)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    cfg = ClusteringConfig(hdbscan_min_samples=500, min_cluster_floor=5, floor_base=5)
    with pytest.raises(InputError, match="hdbscan_min_samples: 500 is more than the corpus' 60 chunks"):
        recursive_cluster(X, cfg)


# --- child processes and the dashboard's address ---------------------------------------------------

ORPHANS = textwrap.dedent("""
    import subprocess, sys, time
    from joblib import Parallel, delayed
    from corpus_proximity.children import watch_children
    watch_children()
    Parallel(n_jobs=2, prefer="processes")(delayed(abs)(i) for i in range(4))  # loky keeps its workers
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    time.sleep(1.0)
    print("ready", flush=True)
    time.sleep(120)
""")


def test_workers_end_when_the_parent_is_killed(tmp_path):
    import psutil

    p = subprocess.Popen([PY, "-c", ORPHANS], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    kids = [k for k in psutil.Process(p.pid).children(recursive=True)
            if "corpus_proximity.children" not in " ".join(k.cmdline())]
    assert len(kids) >= 3  # two loky workers (and loky's resource tracker) and the sleeper
    p.send_signal(signal.SIGKILL)
    p.wait(10)
    gone, alive = psutil.wait_procs(kids, timeout=8)
    assert not alive, [a.cmdline() for a in alive]


def test_dashboard_binds_localhost_by_default():
    conf = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert conf["server"]["address"] == "127.0.0.1"
    args = type("A", (), {"config": "configs/x.py", "overrides": [], "annotations": None})()
    cmd = visualize_clusters.dashboard_command(args)
    assert "--server.address 127.0.0.1" in cmd


@pytest.mark.slow
def test_streamlit_listens_on_localhost_only(built_default, tmp_path):
    import psutil

    f = write_config(tmp_path / "cfg.py", built_default)
    exe = Path(PY).with_name("streamlit")
    p = subprocess.Popen([str(exe), "run", "dashboard.py", "--server.port", "8599", "--", str(f), "--quiet"],
                         cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, addrs = time.time() + 60, set()
        while time.time() < deadline and not addrs:
            addrs = {c.laddr.ip for c in psutil.Process(p.pid).net_connections("inet")
                     if c.status == psutil.CONN_LISTEN}
            time.sleep(0.5)
        assert addrs == {"127.0.0.1"}
    finally:
        p.terminate()
        p.wait(10)
