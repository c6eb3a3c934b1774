"""How stable is the taxonomy? N runs of the tree on redrawn corpora and/or other seeds.
Every run is ``recursive_cluster`` on a draw of the config's embeddings (``ensemble.resample``)
with a seed derived from ``ensemble.seed`` and its index, cached like the tree stage
(``<cache_dir>/ensrun-<key>/``: tree.json, tree_arrays.npz with member indices into the whole
corpus). Runs execute in local joblib processes or as Ray tasks; the registry
(``data/registry.db``) maps the ensemble to its runs and their keys. The ensemble directory
(``<cache_dir>/ensemble-<key>/``, copied to ``<outputs>/ensemble/``) holds

* ``distances_<method>.npz``: ``distances [n_depths, runs, runs]`` between runs per depth, for
  hamming (permutation-invariant), matching (1 − Rand), ari and nmi (1 − score), and a PNG of
  their distributions;
* ``stability.json``: per node of the config's own tree, the mean best Jaccard over runs (clusterboot);
  ``name_clusters.py --tree`` shows it;
* ``ensemble_meta.json``: runs (seed, draw, key), settings, per-depth summaries.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from joblib import Parallel, delayed

from corpus_proximity import cli
from corpus_proximity.cache import StageDir, atomic_write_json, atomic_writer, copy_results, stage_key
from corpus_proximity.children import watch_children
from corpus_proximity.config import ClusteringConfig, EnsembleConfig, ExperimentConfig, semantic_dict, to_dict
from corpus_proximity.distributed import init_ray
from corpus_proximity.ensemble import compare as ens
from corpus_proximity.ensemble.registry import Registry, registry_path
from corpus_proximity.text import embedding
from corpus_proximity.tree import stage as tree_stage
from corpus_proximity.tree.tree import ClusterTree

RUN_STAGE, RUN_VERSION = "ensrun", 1
STAGE, STAGE_VERSION = "ensemble", 1


@dataclass(frozen=True)
class RunSpec:
    index: int
    seed: int
    """The clustering seed of this run."""
    draw_seed: int | None
    """Seed of its draw of the corpus; None = all chunks."""
    resample: str
    sample_frac: float

    def identity(self) -> dict:
        draw = None if self.draw_seed is None else {"resample": self.resample, "seed": self.draw_seed,
                                                    **({"frac": self.sample_frac} if self.resample == "subsample" else {})}
        return {"seed": self.seed, "draw": draw}


def plan_runs(ec: EnsembleConfig, clustering_seed: int) -> list[RunSpec]:
    """Run i's clustering seed and draw seed, derived from ``ensemble.seed`` and i only, so an
    ensemble of 10 runs contains the 5 of an ensemble of 5 (and reuses their cache)."""
    specs = []
    for i in range(ec.runs):
        seed = ens.derived_seed(ec.seed, "seed", i) if ec.vary in ("seed", "both") else clustering_seed
        draw = ens.derived_seed(ec.seed, "draw", i) if ec.vary in ("bootstrap", "both") else None
        specs.append(RunSpec(i, seed, draw, ec.resample, ec.sample_frac))
    return specs


def run_stage(cfg: ExperimentConfig, embed_key: str, spec: RunSpec) -> StageDir:
    """The cache directory of one run: the tree stage's semantics with this run's seed and draw."""
    semantic = tree_stage.clustering_identity(dataclasses.replace(cfg.clustering, seed=spec.seed))
    key = stage_key(RUN_STAGE, RUN_VERSION, {"clustering": semantic, **spec.identity()},
                    {"embed": embed_key, "tree_version": str(tree_stage.STAGE_VERSION)})
    return StageDir.for_key(cfg.cache_dir, RUN_STAGE, key)


def cluster_run(X: np.ndarray, cc: ClusteringConfig, spec: RunSpec) -> ClusterTree:
    """One ensemble run: ``recursive_cluster`` on the run's draw of ``X`` with the run's seed; node
    members are mapped back to row indices of the whole ``X`` (rows not drawn belong to no node)."""
    idx = np.arange(len(X)) if spec.draw_seed is None else ens.draw_indices(
        len(X), spec.resample, spec.sample_frac, spec.draw_seed)
    tree = tree_stage.recursive_cluster(np.asarray(X[idx]), dataclasses.replace(cc, seed=spec.seed, n_jobs=1))
    for nd in tree.nodes.values():
        nd.members, nd.noise = idx[nd.members], idx[nd.noise]
        nd.sample_indices = [int(idx[i]) for i in nd.sample_indices]
    tree.n_points = len(X)
    return tree


def _timed_run(X: np.ndarray, cc: ClusteringConfig, spec: RunSpec) -> tuple[int, ClusterTree, float]:
    t0 = time.perf_counter()
    tree = cluster_run(X, cc, spec)
    return spec.index, tree, time.perf_counter() - t0


def execute(X: np.ndarray, cc: ClusteringConfig, specs: list[RunSpec], ec: EnsembleConfig
            ) -> Iterator[tuple[int, ClusterTree, float]]:
    """Yield (run index, tree, seconds) as runs finish, on the configured engine. Workers only
    compute and return; the caller writes the cache, so a Ray cluster needs no shared disk."""
    if not specs:
        return
    if ec.engine == "ray":
        yield from _execute_ray(X, cc, specs, ec.ray_address)
        return
    if ec.n_jobs == 1 or len(specs) == 1:
        for s in specs:
            yield _timed_run(X, cc, s)
        return
    # processes: a tree run is numba/UMAP work that holds the GIL; X is memory-mapped to workers
    watch_children()
    yield from Parallel(n_jobs=ec.n_jobs, prefer="processes", return_as="generator_unordered")(
        delayed(_timed_run)(X, cc, s) for s in specs)


def _execute_ray(X: np.ndarray, cc: ClusteringConfig, specs: list[RunSpec], address: str | None):
    init_ray(address, field="ensemble.ray_address")
    import ray

    task = ray.remote(num_cpus=1)(_timed_run)
    x_ref = ray.put(np.ascontiguousarray(X))
    pending = [task.remote(x_ref, cc, s) for s in specs]
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        yield ray.get(done[0])


# --- the stage -----------------------------------------------------------------------------------

def stage_dir(cfg: ExperimentConfig, tree_key: str, embed_key: str) -> StageDir:
    key = stage_key(STAGE, STAGE_VERSION, {"clustering": tree_stage.clustering_identity(cfg.clustering),
                                           "ensemble": semantic_dict(cfg.ensemble)},
                    {"tree": tree_key, "embed": embed_key})
    return StageDir.for_key(cfg.cache_dir, STAGE, key)


def run_ensemble(cfg: ExperimentConfig, log=None) -> StageDir:
    """Reference tree, the runs (cached one by one), distances and stability (cached)."""
    log = log or cli.console
    tree_sd = tree_stage.run_clustering(cfg, log)
    embed = embedding.stage_dir(cfg)
    sd = stage_dir(cfg, tree_sd.key, embed.key)
    if sd.complete:
        log.print(f"[green]ensemble: cache hit[/green] {sd.path}")
        return sd
    ec = cfg.ensemble
    specs = plan_runs(ec, cfg.clustering.seed)
    run_dirs = [run_stage(cfg, embed.key, s) for s in specs]
    registry = Registry(registry_path(cfg.cache_dir))
    registry.start_ensemble(sd.key, "tree", cfg.name, tree_sd.key, sd.path, to_dict(ec),
                            [(r.key, s.identity()) for r, s in zip(run_dirs, specs)])
    todo = [s for s, r in zip(specs, run_dirs) if not r.complete]
    log.print(f"ensemble: {ec.runs} runs (vary {ec.vary}; {ec.runs - len(todo)} cached), "
              f"{ec.engine} engine → {sd.path}")
    X = embedding.load_embeddings(embed)
    for s, r in zip(specs, run_dirs):
        if r.complete:
            registry.finish_run(sd.key, s.index, r.path, None)
    for i, tree, seconds in execute(X, cfg.clustering, todo, ec):
        r = run_dirs[i]
        if r.begin():  # else a concurrent run of this config saved it meanwhile
            tree.save(r.path)
            r.finish({"clustering": to_dict(cfg.clustering), **specs[i].identity()}, {"embed": embed.key},
                     {"seconds": round(seconds, 2), "n_nodes": len(tree.nodes) - 1, "n_depths": tree.n_depths})
        registry.finish_run(sd.key, i, r.path, seconds)
        log.print(f"  run {i}: seed {specs[i].seed}, {tree.root.size} chunks → {len(tree.nodes) - 1} nodes, "
                  f"{tree.n_depths} depths ({seconds:.0f}s)")
    ref = ClusterTree.load(tree_sd.path)
    runs = [ClusterTree.load(r.path) for r in run_dirs]
    write_results(sd, cfg, ref, runs, specs, run_dirs, tree_sd.key, embed.key)
    registry.finish_ensemble(sd.key)
    return sd


def ensemble_distances(runs: list[ClusterTree], n_depths: int) -> dict[str, np.ndarray]:
    """method → [n_depths, runs, runs]: distances per depth on the chunks both runs saw."""
    masks = [ens.seen_mask(t) for t in runs]
    out = {m: np.zeros((n_depths, len(runs), len(runs))) for m in ens.METHODS}
    for d in range(n_depths):
        labels = [ens.partition_at_depth(t, d) for t in runs]
        for m in ens.METHODS:
            out[m][d] = ens.pairwise(labels, m, masks)
    return out


def write_results(sd: StageDir, cfg: ExperimentConfig, ref: ClusterTree, runs: list[ClusterTree],
                  specs: list[RunSpec], run_dirs: list[StageDir], tree_key: str, embed_key: str) -> None:
    n_depths = max([ref.n_depths] + [t.n_depths for t in runs])
    dists = ensemble_distances(runs, n_depths)
    stab = ens.node_stability(ref, runs, cfg.ensemble.stability_threshold)
    if not sd.begin():  # a concurrent run of this config finished it meanwhile
        return
    summary = {}
    for m, d in dists.items():
        def write(p: Path, d=d) -> None:
            with open(p, "wb") as f:
                np.savez(f, distances=d, depths=np.arange(n_depths), method=np.array(m),
                         run_keys=np.array([r.key for r in run_dirs]))
        atomic_writer(sd.file(f"distances_{m}.npz"), write)
        summary[m] = [{"depth": k, "mean": round(float(ens.upper(d[k]).mean()), 4),
                       "std": round(float(ens.upper(d[k]).std()), 4)} for k in range(n_depths)]
    plot_distances(dists, sd.path)
    atomic_write_json(sd.file("stability.json"), stab.to_json())
    meta = {"experiment": cfg.name, "kind": "tree", "tree": tree_key, "n_runs": len(runs),
            "ensemble": to_dict(cfg.ensemble), "methods": {m: ens.METHOD_TITLES[m] for m in ens.METHODS},
            "runs": [{"index": s.index, "key": r.key, "path": str(r.path), **s.identity(),
                      "n_chunks": t.root.size, "n_nodes": len(t.nodes) - 1, "n_depths": t.n_depths}
                     for s, r, t in zip(specs, run_dirs, runs)],
            "distances": summary, "n_unstable": len(stab.unstable()), "unstable": stab.unstable()}
    atomic_write_json(sd.file("ensemble_meta.json"), meta)
    sd.finish({"clustering": to_dict(cfg.clustering), "ensemble": to_dict(cfg.ensemble)},
              {"tree": tree_key, "embed": embed_key}, {"n_runs": len(runs)})


def plot_distances(dists: dict[str, np.ndarray], out: Path, xlabel: str = "depth") -> list[Path]:
    """``distances_<method>.png``: the distribution of pairwise distances at each depth (or
    iteration). Skipped, returning [], where matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    paths = []
    for m, d in dists.items():
        fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
        vals = [ens.upper(d[k]) for k in range(len(d))]
        if len(vals) <= 12:
            ax.boxplot(vals, positions=range(len(vals)), widths=0.5)
            for k, v in enumerate(vals):
                ax.scatter(np.full(len(v), k) + np.random.default_rng(k).uniform(-0.12, 0.12, len(v)), v, s=8, alpha=0.5)
        else:  # many iterations: median and quartiles as bands
            q = np.array([np.percentile(v, [10, 25, 50, 75, 90]) if len(v) else [np.nan] * 5 for v in vals])
            x = np.arange(len(vals))
            ax.fill_between(x, q[:, 0], q[:, 4], alpha=0.2, label="10–90%")
            ax.fill_between(x, q[:, 1], q[:, 3], alpha=0.4, label="25–75%")
            ax.plot(x, q[:, 2], lw=1.5, label="median")
            ax.legend(loc="best", fontsize=8)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ens.METHOD_TITLES.get(m, m))
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"pairwise distances between runs: {ens.METHOD_TITLES.get(m, m)}", fontsize=10)
        fig.tight_layout()
        path = out / f"distances_{m}.png"
        atomic_writer(path, lambda p, fig=fig: fig.savefig(p, format="png"))
        plt.close(fig)
        paths.append(path)
    return paths


def distance_table(meta: dict):
    from rich.table import Table

    t = Table(title=f"distances between {meta['n_runs']} runs (mean ± sd over pairs; 0 = same partition)")
    t.add_column("depth", justify="right")
    for m in ens.METHODS:
        t.add_column(ens.METHOD_TITLES[m], justify="right")
    for k in range(len(meta["distances"]["hamming"])):
        t.add_row(str(k), *[f"{meta['distances'][m][k]['mean']:.3f} ± {meta['distances'][m][k]['std']:.3f}"
                            for m in ens.METHODS])
    return t


def publish(cfg: ExperimentConfig, sd: StageDir) -> Path:
    """Copy the ensemble's results (JSON, NPZ, PNG) to ``<outputs>/ensemble/``."""
    return copy_results(sd, cfg.outputs / "ensemble")
