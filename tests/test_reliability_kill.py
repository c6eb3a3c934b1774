"""A real ``kill -9`` of the real scripts at their dangerous points (``CP_TEST_PAUSE_AT``, see
corpus_proximity/faults.py): while ``cluster_corpus.py`` publishes a tree into the output folder, and
while ``annotate_with_clusters.py`` builds a run's folder. Each time the folder is never a mix of two
runs, and a rerun completes with the very bytes of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_reliability import stray

import annotate_with_clusters
import cluster_corpus
from corpus_proximity import cache
from corpus_proximity.analysis.annotate import tree_for
from corpus_proximity.errors import InputError
from corpus_proximity.faults import ENV

ROOT = Path(__file__).resolve().parents[1]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def kill_at(point: str, script: str, *args) -> None:
    """Run ``script`` until it reaches ``point``, then SIGKILL it (and wait for its watchdog's clean-up)."""
    env = {**os.environ, ENV: point, "CP_SKIP_LLM": "1"}
    p = subprocess.Popen([sys.executable, script, *map(str, args), "--quiet"], cwd=ROOT, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in p.stderr:
            lines.append(line)
            if line.strip() == f"paused at {point}":
                break
        else:
            pytest.fail(f"{script} ended (rc {p.wait()}) before {point}:\n{''.join(lines)}")
        p.send_signal(signal.SIGKILL)
        assert p.wait(10) == -signal.SIGKILL
    finally:
        if p.poll() is None:
            p.kill()


def test_kill_9_while_publishing_the_tree(copied, capsys):
    cfg, cfg_file = copied
    assert cluster_corpus.main([str(cfg_file), "--quiet"]) == 0
    out = cfg.outputs
    published = snapshot(out)
    assert {"tree.json", "tree_arrays.npz", "tree_config.json", "labels.csv"} <= set(published)
    kill_at("publish", "cluster_corpus.py", cfg_file)
    assert not (out / "tree_config.json").exists()  # what marks the folder as a tree goes in last
    with pytest.raises(InputError, match=r"half-published tree folder .*rerun `python cluster_corpus.py") as e:
        tree_for(cfg, out, str(cfg_file))  # the crash was a KeyError
    assert "\n" not in str(e.value)
    capsys.readouterr()
    assert annotate_with_clusters.main([str(cfg_file), "--quiet", "--tree", str(out), "--results",
                                        str(cfg_file)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert cluster_corpus.main([str(cfg_file), "--quiet"]) == 0  # the rerun completes it and tidies up
    assert snapshot(out) == published
    assert tree_for(cfg, out, str(cfg_file)).path == out
    assert stray(out) == [] and not [p for p in out.iterdir() if p.name.startswith(".")]


def _results(path: Path, chunks: list[str], n: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    rows = [{"question": chunks[i], "ok": bool(rng.random() < 0.6)} for i in rng.choice(len(chunks), n, replace=False)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def runs(copied, tmp_path, capsys):
    """(annotate(results) -> the run folder's bytes, kill(point, results), a 20-row and a 40-row results
    file): every run to the same --out."""
    from corpus_proximity.text import chunking

    cfg, cfg_file = copied
    chunks = chunking.read_chunks(chunking.stage_dir(cfg), ["text"]).column("text").to_pylist()
    small, large = _results(tmp_path / "small.jsonl", chunks, 20, 0), _results(tmp_path / "large.jsonl", chunks, 40, 1)
    out = tmp_path / "runs" / "run"
    args = ["--text-field", "question", "--correct-field", "ok", "--out", str(out)]

    def annotate(results: Path) -> dict[str, bytes]:
        assert annotate_with_clusters.main([str(cfg_file), "--quiet", "--results", str(results), *args]) == 0, \
            capsys.readouterr().err
        return snapshot(out)

    def kill(point: str, results: Path) -> None:
        kill_at(point, "annotate_with_clusters.py", cfg_file, "--results", results, *args)

    return annotate, kill, small, large, out


def _one_run(files: dict[str, bytes]) -> int:
    """The rows of the run in these files, checked to be one run's: its report counts what its tables hold."""
    import io

    import pandas as pd

    n = json.loads(files["analysis.json"])["n_rows"]
    assert len(pd.read_csv(io.BytesIO(files["annotated.csv"]))) == n
    assert len(pd.read_parquet(io.BytesIO(files["annotated.parquet"]))) == n
    return n


def test_kill_9_while_annotating_leaves_the_previous_run_whole(runs):
    annotate, kill, small, large, out = runs
    before = annotate(small)
    kill("annotate", large)  # the new run's folder half built
    assert snapshot(out) == before and _one_run(before) == 20  # the previous run, whole
    assert _one_run(annotate(large)) == 40  # the rerun completes
    assert sorted(p.name for p in out.parent.iterdir()) == ["run"]  # the killed run's folder is gone


@pytest.mark.slow
def test_kill_9_at_each_point_of_an_annotation_then_a_rerun_gives_the_same_bytes(runs):
    annotate, kill, small, large, out = runs
    whole_large = annotate(large)  # an uninterrupted run, for its bytes
    whole_small = annotate(small)
    for point in ("annotate", "swap"):  # half built; built whole, about to take the old run's place
        kill(point, large)
        assert snapshot(out) == whole_small
    assert annotate(large) == whole_large
    assert sorted(p.name for p in out.parent.iterdir()) == ["run"]


def test_a_swap_without_renameat2_killed_between_its_renames_is_restored(tmp_path, monkeypatch):
    out = tmp_path / "run"
    cache.publish_dir(out, lambda d: (d / "a.txt").write_text("old"))
    monkeypatch.setattr(cache, "_exchange", lambda a, b: False)  # a file system without RENAME_EXCHANGE
    real, calls = os.replace, []

    def dying(src, dst):
        calls.append(dst)
        real(src, dst)
        if len(calls) == 1:  # the old folder is aside, the new one not yet in
            raise KeyboardInterrupt

    monkeypatch.setattr(cache.os, "replace", dying)
    with pytest.raises(KeyboardInterrupt):
        cache.publish_dir(out, lambda d: (d / "a.txt").write_text("new"))
    monkeypatch.setattr(cache.os, "replace", real)
    # the interrupted process's own staging folder is removed on the way out; a kill -9 would leave it
    assert not out.exists() and [p.suffix for p in tmp_path.iterdir()] == [".old"]
    # the next publish puts the old folder back before it builds (this build reads it), then swaps
    cache.publish_dir(out, lambda d: (d / "b.txt").write_text((out / "a.txt").read_text() + " then newer"))
    assert snapshot(out) == {"b.txt": b"old then newer"} and sorted(p.name for p in tmp_path.iterdir()) == ["run"]
