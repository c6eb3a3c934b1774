"""The ensemble registry: which runs (cache keys, configs) make up which ensemble.

A SQLite database next to the cache (``data/registry.db`` for ``cache_dir = data/cache``), stdlib
``sqlite3`` only. Several processes (the engines' workers, two ensembles started at once) may
write: the database is in WAL mode, every write is one ``BEGIN IMMEDIATE`` transaction, and a
busy database is waited for (``busy_timeout``), so concurrent writers queue instead of failing.
The runs and ensembles themselves live in the cache; the registry only indexes them.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

from corpus_proximity.ensemble import compare as ens

SCHEMA = """
CREATE TABLE IF NOT EXISTS ensembles (
    key TEXT PRIMARY KEY,          -- the ensemble stage's cache key
    kind TEXT NOT NULL,            -- tree | merge
    experiment TEXT,
    upstream TEXT NOT NULL,        -- the reference tree's key (tree) or the input's key (merge)
    path TEXT NOT NULL,            -- its cache directory
    n_runs INTEGER NOT NULL,
    config TEXT NOT NULL,          -- JSON: the settings that define it
    status TEXT NOT NULL,          -- running | done
    created REAL NOT NULL,
    finished REAL
);
CREATE TABLE IF NOT EXISTS runs (
    ensemble TEXT NOT NULL REFERENCES ensembles(key),
    run_index INTEGER NOT NULL,
    run_key TEXT NOT NULL,         -- the run's own cache key (shared by ensembles that contain it)
    path TEXT,
    config TEXT NOT NULL,          -- JSON: seed, draw
    status TEXT NOT NULL,          -- planned | done
    seconds REAL,
    PRIMARY KEY (ensemble, run_index)
);
CREATE INDEX IF NOT EXISTS ensembles_upstream ON ensembles(upstream, kind);
"""


def registry_path(cache_dir: str | Path) -> Path:
    """``<parent of cache_dir>/registry.db`` (data/registry.db for the default cache)."""
    return Path(cache_dir).resolve().parent / "registry.db"


class Registry:
    """Thin access to the registry database; one short-lived connection per operation."""

    def __init__(self, path: str | Path, timeout_s: float = 60.0):
        self.path = Path(path)
        self.timeout_s = timeout_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.execute("PRAGMA journal_mode=WAL")
            with self._write(con):  # executescript would commit first: run the statements one by one
                for statement in _statements(SCHEMA):
                    con.execute(statement)

    @contextmanager
    def _connect(self):
        con = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None)
        con.execute(f"PRAGMA busy_timeout={int(self.timeout_s * 1000)}")
        try:
            yield con
        finally:
            con.close()

    @staticmethod
    @contextmanager
    def _write(con: sqlite3.Connection):
        con.execute("BEGIN IMMEDIATE")  # take the write lock now: no upgrade deadlock between writers
        try:
            yield
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def start_ensemble(self, key: str, kind: str, experiment: str, upstream: str, path: Path,
                       config: dict, runs: list[tuple[str, dict]]) -> None:
        """Record an ensemble and its planned runs (``(run_key, run_config)`` in order), in one
        transaction; registering the same ensemble again refreshes it."""
        with self._connect() as con, self._write(con):
            con.execute("INSERT INTO ensembles(key, kind, experiment, upstream, path, n_runs, config, status, created) "
                        "VALUES (?,?,?,?,?,?,?, 'running', ?) ON CONFLICT(key) DO UPDATE SET "
                        "path=excluded.path, n_runs=excluded.n_runs, config=excluded.config",
                        (key, kind, experiment, upstream, str(path), len(runs), json.dumps(config), time.time()))
            for i, (rk, rc) in enumerate(runs):
                con.execute("INSERT INTO runs(ensemble, run_index, run_key, config, status) VALUES (?,?,?,?, 'planned') "
                            "ON CONFLICT(ensemble, run_index) DO UPDATE SET run_key=excluded.run_key, "
                            "config=excluded.config", (key, i, rk, json.dumps(rc)))

    def finish_run(self, ensemble: str, run_index: int, path: Path | None, seconds: float | None) -> None:
        with self._connect() as con, self._write(con):
            con.execute("UPDATE runs SET status='done', path=?, seconds=? WHERE ensemble=? AND run_index=?",
                        (None if path is None else str(path), seconds, ensemble, run_index))

    def finish_ensemble(self, key: str) -> None:
        with self._connect() as con, self._write(con):
            con.execute("UPDATE ensembles SET status='done', finished=? WHERE key=?", (time.time(), key))

    def runs(self, ensemble: str) -> list[dict]:
        with self._connect() as con:
            con.row_factory = sqlite3.Row
            rows = con.execute("SELECT * FROM runs WHERE ensemble=? ORDER BY run_index", (ensemble,)).fetchall()
        return [dict(r) | {"config": json.loads(r["config"])} for r in rows]

    def latest(self, upstream: str, kind: str = "tree") -> dict | None:
        """The most recently finished ensemble of ``kind`` built on ``upstream``, or None."""
        with self._connect() as con:
            con.row_factory = sqlite3.Row
            r = con.execute("SELECT * FROM ensembles WHERE upstream=? AND kind=? AND status='done' "
                            "ORDER BY finished DESC LIMIT 1", (upstream, kind)).fetchone()
        return None if r is None else dict(r) | {"config": json.loads(r["config"])}


def latest_stability(cache_dir: str | Path, tree_key: str) -> ens.Stability | None:
    """Node stability from the latest finished ensemble of the tree ``tree_key``, or None."""
    db = registry_path(cache_dir)
    if not db.is_file():
        return None
    hit = Registry(db).latest(tree_key, "tree")
    path = Path(hit["path"]) / "stability.json" if hit else None
    if path is None or not (path.parent / "_SUCCESS").is_file():
        return None
    return ens.Stability.from_json(json.loads(path.read_text()))


def _statements(script: str) -> list[str]:
    body = "\n".join(line.split("--")[0] for line in script.splitlines())
    return [s.strip() for s in body.split(";") if s.strip()]
