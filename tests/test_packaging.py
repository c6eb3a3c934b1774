"""The installable package: a wheel built from the repository holds every module of
``corpus_proximity`` (and the kernels' README), nothing else at the top level, and imports from
outside the repository. The module list is found, never hand-kept, so it cannot drift again."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "corpus_proximity"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # build from a copy of the tracked files: setuptools leaves build/ in its source tree, and a stale
    # build/lib there would be packed into the next wheel (deleted modules included)
    src = tmp_path_factory.mktemp("src")
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           check=True, capture_output=True, text=True).stdout.split("\0")
    for rel in filter(None, files):
        if (ROOT / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
    # the build backend is in the test environment already (setuptools): no download, no isolation
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(out), str(src)], check=True, cwd=out, capture_output=True)
    (whl,) = out.glob("corpus_proximity-*.whl")
    return whl


def test_the_wheel_holds_every_module_of_the_package_and_nothing_else(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    on_disk = {p.relative_to(ROOT).as_posix() for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts}
    assert len(on_disk) > 50
    assert on_disk - names == set()  # every module ships
    assert "corpus_proximity/soft/kernels/README.md" in names
    top = {n.split("/")[0] for n in names if not n.startswith("corpus_proximity-")}
    assert top == {"corpus_proximity"}  # no stage script, test or generic top-level name (config, cli, ...)


def test_every_module_imports_from_an_installed_copy_outside_the_repository(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site),
                    str(wheel)], check=True, capture_output=True)
    modules = sorted(".".join(p.relative_to(site).with_suffix("").parts).removesuffix(".__init__")
                     for p in (site / "corpus_proximity").rglob("*.py"))
    # a fresh interpreter in an empty folder, the installed copy first on its path (ahead of the
    # editable install of the development environment): every module must come from there
    code = ("import importlib\n"
            f"for m in {modules!r}:\n"
            "    mod = importlib.import_module(m)\n"
            f"    assert mod.__file__.startswith({str(site)!r}), (m, mod.__file__)\n")
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
