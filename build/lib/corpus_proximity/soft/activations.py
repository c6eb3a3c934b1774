"""Token-activation chunk files: the format, validated streaming reads, and PCA whitening.

A chunk file is an uncompressed NPZ holding

* ``activations``    float16/float32 ``[n_seq, seq_len, d]``: one hidden state per token;
* ``attention_mask`` ``[n_seq, seq_len]``: nonzero where a real token sits (padding is 0);
* ``token_ids``      int ``[n_seq, seq_len]``: the token at each position;
* ``sequence_ids``   (optional) str ``[n_seq]``: where each sequence came from (a chunk id).

Activations are far larger than memory, so they are never loaded whole: :meth:`NpzChunk.blocks`
streams them a few sequences at a time straight out of the zip member (stored or deflated); only
the mask and token ids (a few bytes per position) are held. Every problem with a file (a missing
key, a shape that does not agree, an empty chunk, NaNs) is an :class:`InputError` naming the file.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Protocol

import numpy as np

from corpus_proximity.cache import atomic_writer
from corpus_proximity.errors import InputError

REQUIRED_KEYS = ("activations", "attention_mask", "token_ids")
FLOAT_TYPES = (np.dtype(np.float16), np.dtype(np.float32))


class ActivationChunk(Protocol):
    """One chunk of sequences: small per-position arrays held, activations streamed in blocks."""

    name: str
    n_seq: int
    seq_len: int
    dim: int
    dtype: np.dtype
    attention_mask: np.ndarray  # bool [n_seq, seq_len]
    token_ids: np.ndarray  # int32 [n_seq, seq_len]
    sequence_ids: np.ndarray | None  # str [n_seq]

    def blocks(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(lo, activations[lo:lo + rows])`` in order, each ``[<=rows, seq_len, d]``
        (unchecked: readers check the positions they use with :func:`check_finite`)."""
        ...


class ChunkSource(Protocol):
    """An ordered collection of chunks that can be opened one at a time, any number of times."""

    def __len__(self) -> int: ...

    def open(self, i: int) -> ActivationChunk: ...


def _validate(name: str, shape: tuple, dtype: np.dtype, mask: np.ndarray, tokens: np.ndarray,
              seq_ids: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    if len(shape) != 3:
        raise InputError(f"{name}: activations must be [n_seq, seq_len, d], got shape {tuple(shape)}")
    if dtype not in FLOAT_TYPES:
        raise InputError(f"{name}: activations must be float16 or float32, got {dtype}")
    n_seq, seq_len, dim = shape
    for key, arr in (("attention_mask", mask), ("token_ids", tokens)):
        if arr.shape != (n_seq, seq_len):
            raise InputError(f"{name}: {key} has shape {arr.shape}, expected {(n_seq, seq_len)} "
                             f"to match activations {tuple(shape)}")
    if seq_ids is not None and seq_ids.shape != (n_seq,):
        raise InputError(f"{name}: sequence_ids has shape {seq_ids.shape}, expected ({n_seq},)")
    if not np.issubdtype(tokens.dtype, np.integer):
        raise InputError(f"{name}: token_ids must be integers, got {tokens.dtype}")
    if n_seq == 0 or seq_len == 0 or dim == 0:
        raise InputError(f"{name}: empty chunk (activations shape {tuple(shape)})")
    mask = mask.astype(bool)
    if not mask.any():
        raise InputError(f"{name}: empty chunk (every position is masked out)")
    if len(tokens) and tokens.min() < 0 and (tokens[mask] < 0).any():  # padding may hold -1 / -100
        s, p = (int(v[0]) for v in np.nonzero(mask & (tokens < 0)))
        raise InputError(f"{name}: token_ids must be >= 0 where attention_mask is set; sequence {s}, position {p} "
                         f"holds {int(tokens[s, p])} (mask such positions out)")
    return mask, tokens.astype(np.int32, copy=False)


def check_finite(name: str, flat: np.ndarray, sq_norms: np.ndarray, seq_len: int) -> None:
    """Raise if a read position (flat index ``seq * seq_len + pos``) holds NaN/inf, seen in its
    squared norm (NaN and inf propagate into it; the readers compute it anyway, so this is free).
    Only positions that are read are checked: padding may hold anything."""
    bad = ~np.isfinite(sq_norms)
    if bad.any():
        first = int(flat[np.argmax(bad)])
        raise InputError(f"{name}: activations contain NaN/inf at {int(bad.sum())} unmasked positions "
                         f"(first: sequence {first // seq_len}, position {first % seq_len}); fix or drop this file")


def _read_header(f) -> tuple[tuple, bool, np.dtype]:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)
    return np.lib.format.read_array_header_2_0(f)


class NpzChunk:
    """A chunk file on disk; opening it reads headers, mask and token ids, not the activations."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.name = str(self.path)
        try:
            zf = zipfile.ZipFile(self.path)
        except (OSError, zipfile.BadZipFile) as e:
            raise InputError(f"{self.name}: not a readable NPZ file ({type(e).__name__}: {e})") from None
        with zf:
            members = {m[:-4]: m for m in zf.namelist() if m.endswith(".npy")}
            missing = [k for k in REQUIRED_KEYS if k not in members]
            if missing:
                raise InputError(f"{self.name}: missing key(s) {', '.join(missing)} "
                                 f"(has: {', '.join(sorted(members)) or 'nothing'})")
            with zf.open(members["activations"]) as f:
                shape, fortran, dtype = _read_header(f)
            if fortran:
                raise InputError(f"{self.name}: activations are Fortran-ordered; save a C-ordered array")
        with np.load(self.path, allow_pickle=False) as z:
            mask, tokens = z["attention_mask"], z["token_ids"]
            seq_ids = z["sequence_ids"] if "sequence_ids" in members else None
        self.attention_mask, self.token_ids = _validate(self.name, shape, dtype, mask, tokens, seq_ids)
        self.sequence_ids = seq_ids
        self.n_seq, self.seq_len, self.dim = (int(x) for x in shape)
        self.dtype = dtype
        self._member = members["activations"]

    def blocks(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        per_seq = self.seq_len * self.dim * self.dtype.itemsize
        with zipfile.ZipFile(self.path) as zf, zf.open(self._member) as f:
            _read_header(f)
            for lo in range(0, self.n_seq, rows):
                n = min(rows, self.n_seq - lo)
                buf = f.read(n * per_seq)
                if len(buf) != n * per_seq:
                    raise InputError(f"{self.name}: activations end early (truncated file?)")
                yield lo, np.frombuffer(buf, dtype=self.dtype).reshape(n, self.seq_len, self.dim)


class ArrayChunk:
    """A chunk held in memory (tests, benchmarks, activations generated on the fly)."""

    def __init__(self, name: str, activations: np.ndarray, attention_mask: np.ndarray, token_ids: np.ndarray,
                 sequence_ids: np.ndarray | None = None):
        self.name = name
        self.attention_mask, self.token_ids = _validate(name, activations.shape, activations.dtype,
                                                        np.asarray(attention_mask), np.asarray(token_ids),
                                                        sequence_ids)
        self.activations = activations
        self.sequence_ids = sequence_ids
        self.n_seq, self.seq_len, self.dim = activations.shape
        self.dtype = activations.dtype

    def blocks(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        for lo in range(0, self.n_seq, rows):
            yield lo, self.activations[lo:lo + rows]


class FileSource:
    """Chunk files in a fixed order (e.g. ``sorted(dir.glob('chunk-*.npz'))``)."""

    def __init__(self, paths: list[Path]):
        if not paths:
            raise InputError("no activation chunk files to read")
        self.paths = [Path(p) for p in paths]

    @classmethod
    def from_dir(cls, directory: str | Path) -> "FileSource":
        paths = sorted(Path(directory).glob("chunk-*.npz"))
        if not paths:
            raise InputError(f"{directory}: no chunk-*.npz activation files")
        return cls(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def open(self, i: int) -> NpzChunk:
        return NpzChunk(self.paths[i])


class GeneratedSource:
    """``n`` chunks made by ``make(i)`` each time they are opened: nothing is stored."""

    def __init__(self, n: int, make: Callable[[int], ArrayChunk]):
        self.n, self.make = n, make

    def __len__(self) -> int:
        return self.n

    def open(self, i: int) -> ArrayChunk:
        return self.make(i)


def write_chunk(path: Path, activations: np.ndarray, attention_mask: np.ndarray, token_ids: np.ndarray,
                sequence_ids: list[str] | None = None) -> None:
    """Write one chunk file atomically (uncompressed, so it streams without inflating)."""
    arrays = {"activations": activations, "attention_mask": attention_mask.astype(np.uint8),
              "token_ids": token_ids.astype(np.int32)}
    if sequence_ids is not None:
        arrays["sequence_ids"] = np.asarray(sequence_ids, dtype=str)

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_writer(path, save)


# --- PCA whitening ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Whitening:
    """x -> ((x - mean) @ components.T) * scale: decorrelated, unit variance per component."""

    mean: np.ndarray  # [d]
    components: np.ndarray  # [c, d], rows = principal directions, largest variance first
    scale: np.ndarray  # [c] = 1 / sqrt(eigenvalue + eps * largest eigenvalue)
    eigenvalues: np.ndarray  # [c]

    def apply(self, x: np.ndarray) -> np.ndarray:
        w = (self.components * self.scale[:, None]).astype(np.float32)
        return (np.asarray(x, dtype=np.float32) - self.mean.astype(np.float32)) @ w.T

    def steering(self, v: np.ndarray) -> np.ndarray:
        """Rows of ``v`` (whitened coordinates) as displacements in the model's coordinates: the
        smallest dx with apply(x + dx) - apply(x) = v, i.e. (v / scale) @ components. What to add to
        a hidden state to move its whitened image along v."""
        return (np.asarray(v, dtype=np.float64) / self.scale) @ self.components

    def readout(self, v: np.ndarray) -> np.ndarray:
        """Rows of ``v`` as linear readouts in the model's coordinates: v . apply(x) =
        readout(v) . x + constant, i.e. (v * scale) @ components. What a linear probe reads."""
        return (np.asarray(v, dtype=np.float64) * self.scale) @ self.components

    def save(self, path: Path) -> None:
        def save(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, mean=self.mean, components=self.components, scale=self.scale,
                         eigenvalues=self.eigenvalues)
        atomic_writer(path, save)

    @classmethod
    def load(cls, path: Path) -> "Whitening":
        with np.load(path) as z:
            return cls(z["mean"], z["components"], z["scale"], z["eigenvalues"])


def fit_whitening(x: np.ndarray, n_components: int | None = None, eps: float = 1e-3) -> Whitening:
    """PCA whitening fitted on the rows of ``x`` (a capped sample of token positions)."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) < 2:
        raise InputError("whitening needs at least 2 positions to fit on")
    mean = x.mean(axis=0)
    xc = x - mean
    cov = xc.T @ xc / (len(x) - 1)
    vals, vecs = np.linalg.eigh(cov)
    order = np.argsort(vals)[::-1]
    vals, vecs = np.clip(vals[order], 0, None), vecs[:, order]
    c = min(n_components or x.shape[1], x.shape[1])
    scale = 1.0 / np.sqrt(vals[:c] + eps * max(vals[0], 1e-12))
    return Whitening(mean, vecs[:, :c].T.copy(), scale, vals[:c])
