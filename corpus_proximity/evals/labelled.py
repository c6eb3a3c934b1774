"""Labelled corpora with a true 2-level hierarchy (coarse, fine), to judge a tree against
(``bench/quality.py``).

Each loader returns a :class:`Labelled` (vectors, coarse and fine labels, texts) and prints its
sizes and label counts. Real corpora are chunked and embedded with the default model through the
stage cache (chunking → embedding), so only the first run pays for the model; a chunk
carries its document's labels.

- ``default``: the embedded default corpus (BBC News + Python stdlib docstrings); coarse = source
  (bbc-news / python-docs), fine = BBC section or stdlib package.
- ``pylibs``: docstrings of installed scientific Python libraries (read with ``ast``, nothing
  imported); coarse = library (scipy, sklearn, pandas, torch), fine = its top-level subpackage.
  Offline by construction: the text is the source of packages every install of ours has.
  Like the python-docs half of ``default`` it is technical prose, so it is the harder corpus.
- ``pywide``: the same kind of docstrings from :data:`PYWIDE`'s 13 installed libraries; coarse =
  library, fine = its largest top-level subpackages (found on disk, at most ``PYWIDE_SUBS`` each).
  Many top-level themes, none of which any setting was tuned on.
- ``debian``: one-line Debian package descriptions from the apt cache (``apt-cache dumpavail``,
  offline: the lists every Debian image carries); coarse = archive section (:data:`DEBIAN_SECTIONS`),
  fine = section plus the package's first Debtags tag of a descriptive facet (:data:`DEBTAG_FACETS`).
- ``synthetic``: :func:`planted_hierarchy` unit-sphere blobs (also the tests' planted data).
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from corpus_proximity.cache import atomic_write_text
from corpus_proximity.config import ExperimentConfig, load_config
from corpus_proximity.text import chunking, embedding
from corpus_proximity.text.corpus import file_docstrings

# (library, its subpackages used as fine labels); ``*_tests`` folders are skipped.
PYLIBS = {
    "scipy": ("stats", "linalg", "optimize", "signal", "sparse", "interpolate"),
    "sklearn": ("linear_model", "ensemble", "metrics", "cluster", "decomposition", "feature_extraction"),
    "pandas": ("core", "io", "plotting", "tseries"),
    "torch": ("nn", "optim", "distributions", "fx", "onnx"),
}

# 13 libraries every install of ours (with the bench extra) carries: coarse = library.
PYWIDE = ("scipy", "sklearn", "pandas", "torch", "numpy", "matplotlib", "transformers", "sympy", "networkx",
          "plotly", "pyarrow", "streamlit", "numba")
PYWIDE_SUBS = 5
"""Fine labels per library: its largest top-level subpackages (by docstring count)."""
# Sections whose packages describe what they do (not lib*/*-dev/python3-* naming conventions).
DEBIAN_SECTIONS = ("games", "science", "sound", "graphics", "mail", "math", "editors", "database", "video",
                   "hamradio", "electronics", "web", "text", "net", "admin", "fonts")
DEBTAG_FACETS = ("game", "field", "use", "works-with", "works-with-format", "network", "interface")


@dataclass
class Labelled:
    name: str
    X: np.ndarray
    coarse: np.ndarray
    fine: np.ndarray
    texts: list[str] | None  # None for synthetic vectors
    clustering: object  # the ClusteringConfig the corpus is clustered with by default

    def describe(self) -> str:
        def counts(labels):
            return ", ".join(f"{k}: {v}" for k, v in sorted(Counter(labels.tolist()).items()))
        return (f"{self.name}: {len(self.X)} points × {self.X.shape[1]}; coarse {len(set(self.coarse.tolist()))} "
                f"({counts(self.coarse)}); fine {len(set(self.fine.tolist()))} ({counts(self.fine)})")


def _absolute_cache(cfg: ExperimentConfig) -> ExperimentConfig:
    return dataclasses.replace(cfg, cache_dir=str(Path(cfg.cache_dir).resolve()),
                               output_dir=str(Path(cfg.output_dir).resolve()))


def embedded(cfg: ExperimentConfig, name: str, coarse_key: str, fine_key: str) -> Labelled:
    """Chunk + embed ``cfg``'s corpus through the stage cache; labels from each chunk's metadata."""
    cfg = _absolute_cache(cfg)
    sd = embedding.run_embedding(cfg)
    X = embedding.load_embeddings(sd)
    table = chunking.read_chunks(chunking.stage_dir(cfg), ["text", "metadata"]).to_pydict()
    meta = [json.loads(m) for m in table["metadata"]]
    coarse = np.array([m[coarse_key] for m in meta])
    fine = np.array([f"{m[coarse_key]}/{m[fine_key]}" for m in meta])
    return Labelled(name, np.asarray(X), coarse, fine, table["text"], cfg.clustering)


def load_default(config_path: str) -> Labelled:
    cfg = load_config(config_path)
    return embedded(cfg, f"default:{cfg.name}", "source", "topic")


def _subpackage_docs(base: Path, lib: str, sub: str, min_chars: int) -> list[dict]:
    """Docstring records of one subpackage of an installed library (test modules skipped)."""
    found = []
    for f in sorted((base / sub).rglob("*.py")):
        rel = f.relative_to(base.parent)
        if any(p.startswith("test") or p.endswith("_tests") for p in rel.parts):
            continue
        module = ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
        found += [{"id": f"{lib}/{qualname}", "text": f"{qualname}\n\n{doc}", "library": lib,
                   "subpackage": sub} for qualname, _, doc in file_docstrings(f, module, min_chars)]
    return found


def pylibs_docs(per_fine: int, min_chars: int = 200, seed: int = 0) -> list[dict]:
    """Module/class/function docstrings of PYLIBS, at most ``per_fine`` per subpackage (seeded)."""
    import importlib.util

    rng = np.random.default_rng(seed)
    docs = []
    for lib, subs in PYLIBS.items():
        spec = importlib.util.find_spec(lib)
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit(f"quality: the pylibs corpus needs {lib} installed")
        base = Path(list(spec.submodule_search_locations)[0])
        for sub in subs:
            found = _subpackage_docs(base, lib, sub, min_chars)
            if len(found) > per_fine:
                found = [found[i] for i in np.sort(rng.choice(len(found), per_fine, replace=False))]
            docs += found
    # the same qualname can be documented twice (overloads, if/else definitions): keep the first
    seen, unique = set(), []
    for d in docs:
        if d["id"] not in seen:
            seen.add(d["id"])
            unique.append(d)
    return unique


def load_pylibs(per_fine: int, base: ExperimentConfig) -> Labelled:
    """Writes the docs to data/cache/bench-corpora/ (its sha256 keys the stage cache), then embeds."""
    docs = pylibs_docs(per_fine)
    path = Path(base.cache_dir).resolve() / "bench-corpora" / f"pylibs-{per_fine}.jsonl"
    body = "".join(json.dumps(d) + "\n" for d in docs)
    if not path.is_file() or path.read_text() != body:
        atomic_write_text(path, body)
    cfg = dataclasses.replace(base, name=f"pylibs-{per_fine}",
                              corpus=dataclasses.replace(base.corpus, path=str(path)))
    return embedded(cfg, f"pylibs:{per_fine}/sub", "library", "subpackage")


def _library_docs(lib: str, min_chars: int) -> dict[str, list[dict]]:
    """Docstrings of one installed library per top-level subpackage (``*_tests``/``test*`` skipped)."""
    import importlib.util

    spec = importlib.util.find_spec(lib)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"quality: the pywide corpus needs {lib} installed (pip install -e '.[bench]')")
    base = Path(list(spec.submodule_search_locations)[0])
    by_sub: dict[str, list[dict]] = {}
    for sub in sorted(p.name for p in base.iterdir() if (p / "__init__.py").is_file()):
        if sub.startswith(("test", "_")) or sub.endswith("_tests"):
            continue
        found = _subpackage_docs(base, lib, sub, min_chars)
        by_sub[sub] = found
    return by_sub


def pywide_docs(per_fine: int, min_chars: int = 200, seed: int = 0) -> list[dict]:
    """Docstrings of :data:`PYWIDE`: per library its ``PYWIDE_SUBS`` largest subpackages holding at
    least 20 docstrings, at most ``per_fine`` docstrings each (seeded sample)."""
    rng = np.random.default_rng(seed)
    docs, seen = [], set()
    for lib in PYWIDE:
        by_sub = {s: d for s, d in _library_docs(lib, min_chars).items() if len(d) >= 20}
        for sub in sorted(by_sub, key=lambda s: (-len(by_sub[s]), s))[:PYWIDE_SUBS]:
            found = by_sub[sub]
            if len(found) > per_fine:
                found = [found[i] for i in np.sort(rng.choice(len(found), per_fine, replace=False))]
            for d in found:
                if d["id"] not in seen:
                    seen.add(d["id"])
                    docs.append(d)
    return docs


def debian_docs(per_fine: int, min_fine: int = 20, seed: int = 0) -> list[dict]:
    """Short descriptions of the apt cache's packages in :data:`DEBIAN_SECTIONS`, fine label = section
    plus first tag of a :data:`DEBTAG_FACETS` facet; fine classes below ``min_fine`` packages dropped,
    at most ``per_fine`` per fine class (seeded sample). Duplicate descriptions are kept once."""
    import subprocess

    try:
        dump = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise SystemExit(f"quality: the debian corpus needs apt-cache with package lists ({e})") from None
    by_fine: dict[str, list[dict]] = {}
    seen = set()
    for para in dump.split("\n\n"):
        fields, last = {}, None
        for line in para.splitlines():
            if line[:1] in (" ", "\t") and last:
                fields[last] += " " + line.strip()
            elif ":" in line:
                last, _, value = line.partition(":")
                fields[last] = value.strip()
        section = fields.get("Section", "").split("/")[-1]
        desc = fields.get("Description", "")
        if section not in DEBIAN_SECTIONS or len(desc) < 15 or desc.lower() in seen:
            continue
        tags = [t.strip() for t in fields.get("Tag", "").split(",") if "::" in t]
        tag = next((t for f in DEBTAG_FACETS for t in tags if t.split("::")[0] == f), None)
        if tag is None:
            continue
        seen.add(desc.lower())
        by_fine.setdefault(f"{section}|{tag}", []).append(
            {"id": f"deb/{fields['Package']}", "text": desc, "section": section, "tag": tag})
    rng = np.random.default_rng(seed)
    docs = []
    for key in sorted(by_fine):
        found = by_fine[key]
        if len(found) < min_fine:
            continue
        if len(found) > per_fine:
            found = [found[i] for i in np.sort(rng.choice(len(found), per_fine, replace=False))]
        docs += found
    return docs


def _load_written(name: str, docs: list[dict], base: ExperimentConfig, coarse: str, fine: str) -> Labelled:
    path = Path(base.cache_dir).resolve() / "bench-corpora" / f"{name}.jsonl"
    body = "".join(json.dumps(d) + "\n" for d in docs)
    if not path.is_file() or path.read_text() != body:
        atomic_write_text(path, body)
    # one chunk per document (the model reads its first 256 tokens): a document's labels are its chunk's
    cfg = dataclasses.replace(base, name=name, corpus=dataclasses.replace(base.corpus, path=str(path)),
                              chunking=dataclasses.replace(base.chunking, strategy="none"))
    return embedded(cfg, name, coarse, fine)


def load_pywide(per_fine: int, base: ExperimentConfig) -> Labelled:
    """The scan of 13 libraries' sources takes a minute or more: reused while their versions hold."""
    from importlib.metadata import PackageNotFoundError, version

    def ver(lib):
        try:
            return version({"sklearn": "scikit-learn", "PIL": "pillow"}.get(lib, lib))
        except PackageNotFoundError:
            return None
    name = f"pywide-{per_fine}"
    path = Path(base.cache_dir).resolve() / "bench-corpora" / f"{name}.jsonl"
    stamp = path.with_suffix(".versions.json")
    versions = json.dumps({lib: ver(lib) for lib in PYWIDE}, sort_keys=True)
    if path.is_file() and stamp.is_file() and stamp.read_text() == versions:
        docs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    else:
        docs = pywide_docs(per_fine)
    out = _load_written(name, docs, base, "library", "subpackage")
    if not stamp.is_file() or stamp.read_text() != versions:
        atomic_write_text(stamp, versions)
    return out


def load_debian(per_fine: int, base: ExperimentConfig) -> Labelled:
    return _load_written(f"debian-{per_fine}", debian_docs(per_fine), base, "section", "tag")


def planted_hierarchy(n_coarse=4, n_fine=3, per_fine=50, dim=24, coarse_sep=1.0, fine_sep=0.35,
                      spread=0.05, seed=0):
    """Unit-sphere blobs: ``n_coarse`` regions, each holding ``n_fine`` tighter sub-blobs.

    Returns (X float32 n×dim, coarse labels, fine labels)."""
    rng = np.random.default_rng(seed)
    coarse_c = rng.normal(size=(n_coarse, dim))
    coarse_c /= np.linalg.norm(coarse_c, axis=1, keepdims=True)
    xs, yc, yf = [], [], []
    for c in range(n_coarse):
        for f in range(n_fine):
            off = rng.normal(size=dim)
            centre = coarse_sep * coarse_c[c] + fine_sep * off / np.linalg.norm(off)
            xs.append(centre + spread * rng.normal(size=(per_fine, dim)))
            yc += [c] * per_fine
            yf += [c * n_fine + f] * per_fine
    X = np.concatenate(xs)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X.astype(np.float32), np.array(yc), np.array(yf)


def load_synthetic(per_fine: int, clustering) -> Labelled:
    X, coarse, fine = planted_hierarchy(n_coarse=6, n_fine=5, per_fine=per_fine, dim=32, spread=0.04, seed=0)
    return Labelled(f"synthetic:{len(X)}", X, coarse, fine, None, clustering)
