"""Checks of path arguments (command-line options and config fields) before anything is read or
written: a file where a folder is expected, or a folder where a file is, is a one-line error naming
the option and the fix, never a traceback half-way through a stage."""

from __future__ import annotations

from pathlib import Path

from corpus_proximity.errors import InputError


def input_file(path: str | Path, what: str) -> Path:
    """``path`` must be an existing file (``what``: the option or field, e.g. ``--results``)."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise InputError(f"{what}: {p} is a directory; give a file")
    if not p.is_file():
        raise InputError(f"{what}: {p} does not exist")
    return p


def input_dir(path: str | Path, what: str) -> Path:
    """``path`` must be an existing folder."""
    p = Path(path).expanduser()
    if p.is_file():
        raise InputError(f"{what}: {p} is a file; give a folder")
    if not p.is_dir():
        raise InputError(f"{what}: {p} does not exist")
    return p


def output_file(path: str | Path, what: str) -> Path:
    """``path`` will be written as a file: it must not be a folder, nor lie under a file."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise InputError(f"{what}: {p} is a directory; give a file name (e.g. {p / 'out'}{p.suffix or ''})")
    _no_file_above(p, what)
    return p


def output_dir(path: str | Path, what: str) -> Path:
    """``path`` will be (created and) written as a folder: it must not be a file, nor lie under one."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise InputError(f"{what}: {p} is a file; give a folder")
    _no_file_above(p, what)
    return p


def _no_file_above(p: Path, what: str) -> None:
    for parent in p.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{what}: {parent} is a file, so {p} cannot be created; give another path")
            return
