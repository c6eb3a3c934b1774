"""Streaming soft clustering of token activations (a von Mises-Fisher mixture on the sphere).

:class:`SequentialSoftClustering` stores its settings and delegates to the streaming passes in
:mod:`corpus_proximity.soft.stream` (phase 1: online centres; phase 2: sparse memberships and per-cluster
statistics), then computes the intervention vectors. With an output directory it writes

* ``memberships/chunk-XXXXX.npz``: ``indices [nnz, 3]`` (sequence, position, cluster), ``values``,
  ``tokens [n_seq, seq_len]``, ``valid``, ``meta`` (JSON), ``sequence_ids``;
* ``centres.npz``: centres, intervention vectors and their statistics, usage, position histograms,
  the phase-1 history; with whitened activations also the vectors in the model's coordinates
  (``intervention_vectors_model`` to add to a hidden state, ``probe_vectors_model`` to read one);
* ``summary.json``: per cluster usage, positions, top and distinctive tokens, exemplars with context.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np

from corpus_proximity.cache import atomic_write_json, atomic_writer
from corpus_proximity.config import SoftClusterConfig, to_dict
from corpus_proximity.errors import InputError
from corpus_proximity.soft.activations import ChunkSource, Whitening
from corpus_proximity.soft.stats import intervention_vectors, model_space_vectors
from corpus_proximity.soft.stream import (
    GB,
    HISTORY_COLUMNS,
    Checkpoint,
    MemoryPlan,
    Phase1Result,
    assign_all,
    fingerprint,
    fit_centres,
    rss_bytes,
    warm_up,
)


def _ids_as_text(ids: list[int]) -> list[str]:
    return ["" if i < 0 else f"<{i}>" for i in ids]


class SequentialSoftClustering:
    """Soft clustering of activations that stream from disk in chunks, in fixed memory.

    ``SequentialSoftClustering(n_clusters=64, temperature=0.05, ...)`` takes the fields of
    :class:`config.SoftClusterConfig`. :meth:`fit` sets ``centres_`` [k, d], ``history_``,
    ``converged_``, ``stats_`` (usage, exemplars, LDA sums), ``lda_`` (intervention vectors and
    their statistics) and ``summary_`` (what ``summary.json`` holds)."""

    def __init__(self, n_clusters: int = 64, **params):
        self.config = SoftClusterConfig(n_clusters=n_clusters, **params)

    @classmethod
    def from_config(cls, cfg: SoftClusterConfig) -> "SequentialSoftClustering":
        return cls(**dataclasses.asdict(cfg))

    def fit(self, source: ChunkSource, out_dir: str | Path | None = None, *, resume: bool = False,
            ignore_token_ids=(), decode: Callable[[list[int]], list[str]] | None = None,
            whitening: Whitening | None = None, log: Callable[[str], None] = lambda s: None) -> "SequentialSoftClustering":
        """Learn the centres (phase 1), stream the memberships (phase 2) and summarise.

        With ``out_dir``, checkpoints go to ``out_dir/checkpoint.npz`` every ``checkpoint_every``
        chunks and ``resume=True`` continues from one; results are written there (see module doc).
        ``whitening``: the PCA whitening the activations went through, if any, so the intervention
        vectors are also given in the model's coordinates (``model_space_vectors``)."""
        cfg = self.config
        if len(source) == 0:
            raise InputError("no activation chunks to cluster")
        ignore = np.asarray(sorted(set(int(t) for t in ignore_token_ids)), dtype=np.int64)
        out = Path(out_dir) if out_dir is not None else None
        ckpt = None
        state = None
        if out is not None:
            (out / "memberships").mkdir(parents=True, exist_ok=True)
            ckpt = Checkpoint(out / "checkpoint.npz", fingerprint(cfg, len(source), ignore))
            state = ckpt.load() if resume else None
        warm_up()  # the kernels' code counts in the footprint the plan starts from
        plan = MemoryPlan(int(cfg.memory_budget_gb * GB), rss_bytes(), cfg.n_clusters)
        if state is not None and int(state["phase"]) == 2:
            p1 = Phase1Result(state["p1_centres"], state["p1_history"], [float(v) for v in state["p1_epoch_shift"]],
                              bool(state["p1_converged"]))
            log("phase 1: done before the interruption")
        else:
            p1 = fit_centres(source, cfg, ignore, plan, ckpt, state, log)
        extra = {"p1_centres": p1.centres, "p1_history": p1.history, "p1_epoch_shift": np.array(p1.epoch_shift),
                 "p1_converged": np.array(p1.converged)}
        log(f"phase 2: memberships of every position in {len(source)} chunks")
        stats = assign_all(source, p1.centres, cfg, ignore, plan, out / "memberships" if out else None, ckpt,
                           state if state is not None and int(state["phase"]) == 2 else None, log, extra)
        self.centres_, self.history_, self.converged_ = p1.centres, p1.history, p1.converged
        self.epoch_shift_ = p1.epoch_shift
        self.stats_ = stats
        self.lda_ = intervention_vectors(stats.lda, p1.centres)
        self.lda_.update(model_space_vectors(self.lda_["intervention_vectors"], whitening))
        self.whitened_ = whitening is not None
        self.summary_ = build_summary(self, source, decode or _ids_as_text)
        if out is not None:
            self.save(out)
            ckpt.path.unlink(missing_ok=True)
        return self

    def save(self, out: Path) -> None:
        u = self.stats_.usage
        arrays = {"centres": self.centres_, "history": self.history_, "usage_soft": u.soft, "usage_hard": u.hard,
                  "position_hist": u.pos_hist, **{k: np.asarray(v) for k, v in self.lda_.items()}}

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
        atomic_writer(out / "centres.npz", write)
        atomic_write_json(out / "summary.json", self.summary_)


def _position_summary(hist: np.ndarray) -> dict:
    total = hist.sum()
    if total <= 0:
        return {"mean": None, "share_by_eighth": []}
    pos = np.arange(len(hist))
    bins = np.array_split(hist, min(8, len(hist)))
    return {"mean": round(float((hist * pos).sum() / total), 2),
            "share_by_eighth": [round(float(b.sum() / total), 4) for b in bins]}


def build_summary(model: SequentialSoftClustering, source: ChunkSource, decode) -> dict:
    cfg, st, lda = model.config, model.stats_, model.lda_
    seq_cache: dict[int, np.ndarray | None] = {}

    def sequence_id(chunk: int, seq: int) -> str | None:
        if chunk not in seq_cache:
            seq_cache[chunk] = source.open(chunk).sequence_ids
        ids = seq_cache[chunk]
        return None if ids is None else str(ids[seq])

    def num(v) -> float | None:
        return None if not np.isfinite(v) else round(float(v), 4)

    n_pos = max(int(st.usage.n_positions), 1)
    clusters = []
    for c in range(cfg.n_clusters):
        frequent, distinctive = st.usage.top_tokens(c, cfg.n_top_tokens)
        corr = lda["cross_correlation"][c].copy()
        corr[c] = np.nan
        j = int(np.nanargmax(np.abs(corr))) if np.isfinite(corr).any() else None
        clusters.append({
            "id": c,
            "usage": round(float(st.usage.soft[c]), 2), "usage_share": round(float(st.usage.soft[c]) / n_pos, 5),
            "n_top": int(st.usage.hard[c]), "n_stored": int(st.usage.stored[c]),
            "positions": _position_summary(st.usage.pos_hist[c]),
            "top_tokens": [{"token": decode([t])[0], "id": t, "mass": round(w, 2)} for t, w in frequent],
            "distinctive_tokens": [{"token": decode([t])[0], "id": t, "lift": round(li, 2), "mass": round(w, 2)}
                                   for t, li, w in distinctive],
            "intervention": {"separation": num(lda["separation"][c]), "within_variance": num(lda["within_variance"][c]),
                             "n_positives_sampled": int(lda["n_positives"][c]), "cos_to_centre": num(lda["cos_to_centre"][c]),
                             "most_correlated": j, "max_abs_correlation": num(abs(corr[j])) if j is not None else None},
            "exemplars": {"top": st.top.records(c, decode, sequence_id),
                          "random": st.random.records(c, decode, sequence_id)},
        })
    return {"n_clusters": cfg.n_clusters, "dim": int(model.centres_.shape[1]), "n_chunks": len(source),
            "n_positions": int(st.usage.n_positions), "loglik_per_position": round(float(st.usage.loglik) / n_pos, 4),
            "converged": bool(model.converged_), "epochs": len(model.epoch_shift_),
            "epoch_max_shift": model.epoch_shift_, "ledoit_wolf_shrinkage": num(lda["shrinkage"]),
            "history_columns": list(HISTORY_COLUMNS), "config": to_dict(cfg),
            "space": ("PCA-whitened activations; centres and intervention_vectors are in that space, "
                      "intervention_vectors_model / probe_vectors_model in the model's" if model.whitened_ else
                      "the model's activations"),
            "clusters": clusters}
