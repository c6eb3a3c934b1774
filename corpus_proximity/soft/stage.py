"""The soft-clustering stage: the config's activations (extracted first when not cached) →
``<cache_dir>/softclust-<key>/`` with ``summary.json``, ``centres.npz`` and ``memberships/``
(formats: :mod:`corpus_proximity.soft.model`); resumable from its checkpoint."""

from __future__ import annotations

import shutil

from corpus_proximity import cli
from corpus_proximity.cache import StageDir, stage_key
from corpus_proximity.config import ExperimentConfig, semantic_dict, to_dict
from corpus_proximity.errors import InputError
from corpus_proximity.soft import extract
from corpus_proximity.soft.activations import FileSource, Whitening
from corpus_proximity.soft.model import SequentialSoftClustering

STAGE = "softclust"
STAGE_VERSION = 3  # 2: intervention/probe vectors in the model's coordinates; 3: hashed reservoir keys


def stage_dir(cfg: ExperimentConfig, acts: StageDir | None = None) -> StageDir:
    acts = acts or extract.stage_dir(cfg)
    key = stage_key(STAGE, STAGE_VERSION, semantic_dict(cfg.soft_cluster), {"activations": acts.key})
    return StageDir.for_key(cfg.cache_dir, STAGE, key)


def run_soft_clustering(cfg: ExperimentConfig, resume: bool = False, fresh: bool = False, log=cli.console) -> StageDir:
    """Produce (or reuse) the soft clustering of this config's activations."""
    acts = extract.run_extraction(cfg, log)
    sd = stage_dir(cfg, acts)
    if sd.complete:
        log.print(f"[green]soft clusters: cache hit[/green] {sd.path}")
        return sd
    ckpt = sd.file("checkpoint.npz")
    if fresh and sd.path.exists():
        shutil.rmtree(sd.path)
    elif ckpt.is_file() and not resume:
        raise InputError(f"{ckpt}: an interrupted run left a checkpoint; pass --resume to continue it "
                         f"or --fresh to start over")
    if not sd.begin():  # a concurrent run of this config finished it meanwhile
        return sd
    meta = acts.read_meta()
    ignore = meta.get("special_token_ids", []) if cfg.soft_cluster.skip_special_tokens else []
    log.print(f"soft clusters: k={cfg.soft_cluster.n_clusters} on {meta['n_files']} chunk files "
              f"({meta['n_positions']} positions, d={meta['dim']}) → {sd.path}")
    whitening = Whitening.load(acts.file("whitening.npz")) if meta.get("whitened") else None
    model = SequentialSoftClustering.from_config(cfg.soft_cluster).fit(
        FileSource.from_dir(acts.file("chunks")), sd.path, resume=resume, ignore_token_ids=ignore,
        decode=extract.token_decoder(meta), whitening=whitening, log=log.print)
    sd.finish({"soft_cluster": to_dict(cfg.soft_cluster)}, {"activations": acts.key},
              {"n_clusters": cfg.soft_cluster.n_clusters, "dim": int(model.centres_.shape[1]),
               "n_positions": model.summary_["n_positions"], "converged": model.converged_})
    return sd
