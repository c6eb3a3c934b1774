"""The hash-keyed on-disk stage cache.

Each stage result lives in ``<cache_dir>/<stage>-<key[:12]>/`` holding ``config.json``
(resolved config, upstream keys, package versions), its artifacts and a ``_SUCCESS``
marker written last. Every file is written to a temporary name and renamed, so a killed
run never leaves a half-written artifact under its final name, and a directory without
``_SUCCESS`` is never read as a result.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import numpy as np

SUCCESS = "_SUCCESS"
_VERSIONED_PACKAGES = ("numpy", "torch", "sentence-transformers", "umap-learn", "hdbscan",
                       "scikit-learn", "pyarrow", "corpus-proximity")


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def stage_key(stage: str, version: int, semantic: dict, upstream: dict[str, str]) -> str:
    """sha256 of the canonical JSON of the stage's identity."""
    payload = {"stage": stage, "version": version, "config": semantic, "upstream": upstream}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _VERSIONED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def _umask_mode() -> int:
    """The mode a plainly created file gets (0o666 minus the umask); mkstemp's is 0o600."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array)
            f.flush()
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_writer(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` and rename the result to ``path`` (for library writers)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class StageDir:
    """One stage result directory in the cache."""

    stage: str
    key: str
    path: Path

    @classmethod
    def for_key(cls, cache_dir: str | Path, stage: str, key: str) -> "StageDir":
        return cls(stage, key, Path(cache_dir) / f"{stage}-{key[:12]}")

    @property
    def complete(self) -> bool:
        return (self.path / SUCCESS).is_file()

    def file(self, name: str) -> Path:
        return self.path / name

    def begin(self) -> None:
        """Start (or resume) writing this result: the marker goes first, so readers ignore it."""
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / SUCCESS).unlink(missing_ok=True)

    def finish(self, resolved_config: dict, upstream: dict[str, str], extra: dict | None = None) -> None:
        """Write ``config.json`` and then the ``_SUCCESS`` marker, last."""
        meta = {"stage": self.stage, "key": self.key, "config": resolved_config,
                "upstream": upstream, "versions": package_versions(), **(extra or {})}
        atomic_write_json(self.file("config.json"), meta)
        atomic_write_text(self.file(SUCCESS), "")

    def read_meta(self) -> dict:
        return json.loads(self.file("config.json").read_text())


def copy_results(sd: StageDir, out: Path, suffixes: tuple[str, ...] = (".json", ".npz", ".png")) -> Path:
    """Copy a finished stage's result files with these suffixes to the human-facing folder ``out``
    (each file atomically); returns ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for f in sorted(sd.path.iterdir()):
        if f.is_file() and f.suffix in suffixes:
            atomic_writer(out / f.name, lambda p, s=f: shutil.copyfile(s, p))
    return out


def file_fingerprint(path: Path) -> str:
    """sha256 of a file's bytes (for user inputs whose content decides a stage's result)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tree_fingerprint(root: Path, suffixes: tuple[str, ...]) -> str:
    """sha256 over relative paths and bytes of the files under ``root`` with these suffixes."""
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file() and q.suffix.lower() in suffixes):
        h.update(str(p.relative_to(root)).encode())
        h.update(file_fingerprint(p).encode())
    return h.hexdigest()
