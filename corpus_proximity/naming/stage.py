"""The naming stage: a name for every node of the cluster tree, cached with the tree.

Names come from an OpenAI-compatible LLM where one is configured (``naming.namer=llm``), else from
the offline namer (distinctive keyphrases against the node's siblings; no network). They are
stored with the tree in ``<cache_dir>/names-<key>/names.json``, keyed on the tree and the naming
config, so annotation, statistics and the dashboard all read the same names (:func:`load_names`).

    python name_clusters.py configs/clustering_01_tiny.py --tree            # offline names
    python name_clusters.py configs/clustering_01_tiny.py --name --local-llm # a local llama.cpp model
    python name_clusters.py CONFIG --name --set naming.namer=llm --set naming.llm.model=gpt-4o-mini
    python name_clusters.py CONFIG --list | --inspect 3.1 --samples 5 | --show-noise
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
from rich.console import Console

from corpus_proximity import cli
from corpus_proximity.cache import StageDir, atomic_write_json, stage_key, writable
from corpus_proximity.config import ExperimentConfig, NamingConfig, flat_dict, to_dict
from corpus_proximity.errors import InputError
from corpus_proximity.llm.caller import CALL_CACHE
from corpus_proximity.naming.base import IdNamer, Namer, NamingResult, NodeName
from corpus_proximity.naming.offline import OfflineNamer
from corpus_proximity.text import chunking, embedding
from corpus_proximity.tree.stage import stage_dir as tree_dir
from corpus_proximity.tree.tree import ClusterTree

STAGE = "names"
NAMES_VERSION = 1
NAMES_FORMAT = 1
# Fields only the LLM namer reads (the offline namer's key ignores them); of the llm block only what
# can change an answer is in the key (not where the endpoint is, how hard it is pushed, the key's name).
LLM_ONLY = ("llm", "response_format", "n_samples", "n_random", "mmr_lambda", "sample_pool", "max_sample_chars",
            "prompt_context", "seed")
LLM_IN_KEY = ("model", "temperature", "max_tokens")


def naming_identity(nc: NamingConfig) -> dict:
    """The naming config fields that decide the names (no key name, endpoint or concurrency)."""
    if nc.namer == "none":
        return {"namer": "none"}
    d = {k: v for k, v in to_dict(nc).items() if k != "llm"}
    if nc.namer == "offline":
        return {k: v for k, v in d.items() if k not in LLM_ONLY}
    return {**d, **{k: getattr(nc.llm, k) for k in LLM_IN_KEY}}


def tree_stage(cfg: ExperimentConfig, config_arg: str = "CONFIG") -> StageDir:
    """The config's finished tree, or an error saying which command builds it."""
    sd = tree_dir(cfg)
    if not sd.complete:
        raise InputError(f"no tree for this config (expected {sd.path}); run "
                         f"`python cluster_corpus.py {config_arg}` first")
    return sd


def stage_dir(cfg: ExperimentConfig, tree_sd: StageDir | None = None) -> StageDir:
    tree_sd = tree_sd or tree_dir(cfg)
    key = stage_key(STAGE, NAMES_VERSION, naming_identity(cfg.naming), {"tree": tree_sd.key})
    return StageDir.for_key(cfg.cache_dir, STAGE, key)


def load_inputs(cfg: ExperimentConfig, tree_sd: StageDir) -> tuple[ClusterTree, list[str], np.ndarray]:
    """The tree and the chunk texts and embeddings it was built from (read from the cache)."""
    up = tree_sd.read_meta()["upstream"]
    chunks_sd = StageDir.for_key(cfg.cache_dir, chunking.STAGE, up["chunks"])
    embed_sd = StageDir.for_key(cfg.cache_dir, embedding.STAGE, up["embed"])
    texts = chunking.read_chunks(chunks_sd, ["text"]).column("text").to_pylist()
    return ClusterTree.load(tree_sd.path), texts, embedding.load_embeddings(embed_sd)


def chunk_ids(cfg: ExperimentConfig, tree_sd: StageDir) -> list[tuple[str, str]]:
    """(chunk id, document id) of every row the tree was built from (what ``--inspect`` prints)."""
    chunks_sd = StageDir.for_key(cfg.cache_dir, chunking.STAGE, tree_sd.read_meta()["upstream"]["chunks"])
    t = chunking.read_chunks(chunks_sd, ["chunk_id", "doc_id"])
    return list(zip(t.column("chunk_id").to_pylist(), t.column("doc_id").to_pylist()))


def make_namer(cfg: ExperimentConfig, connect: Callable[[], str] | None = None, log=None,
               keep: dict[str, NodeName] | None = None) -> Namer:
    """The configured namer; ``keep`` (an earlier run's names) is honoured by the LLM namer."""
    nc = cfg.naming
    if nc.namer == "llm":
        from corpus_proximity.naming.llm import LLMNamer

        return LLMNamer(nc, Path(cfg.cache_dir) / CALL_CACHE, connect=connect, log=log, keep=keep)
    if nc.namer == "none":
        return IdNamer()
    return OfflineNamer(nc.n_keywords, nc.keyword_ngram_max)


def run_naming(cfg: ExperimentConfig, log=cli.console, connect: Callable[[], str] | None = None,
               config_arg: str = "CONFIG") -> tuple[StageDir, NamingResult | None]:
    """Name the config's tree (cached). A run with failures still writes the names it got, and
    the next run redoes only what failed (successful LLM calls come from the call cache).
    Returns the names' directory and the run's result (None on a cache hit)."""
    tree_sd = tree_stage(cfg, config_arg)
    sd = stage_dir(cfg, tree_sd)
    keep = None
    if sd.complete:
        failed = sd.read_meta().get("n_failed", 0)
        if not failed:
            log.print(f"[green]names: cache hit[/green] {sd.path}")
            return sd, None
        log.print(f"names: {failed} node(s) had no name after the last run; retrying them")
        keep = read_names(sd)  # the names obtained stay as they are
    tree, texts, emb = load_inputs(cfg, tree_sd)
    log.print(f"names: naming {len(tree.nodes) - 1} nodes with the {cfg.naming.namer} namer → {sd.path}")
    t0 = time.perf_counter()
    result = make_namer(cfg, connect, log, keep).name_tree(tree, texts, emb)
    write_names(sd, cfg, tree_sd, result, time.perf_counter() - t0)
    return sd, result


def write_names(sd: StageDir, cfg: ExperimentConfig, tree_sd: StageDir, result: NamingResult, seconds: float) -> None:
    sd.begin(redo=True)  # a retry rewrites a finished result; a concurrent run writes the same names
    nodes = [r.to_json() for r in result.names.values()]
    atomic_write_json(sd.file("names.json"), {
        "format": NAMES_FORMAT, "namer": cfg.naming.namer, "model": cfg.naming.llm.model if cfg.naming.namer == "llm" else None,
        "tree": tree_sd.key, "n_nodes": len(nodes), "n_failed": result.n_failed, "fatal": result.fatal,
        "stats": result.stats, "nodes": nodes})
    sd.finish({"naming": to_dict(cfg.naming)}, {"tree": tree_sd.key},
              {"seconds": round(seconds, 2), "n_nodes": len(nodes), "n_failed": result.n_failed,
               "stats": result.stats})


def read_names(sd: StageDir) -> dict[str, NodeName]:
    if not sd.complete:
        raise InputError(f"{sd.path}: no finished names; run `python name_clusters.py CONFIG --name`")
    data = json.loads(sd.file("names.json").read_text())
    return {d["id"]: NodeName.from_json(d) for d in data["nodes"]}


def load_names(cfg: ExperimentConfig, compute_offline: bool = True) -> dict[str, str]:
    """Node id → name for the config's tree, as every later stage shows it (unnamed nodes left out).

    Offline names are computed on first use (seconds); LLM names must have been made with
    ``python name_clusters.py CONFIG --name``.
    """
    tree_sd = tree_stage(cfg)
    sd = stage_dir(cfg, tree_sd)
    if not sd.complete:
        if cfg.naming.namer == "llm" or not compute_offline:
            raise InputError(f"no {cfg.naming.namer} names for this config yet; run "
                             f"`python name_clusters.py CONFIG --name` first")
        return {nid: r.name for nid, r in offline_names(cfg, tree_sd).items() if r.name}
    return {nid: r.name for nid, r in read_names(sd).items() if r.name}


def offline_names(cfg: ExperimentConfig, tree_sd: StageDir, log=None) -> dict[str, NodeName]:
    """The offline (or id) names of the tree for a stage that only reads: computed now (seconds) and
    saved in the cache when it is writable; on a read-only cache they are kept in memory, and the
    console says so (a reading stage never fails for want of a place to write)."""
    sd = stage_dir(cfg, tree_sd)
    if writable(sd.path):
        run_naming(cfg, log=log or Console(quiet=True))
        return read_names(sd)
    tree, texts, emb = load_inputs(cfg, tree_sd)
    cli.console.print(f"[yellow]names: {sd.path.parent} is not writable; offline names computed in memory, "
                      f"not cached[/yellow]")
    return make_namer(cfg).name_tree(tree, texts, emb).names


def names_or_ids(cfg: ExperimentConfig, compute_offline: bool = True) -> dict[str, str]:
    """:func:`load_names`, or ``{}`` where there are none yet (e.g. LLM names not made): names
    are optional for the stages that show nodes, which then show ids alone."""
    try:
        return load_names(cfg, compute_offline=compute_offline)
    except InputError:
        return {}



# What --local-llm changes for the 0.5B local model, unless the field was set to something else:
# it copies keyword hints into its labels, and shorter prompts keep a CPU run to seconds per node.
LOCAL_LLM_DEFAULTS = {"prompt_context": False, "n_samples": 4, "n_random": 1, "max_sample_chars": 200}
LOCAL_LLM_ENDPOINT = {"max_concurrency": 2, "timeout_s": 300.0}


def apply_local_llm(cfg: ExperimentConfig, log=None, quiet: bool = False) -> ExperimentConfig:
    """``--local-llm``: the bundled local model through the LLM namer, with prompts sized for it
    (fields the user set keep their values); says what changed."""
    from corpus_proximity.llm.local import MODEL_ID

    nc, default = cfg.naming, NamingConfig()
    local = {k: v for k, v in LOCAL_LLM_DEFAULTS.items() if getattr(nc, k) == getattr(default, k)}
    endpoint = {k: v for k, v in LOCAL_LLM_ENDPOINT.items() if getattr(nc.llm, k) == getattr(default.llm, k)}
    llm = dataclasses.replace(nc.llm, model=MODEL_ID, **endpoint)
    out = dataclasses.replace(cfg, naming=dataclasses.replace(nc, namer="llm", llm=llm, **local))
    if log is not None and not quiet:
        before, after = flat_dict(to_dict(nc)), flat_dict(to_dict(out.naming))
        log.print("--local-llm: " + ", ".join(f"naming.{k}={v}" for k, v in after.items() if before[k] != v))
    return out


def local_llm_connect(cfg: ExperimentConfig, log, enabled: bool = True):
    """``connect`` for the naming caller: the bundled local server, started on first use (a run
    served from the call cache starts nothing) and stopped on exit; None when not enabled."""
    from corpus_proximity.llm.local import lazy_server

    return lazy_server(cfg.naming.llm.max_concurrency, log, "names", enabled=enabled)
