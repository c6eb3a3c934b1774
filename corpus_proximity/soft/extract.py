"""The activations stage: per-token hidden states of a transformers model over the corpus chunks, as NPZ chunk files.

Writes ``data/cache/activations-<key>/chunks/chunk-XXXXX.npz`` (``activations [n_seq, seq_len, d]``
float16/32, ``attention_mask``, ``token_ids``, ``sequence_ids`` = chunk ids; format in
:mod:`corpus_proximity.soft.activations`) and, with ``activations.whiten``, ``whitening.npz`` (PCA whitening fitted on a
capped sample of positions, applied to every file). The default model is the transformer inside
the packaged offline embedding model; ``activations.layer`` picks the hidden state. Files are
written one at a time and renamed into place, so a killed run resumes from the last finished file.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from corpus_proximity import cli
from corpus_proximity.cache import StageDir, stage_key
from corpus_proximity.config import ExperimentConfig, semantic_dict, to_dict
from corpus_proximity.errors import InputError
from corpus_proximity.soft.activations import FileSource, NpzChunk, Whitening, fit_whitening, write_chunk
from corpus_proximity.text import chunking
from corpus_proximity.text.embedders import resolve_model_dir

STAGE = "activations"
STAGE_VERSION = 1


def model_name(cfg: ExperimentConfig) -> str:
    return cfg.activations.model or cfg.embedding.model


def stage_dir(cfg: ExperimentConfig, chunks: StageDir | None = None) -> StageDir:
    chunks = chunks or chunking.stage_dir(cfg)
    sem = {**semantic_dict(cfg.activations), "model": model_name(cfg)}
    return StageDir.for_key(cfg.cache_dir, STAGE, stage_key(STAGE, STAGE_VERSION, sem, {"chunks": chunks.key}))


def select_chunks(n: int, max_chunks: int | None, seed: int) -> np.ndarray:
    """Indices of the chunks used: all, or a seeded sample of ``max_chunks`` kept in corpus order."""
    if max_chunks is None or max_chunks >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_chunks, replace=False))


class HiddenStates:
    """A transformers encoder returning one layer's hidden states, padded to a fixed length."""

    def __init__(self, name: str, layer: int, max_len: int, device: str | None):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.dir = resolve_model_dir(name)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.dir), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(self.dir), local_files_only=True).to(device or "cpu").eval()
        self.device, self.layer, self.max_len, self.torch = device or "cpu", layer, max_len, torch
        n_states = self.model.config.num_hidden_layers + 1
        if not -n_states <= layer < n_states:
            raise InputError(f"activations.layer={layer}: {name} has hidden states 0..{n_states - 1} "
                             f"(0 = embeddings, -1 = last layer)")
        self.special_ids = sorted(int(i) for i in self.tokenizer.all_special_ids)

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        enc = self.tokenizer(texts, padding="max_length", truncation=True, max_length=self.max_len,
                             return_tensors="pt")
        with self.torch.inference_mode():
            out = self.model(**{k: v.to(self.device) for k, v in enc.items()}, output_hidden_states=True)
        hs = out.hidden_states[self.layer].float().cpu().numpy()
        return hs, enc["attention_mask"].numpy().astype(bool), enc["input_ids"].numpy().astype(np.int32)


def _batches(texts: list[str], size: int):
    for lo in range(0, len(texts), size):
        yield lo, texts[lo:lo + size]


def _fit_whitening(enc: HiddenStates, texts: list[str], cfg: ExperimentConfig, log) -> Whitening:
    a = cfg.activations
    order = np.random.default_rng([a.seed, 1]).permutation(len(texts))
    parts, have = [], 0
    for lo in range(0, len(order), a.batch_size):
        hs, mask, ids = enc([texts[i] for i in order[lo:lo + a.batch_size]])
        keep = mask & ~np.isin(ids, enc.special_ids)
        parts.append(hs[keep])
        have += int(keep.sum())
        if have >= a.whiten_sample:
            break
    x = np.concatenate(parts)
    if len(x) > a.whiten_sample:
        x = x[np.sort(np.random.default_rng([a.seed, 2]).choice(len(x), a.whiten_sample, replace=False))]
    log.print(f"activations: PCA whitening fitted on {len(x)} positions")
    return fit_whitening(x, a.whiten_components, a.whiten_eps)


def run_extraction(cfg: ExperimentConfig, log=cli.console) -> StageDir:
    """Produce (or reuse) the activation chunk files of this config."""
    chunks = chunking.run_chunking(cfg, log)
    sd = stage_dir(cfg, chunks)
    if sd.complete:
        log.print(f"[green]activations: cache hit[/green] {sd.path}")
        return sd
    a = cfg.activations
    table = chunking.read_chunks(chunks, ["chunk_id", "text"])
    pick = select_chunks(table.num_rows, a.max_chunks, a.seed)
    texts = [table.column("text")[int(i)].as_py() for i in pick]
    ids = [table.column("chunk_id")[int(i)].as_py() for i in pick]
    enc = HiddenStates(model_name(cfg), a.layer, a.max_seq_length, a.device)
    log.print(f"activations: {len(texts)} chunks × {a.max_seq_length} tokens, layer {a.layer} of "
              f"{model_name(cfg)} → {sd.path}")
    if not sd.begin():  # a concurrent run of this config finished it meanwhile
        return sd
    whitening = None
    if a.whiten:
        wpath = sd.file("whitening.npz")
        whitening = Whitening.load(wpath) if wpath.is_file() else _fit_whitening(enc, texts, cfg, log)
        whitening.save(wpath)
    spf = a.sequences_per_file
    n_files = math.ceil(len(texts) / spf)
    paths = [sd.file("chunks") / f"chunk-{f:05d}.npz" for f in range(n_files)]
    dtype = np.float16 if a.dtype == "float16" else np.float32
    with cli.progress_bar() as progress:
        task = progress.add_task("activations", total=len(texts), rate="")
        for f, path in enumerate(paths):
            lo, hi = f * spf, min(len(texts), (f + 1) * spf)
            if _valid_file(path, hi - lo):
                progress.update(task, advance=hi - lo)
                continue
            acts, masks, toks = [], [], []
            for _, batch in _batches(texts[lo:hi], a.batch_size):
                hs, mask, tok = enc(batch)
                if whitening is not None:
                    hs = whitening.apply(hs.reshape(-1, hs.shape[-1])).reshape(*hs.shape[:2], -1)
                acts.append(hs.astype(dtype)), masks.append(mask), toks.append(tok)
                progress.update(task, advance=len(batch))
            write_chunk(path, np.concatenate(acts), np.concatenate(masks), np.concatenate(toks), ids[lo:hi])
    src = FileSource(paths)
    first = src.open(0)
    n_positions = sum(int(src.open(i).attention_mask.sum()) for i in range(len(src)))
    sd.finish({"activations": to_dict(a), "model": model_name(cfg)}, {"chunks": chunks.key},
              {"n_files": n_files, "n_sequences": len(texts), "n_positions": n_positions, "dim": first.dim,
               "seq_len": first.seq_len, "model_dir": str(enc.dir), "special_token_ids": enc.special_ids,
               "whitened": whitening is not None})
    log.print(f"activations: {n_files} files, {len(texts)} sequences, {n_positions} tokens, d={first.dim}")
    return sd


def _valid_file(path: Path, n_seq: int) -> bool:
    if not path.is_file():
        return False
    try:
        return NpzChunk(path).n_seq == n_seq
    except InputError:
        return False


def token_decoder(meta: dict):
    """ids -> token strings with the extraction model's tokenizer (-1, i.e. no token, -> '')."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(meta["model_dir"], local_files_only=True)

    def decode(ids: list[int]) -> list[str]:
        return ["" if i < 0 else t for i, t in zip(ids, tok.convert_ids_to_tokens([max(i, 0) for i in ids]))]
    return decode
