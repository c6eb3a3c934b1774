"""Which features belong together: greedy MDL merging of components by coactivation, and an
ensemble of merge runs over data draws.
Input: the memberships of the soft clustering (``soft_cluster.py``) (sample = one token position, component = one soft
cluster, activation = its membership; positions with no stored membership fire nothing and are
left out), or a user ``.npz`` holding a dense array (SAE latents, ...; extra leading axes are
flattened into samples). Settings: ``MergeConfig`` (``merge.*``). Writes, in
``<cache_dir>/merge-<key>/`` (copied to ``<outputs>/merge/``):

* ``merge_history.npz``: the reference run on all samples (``groups [iters+1, components]``,
  ``pairs``, ``costs``, ``k_groups``);
* ``ensemble_merge_array.npz``: ``merges [runs, iters+1, components]``, ``costs``, ``pairs`` of the
  ``merge.runs`` runs, each on a ``merge.sample_frac`` draw of the samples with its own seed;
* ``distances_hamming.npz`` (``distances [iters+1, runs, runs]``) and ``.png``;
* ``ensemble_meta.json``: settings, input, per-iteration distance summaries.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed

from corpus_proximity import cli
from corpus_proximity.cache import StageDir, atomic_write_json, atomic_writer, copy_results, file_fingerprint, stage_key
from corpus_proximity.children import watch_children
from corpus_proximity.config import ExperimentConfig, MergeConfig, semantic_dict, to_dict
from corpus_proximity.ensemble import compare as ens
from corpus_proximity.ensemble.merge import MergeHistory, binary_mask, ensemble_array, history_distances, merge_run
from corpus_proximity.ensemble.registry import Registry, registry_path
from corpus_proximity.ensemble.runs import plot_distances
from corpus_proximity.errors import InputError

STAGE, STAGE_VERSION = "merge", 1


def soft_cluster_mask(softclust_dir: Path, threshold: float) -> np.ndarray:
    """[positions with any membership >= threshold, k] bool from ``memberships/chunk-*.npz``."""
    files = sorted((softclust_dir / "memberships").glob("chunk-*.npz"))
    if not files:
        raise InputError(f"{softclust_dir}: no memberships/chunk-*.npz; run soft_cluster.py on the config first")
    parts, k = [], None
    for f in files:
        z = np.load(f)
        meta = json.loads(str(z["meta"]))
        k = meta["n_clusters"]
        idx, val = z["indices"], z["values"]
        keep = val >= threshold
        seq, pos, clu = idx[keep, 0].astype(np.int64), idx[keep, 1].astype(np.int64), idx[keep, 2]
        flat = seq * meta["seq_len"] + pos
        rows, inv = np.unique(flat, return_inverse=True)
        m = np.zeros((len(rows), k), dtype=bool)
        m[inv.ravel(), clu] = True
        parts.append(m)
    return np.concatenate(parts) if parts else np.zeros((0, k or 0), dtype=bool)


def array_mask(path: Path, key: str | None, threshold: float) -> np.ndarray:
    """The bool mask of a dense activations array in a user .npz (rows with nothing active dropped)."""
    if not path.is_file():
        raise InputError(f"--input {path}: no such file")
    try:
        z = np.load(path)
    except Exception as e:
        raise InputError(f"--input {path}: not a readable .npz ({type(e).__name__})") from None
    names = list(z.keys()) if hasattr(z, "keys") else []
    key = key or ("activations" if "activations" in names else names[0] if len(names) == 1 else None)
    if key is None or key not in names:
        raise InputError(f"--input {path}: pass --key, one of {', '.join(names)}")
    a = z[key]
    if a.ndim < 2 or not np.issubdtype(a.dtype, np.number):
        raise InputError(f"--input {path}: {key} must be a numeric array [samples, components], got {a.shape} {a.dtype}")
    m = binary_mask(a.reshape(-1, a.shape[-1]), threshold)
    return m[m.any(axis=1)]


def run_ensemble(mask: np.ndarray, cfg: MergeConfig) -> tuple[MergeHistory, list[MergeHistory], list[dict]]:
    """The reference run on all rows and ``cfg.runs`` runs on seeded draws of the rows."""
    n = len(mask)
    if mask.shape[1] < 2:
        raise InputError(f"merging needs at least 2 components; the input has {mask.shape[1]}")
    if n == 0:
        raise InputError(f"no sample has an activation >= merge.activation_threshold={cfg.activation_threshold}")
    plans = []
    for r in range(cfg.runs):
        draw = ens.derived_seed(cfg.seed, "rows", r)
        take = max(1, int(round(cfg.sample_frac * n)))
        plans.append({"run": r, "draw_seed": draw, "select_seed": ens.derived_seed(cfg.seed, "select", r), "n_samples": take})
    rows = [np.sort(np.random.default_rng(p["draw_seed"]).choice(n, p["n_samples"], replace=False)) for p in plans]
    jobs = [delayed(merge_run)(mask, cfg, ens.derived_seed(cfg.seed, "select", "reference"))]
    jobs += [delayed(merge_run)(mask[r], cfg, p["select_seed"]) for r, p in zip(rows, plans)]
    if cfg.n_jobs != 1:
        watch_children()
    out = Parallel(n_jobs=cfg.n_jobs)(jobs) if cfg.n_jobs != 1 else [j[0](*j[1], **j[2]) for j in jobs]
    return out[0], out[1:], plans


def _save_npz(path: Path, **arrays) -> None:
    def write(p: Path) -> None:
        with open(p, "wb") as f:
            np.savez(f, **arrays)
    atomic_writer(path, write)


def run_merge(cfg: ExperimentConfig, input_path: Path | None, key: str | None, log=None) -> StageDir:
    log = log or cli.console
    mc = cfg.merge
    if input_path is None:
        from corpus_proximity.soft import stage as soft_cluster
        src = soft_cluster.stage_dir(cfg)
        if not src.complete:
            raise InputError(f"no soft clusters for this config (expected {src.path}); run "
                             f"`python soft_cluster.py CONFIG` first, or pass --input ACTIVATIONS.npz")
        upstream, source = {"softclust": src.key}, str(src.path)
    else:
        if not input_path.is_file():
            raise InputError(f"--input {input_path}: no such file")
        upstream, source = {"input": file_fingerprint(input_path), "key": key or ""}, str(input_path)
    sd = StageDir.for_key(cfg.cache_dir, STAGE, stage_key(STAGE, STAGE_VERSION, semantic_dict(mc), upstream))
    if sd.complete:
        log.print(f"[green]merge: cache hit[/green] {sd.path}")
        return sd
    mask = (soft_cluster_mask(Path(source), mc.activation_threshold) if input_path is None
            else array_mask(input_path, key, mc.activation_threshold))
    if mc.max_samples is not None and len(mask) > mc.max_samples:
        keep = np.sort(np.random.default_rng(ens.derived_seed(mc.seed, "cap")).choice(len(mask), mc.max_samples, replace=False))
        mask = mask[keep]
    log.print(f"merge: {mask.shape[0]} samples × {mask.shape[1]} components, {mask.mean():.2%} active, "
              f"reference + {mc.runs} runs → {sd.path}")
    registry = Registry(registry_path(cfg.cache_dir))
    registry.start_ensemble(sd.key, "merge", cfg.name, next(iter(upstream.values())), sd.path, to_dict(mc),
                            [(sd.key, {"run": r}) for r in range(mc.runs)])
    t0 = time.perf_counter()
    ref, runs, plans = run_ensemble(mask, mc)
    seconds = time.perf_counter() - t0
    if not sd.begin():  # a concurrent run of this config finished it meanwhile
        return sd
    _save_npz(sd.file("merge_history.npz"), groups=ref.groups, pairs=ref.pairs, costs=ref.costs, k_groups=ref.k_groups)
    _save_npz(sd.file("ensemble_merge_array.npz"), **ensemble_array(runs))
    summary = []
    if len(runs) >= 2:
        d = history_distances(runs)
        _save_npz(sd.file("distances_hamming.npz"), distances=d, iterations=np.arange(len(d)), method=np.array("hamming"))
        plot_distances({"hamming": d}, sd.path, xlabel="merge iteration")
        summary = [{"iteration": t, "k_groups": int(ref.k_groups[t]), "mean": round(float(ens.upper(d[t]).mean()), 4),
                    "max": round(float(ens.upper(d[t]).max()), 4)} for t in range(len(d))]
    for r in range(mc.runs):
        registry.finish_run(sd.key, r, sd.path, seconds / (mc.runs + 1))
    meta = {"experiment": cfg.name, "kind": "merge", "source": source, "upstream": upstream,
            "n_samples": int(mask.shape[0]), "n_components": int(mask.shape[1]), "active_share": float(mask.mean()),
            "merge": to_dict(mc), "runs": plans, "seconds": round(seconds, 2), "distances_hamming": summary}
    atomic_write_json(sd.file("ensemble_meta.json"), meta)
    sd.finish({"merge": to_dict(mc)}, upstream, {"n_components": int(mask.shape[1]), "n_runs": mc.runs})
    registry.finish_ensemble(sd.key)
    return sd


def cluster_words(softclust_dir: Path | None) -> dict[int, str]:
    """Soft cluster → its two most distinctive tokens (for printing groups), when known."""
    p = softclust_dir / "summary.json" if softclust_dir else None
    if p is None or not p.is_file():
        return {}
    return {c["id"]: "·".join(t["token"] for t in c["distinctive_tokens"][:2])
            for c in json.loads(p.read_text())["clusters"]}


def print_history(h: MergeHistory, meta: dict, words: dict[int, str], log, n_first: int = 8,
                  levels: tuple[int, ...] = (8, 4)) -> None:
    label = lambda c: f"{c}" + (f" ({words[c]})" if c in words else "")  # noqa: E731
    log.print(f"[bold]first merges[/bold] (of {h.n_iters}; cost in bits):")
    for t in range(min(n_first, h.n_iters)):
        a, b = h.pairs[t]
        log.print(f"  {t + 1:>3}. {label(int(a))} + {label(int(b))}   cost {h.costs[t]:.1f}")
    for k in levels:
        t = int(np.flatnonzero(h.k_groups == k)[0]) if (h.k_groups == k).any() else None
        if t is None:
            continue
        log.print(f"[bold]groups at k = {k}[/bold] (iteration {t}):")
        g = h.groups[t]
        for name in np.unique(g):
            log.print("  " + ", ".join(label(int(c)) for c in np.flatnonzero(g == name)))
    d = meta["distances_hamming"]
    if d:
        picks = sorted({0, len(d) // 4, len(d) // 2, 3 * len(d) // 4, len(d) - 1})
        log.print(f"distance between the {meta['merge']['runs']} runs (perm-invariant Hamming, mean): " +
                  ", ".join(f"iter {d[t]['iteration']} (k={d[t]['k_groups']}): {d[t]['mean']:.3f}" for t in picks))


def publish(cfg: ExperimentConfig, sd: StageDir) -> Path:
    """Copy the merge results (JSON, NPZ, PNG) to ``<outputs>/merge/``."""
    return copy_results(sd, cfg.outputs / "merge")


def read_history(sd: StageDir) -> MergeHistory:
    z = np.load(sd.file("merge_history.npz"))
    return MergeHistory(z["groups"], z["pairs"], z["costs"], z["k_groups"])
