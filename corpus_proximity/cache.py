"""The hash-keyed on-disk stage cache.

Each stage result lives in ``<cache_dir>/<stage>-<key[:12]>/`` holding ``config.json``
(resolved config, upstream keys, package versions), its artifacts and a ``_SUCCESS``
marker written last. Every file is written to a temporary name and renamed, so a killed
run never leaves a half-written artifact under its final name, and a directory without
``_SUCCESS`` is never read as a result.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import platform
import secrets
import shutil
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import numpy as np

from corpus_proximity import faults
from corpus_proximity.errors import InputError

SUCCESS = "_SUCCESS"
LOCK = ".lock"
# artifacts at most this big are hashed whenever their stage is read; bigger ones only have their size
# checked on load (verify_cache.py hashes everything)
HASH_ON_LOAD_BYTES = 64 << 20
_DISK_ERRNOS = {errno.ENOSPC: "the disk is full: free space or set cache_dir/output_dir elsewhere",
                errno.EDQUOT: "the disk quota is exceeded: free space or set cache_dir/output_dir elsewhere",
                errno.EROFS: "the file system is read-only: set cache_dir/output_dir to a writable folder",
                errno.EACCES: "permission denied: make it writable or set cache_dir/output_dir elsewhere",
                errno.EPERM: "permission denied: make it writable or set cache_dir/output_dir elsewhere"}
_VERIFIED: set[tuple[str, float]] = set()
_LOCKS: dict[str, int] = {}
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


def temp_name(path: Path) -> Path:
    """A temporary name beside ``path`` that no other process (or thread) uses: pid + random."""
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def disk_error(path: Path, e: OSError) -> InputError | None:
    """The one-line error for a write that failed on a full, read-only or forbidden disk (else None)."""
    code = e.errno
    # pyarrow's IO errors and numpy's short writes ("N requested and M written") carry no errno
    if code is None and ("No space left" in str(e) or ("requested and" in str(e) and "written" in str(e))):
        code = errno.ENOSPC
    if code not in _DISK_ERRNOS:
        return None
    return InputError(f"cannot write {path}: {_DISK_ERRNOS[code]}")


@contextlib.contextmanager
def writing(path: Path):
    """Turn ENOSPC / EDQUOT / EROFS / EACCES while writing ``path`` into a one-line InputError."""
    try:
        yield
    except OSError as e:
        err = disk_error(Path(path), e)
        if err is None:
            raise
        raise err from None


def check_free_space(folder: Path, nbytes: int, what: str) -> None:
    """Refuse (one line) to start a write of ``nbytes`` that the disk under ``folder`` cannot hold."""
    free = shutil.disk_usage(folder).free
    if free < nbytes + (1 << 20):
        raise InputError(f"cannot write {what}: it needs {nbytes / 1e6:.1f} MB and {folder} has "
                         f"{free / 1e6:.1f} MB free; free space or set cache_dir elsewhere")


def mkdir(path: Path) -> Path:
    with writing(path):
        path.mkdir(parents=True, exist_ok=True)
    return path


def writable(path: Path) -> bool:
    """Whether ``path`` (or, where it does not exist yet, its nearest existing folder) can be written."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return os.access(p, os.W_OK)


def _atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """``write(file object)`` into a per-process temp file beside ``path``, fsync, rename into place."""
    mkdir(path.parent)
    with writing(path):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
                os.fchmod(f.fileno(), _umask_mode())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    _atomic_write(path, lambda f: np.save(f, array))


def atomic_writer(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` and rename the result to ``path`` (for library writers)."""
    mkdir(path.parent)
    tmp = temp_name(path)
    with writing(path):
        try:
            write(tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def staging_dir(like: Path):
    """A private folder beside ``like`` (pid + random in its name), removed on exit; the leftovers
    of killed processes (``.<name>.<pid>-*.tmp`` / ``.old``) are removed first."""
    mkdir(like.parent)
    for left in [*like.parent.glob(f".{like.name}.*.tmp"), *like.parent.glob(f".{like.name}.*.old")]:
        remove_stale(left)
    tmp = temp_name(like)
    with writing(tmp):
        tmp.mkdir()
        try:
            yield tmp
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


def publish_dir(out: Path, build: Callable[[Path], None]) -> Path:
    """Publish the folder ``out`` as a whole: ``build(tmp)`` fills a private folder beside it, which
    then takes ``out``'s place, so a reader (or a run killed at any point) sees the old folder or the
    new, never a mix. On Linux the two are exchanged in one step (``renameat2(RENAME_EXCHANGE)``);
    elsewhere the old folder is renamed aside first, and if a kill leaves ``out`` absent the next
    publish restores it before starting. Leftovers of a killed publish are removed by the next."""
    _restore_aside(out)
    with staging_dir(out) as tmp:
        build(tmp)
        faults.pause("swap")
        if not out.exists():
            os.replace(tmp, out)
        elif not _exchange(tmp, out):
            old = tmp.with_suffix(".old")
            os.replace(out, old)  # a kill between these two renames: `out` absent, restored by the next run
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
    return out


def _restore_aside(out: Path) -> None:
    """Put back the folder a killed two-rename publish left aside (``.<name>.<pid>-*.old``)."""
    if out.exists() or not out.parent.is_dir():
        return
    aside = [p for p in out.parent.glob(f".{out.name}.*.old") if p.is_dir()]
    if aside:
        os.replace(max(aside, key=lambda p: p.stat().st_mtime), out)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2`` with RENAME_EXCHANGE); False where unsupported."""
    if sys.platform != "linux":
        return False
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        shutil.rmtree(a, ignore_errors=True)  # now the old folder
        return True
    if ctypes.get_errno() in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):  # a file system without it
        return False
    raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()), str(b))


def remove_stale(path: Path) -> None:
    """Remove a leftover temp file/folder whose writer (the pid in its name) is gone."""
    try:
        pid = int(path.name.rsplit(".", 2)[-2].split("-")[0])
    except (ValueError, IndexError):
        return
    if pid != os.getpid() and _alive(pid):
        return
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def artifact_record(folder: Path) -> dict[str, dict]:
    """Size and sha256 of every artifact file in ``folder`` (not config.json, markers, dotfiles, folders)."""
    return {f.name: {"size": f.stat().st_size, "sha256": sha256_file(f)} for f in sorted(folder.iterdir())
            if f.is_file() and not f.name.startswith(".") and f.name not in ("config.json", SUCCESS)}


def check_artifacts(folder: Path, meta: dict, fix: str, full: bool = False) -> None:
    """Raise a one-line InputError naming the first artifact of ``meta["artifacts"]`` in ``folder`` whose
    size (always) or sha256 (small files, or all with ``full``) differs from the record."""
    for name, rec in (meta.get("artifacts") or {}).items():
        f = folder / name
        if not f.is_file():
            raise InputError(f"{f} is missing: {fix}")
        size = f.stat().st_size
        if size != rec["size"]:
            raise InputError(f"{f} is corrupt ({size} bytes, {rec['size']} recorded in config.json): {fix}")
        if (full or size <= HASH_ON_LOAD_BYTES) and sha256_file(f) != rec["sha256"]:
            raise InputError(f"{f} is corrupt (its sha256 differs from config.json's): {fix}")


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
        """A finished result (``_SUCCESS``) whose artifacts match the sizes and checksums in its
        config.json (checked once per process); a corrupt one is a one-line InputError with the fix."""
        marker = self.path / SUCCESS
        try:
            stamp = marker.stat().st_mtime
        except FileNotFoundError:
            return False
        if (str(self.path), stamp) not in _VERIFIED:
            self.verify()
            _VERIFIED.add((str(self.path), stamp))
        return True

    @property
    def fix(self) -> str:
        return f"delete {self.path} and rerun"

    def verify(self, full: bool = False) -> None:
        """Check config.json parses and every recorded artifact's size (and sha256: small files, or all
        with ``full``); raise a one-line InputError naming the bad file."""
        check_artifacts(self.path, self.read_meta(), self.fix, full)

    def file(self, name: str) -> Path:
        return self.path / name

    def begin(self, redo: bool = False) -> bool:
        """Claim this result for writing. Takes the stage's lock (an ``flock`` that the kernel releases
        when its holder dies, so a killed run's lock is simply taken over), waiting while another run of
        the same config holds it. Returns False when that run finished the result meanwhile (use it,
        write nothing; with ``redo``, e.g. a retry of failed names, the claim is taken anyway); else removes leftovers of killed runs and the marker (so readers ignore the
        folder until :meth:`finish`) and returns True."""
        mkdir(self.path)
        key = str(self.path)
        if key not in _LOCKS:
            with writing(self.path / LOCK):
                fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                from corpus_proximity import cli

                cli.console.print(f"{self.stage}: another run (pid {holder}) is computing {self.path}; waiting for it")
                fcntl.flock(fd, fcntl.LOCK_EX)
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            _LOCKS[key] = fd
        if self.complete and not redo:
            self.release()
            return False
        for left in self.path.glob(".*.tmp"):  # ours to remove: we hold the lock
            shutil.rmtree(left, ignore_errors=True) if left.is_dir() else left.unlink(missing_ok=True)
        (self.path / SUCCESS).unlink(missing_ok=True)
        return True

    def release(self) -> None:
        fd = _LOCKS.pop(str(self.path), None)
        if fd is not None:
            os.close(fd)  # closing the last descriptor releases the flock

    def finish(self, resolved_config: dict, upstream: dict[str, str], extra: dict | None = None) -> None:
        """Write ``config.json`` (with each artifact's size and sha256) and then the ``_SUCCESS``
        marker, last; release the claim taken by :meth:`begin`."""
        meta = {"stage": self.stage, "key": self.key, "config": resolved_config,
                "upstream": upstream, "versions": package_versions(), **(extra or {}),
                "artifacts": artifact_record(self.path)}
        atomic_write_json(self.file("config.json"), meta)
        atomic_write_text(self.file(SUCCESS), "")
        self.release()

    def tidy(self, *leftovers: str) -> None:
        """Remove scratch entries (e.g. embedding shards) a run killed after ``_SUCCESS`` left behind."""
        for name in leftovers:
            p = self.path / name
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            elif p.exists():
                p.unlink(missing_ok=True)

    def read_meta(self) -> dict:
        f = self.file("config.json")
        try:
            meta = json.loads(f.read_text())
        except FileNotFoundError:
            raise InputError(f"{f} is missing: {self.fix}") from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise InputError(f"{f} is corrupt (not JSON): {self.fix}") from None
        if not isinstance(meta, dict):
            raise InputError(f"{f} is corrupt (not a JSON object): {self.fix}")
        return meta


def verify_all(cache_dir: Path) -> tuple[int, list[str]]:
    """Hash every artifact of every finished result under ``cache_dir``: (number that match, one
    message per corrupt result)."""
    n_ok, bad = 0, []
    for d in sorted(p for p in Path(cache_dir).iterdir() if (p / SUCCESS).is_file()):
        stage, _, key = d.name.rpartition("-")
        try:
            StageDir(stage, key, d).verify(full=True)
            n_ok += 1
        except InputError as e:
            bad.append(str(e))
    return n_ok, bad


def copy_results(sd: StageDir, out: Path, suffixes: tuple[str, ...] = (".json", ".npz", ".png")) -> Path:
    """Copy a finished stage's result files with these suffixes to the human-facing folder ``out``,
    published as a whole (:func:`publish_dir`); returns ``out``."""
    def build(tmp: Path) -> None:
        for f in sorted(sd.path.iterdir()):
            if f.is_file() and f.suffix in suffixes and not f.name.startswith("."):
                shutil.copyfile(f, tmp / f.name)

    return publish_dir(out, build)


def file_fingerprint(path: Path) -> str:
    """sha256 of a file's bytes (for user inputs whose content decides a stage's result)."""
    return sha256_file(path)


def tree_fingerprint(root: Path, suffixes: tuple[str, ...]) -> str:
    """sha256 over relative paths and bytes of the files under ``root`` with these suffixes."""
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file() and q.suffix.lower() in suffixes):
        h.update(str(p.relative_to(root)).encode())
        h.update(file_fingerprint(p).encode())
    return h.hexdigest()
