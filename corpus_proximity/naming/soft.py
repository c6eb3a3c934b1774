"""The soft-cluster naming stage: names for the soft clusters (features) of a config's token activations from their exemplars.

The naming stage's settings (``naming.*``) and machinery (:func:`corpus_proximity.naming.llm.ask_description`
through the one chat caller): one chat call per cluster, all under ``naming.llm.max_concurrency``,
each cached on disk under ``llm-calls/`` and retried on 429/5xx/timeouts/unusable answers. The samples are the cluster's exemplar contexts
(highest-membership ones first, then random members), the token where it fires in [[brackets]],
with its most distinctive tokens as keywords; a generic label, or one a more used cluster already
has, is asked for once more with the labels taken. A cluster whose call fails gets ``name_error`` and
no name (never an invented one); a rerun asks again only for those (the others come from the
call cache). The offline namer names a cluster by its distinctive tokens. Names are cached in
``softnames-<key>/names.json``, keyed on the soft clustering and the naming settings.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from rich.table import Table

from corpus_proximity import cli
from corpus_proximity.cache import StageDir, atomic_write_json, stage_key
from corpus_proximity.config import ExperimentConfig, NamingConfig, to_dict
from corpus_proximity.errors import InputError
from corpus_proximity.llm.caller import CALL_CACHE
from corpus_proximity.naming.base import NodeName, clip
from corpus_proximity.naming.stage import naming_identity
from corpus_proximity.soft import stage as soft_stage
from corpus_proximity.soft.analyzer import ClusterAnalyzer, context_string

STAGE = "softnames"
STAGE_VERSION = 1
SYSTEM_PROMPT = "You name groups of words for a researcher's taxonomy. Reply with JSON only."
USER_TEMPLATE = """Each line shows a word in [[double brackets]] with the text around it:
{samples}

The bracketed words belong to one group. Words most typical of the group: {keywords}

Name this group. Reply with a JSON object with these keys:
"summary": one short sentence on what the bracketed words have in common;
"label": a short noun phrase (2 to 5 words) naming the group, like a section title in a dictionary of word uses; not a list of words;
"category": the kind of group: topic, grammar, word form, punctuation, code or other;
"coherence": 1 to 10, how clearly the bracketed words belong together."""


def stage_dir(cfg: ExperimentConfig, soft_sd: StageDir | None = None) -> StageDir:
    soft_sd = soft_sd or soft_stage.stage_dir(cfg)
    key = stage_key(STAGE, STAGE_VERSION, naming_identity(cfg.naming), {"softclust": soft_sd.key})
    return StageDir.for_key(cfg.cache_dir, STAGE, key)


def samples(cluster: dict, nc: NamingConfig) -> list[str]:
    """The cluster's exemplar contexts for a prompt: ``n_samples - n_random`` of the highest
    membership, then ``n_random`` random members, duplicates dropped, each clipped."""
    top, rnd = cluster["exemplars"]["top"], cluster["exemplars"]["random"]
    n_top = max(nc.n_samples - nc.n_random, 1)
    out: list[str] = []
    for ex in top[:n_top] + rnd[:nc.n_random]:
        text = clip(context_string(ex, mark="[[{}]]"), nc.max_sample_chars)
        if text not in out:
            out.append(text)
    return out


def keywords(cluster: dict, n: int) -> list[str]:
    words = [t["token"] for t in cluster["distinctive_tokens"]] or [t["token"] for t in cluster["top_tokens"]]
    return [w for w in words if w.strip()][:n]


def messages(cluster: dict, nc: NamingConfig) -> list[dict]:
    user = USER_TEMPLATE.format(samples="\n".join(f"[{i + 1}] {s}" for i, s in enumerate(samples(cluster, nc))),
                                keywords=", ".join(json.dumps(w) for w in keywords(cluster, max(nc.n_keywords, 5)))
                                or "(none)")
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def offline_names(clusters: list[dict], nc: NamingConfig) -> dict[int, NodeName]:
    return {c["id"]: NodeName(str(c["id"]), " · ".join(keywords(c, nc.n_keywords)) or None, "offline",
                              keywords=keywords(c, nc.n_keywords),
                              name_error=None if keywords(c, nc.n_keywords) else "no tokens to name it by")
            for c in clusters}


def llm_names(clusters: list[dict], nc: NamingConfig, call_cache: Path, connect=None) -> tuple[dict[int, NodeName], dict]:
    """One cached, retried call per cluster, all at once under the concurrency limit."""
    from corpus_proximity.naming.llm import REASK_TEMPLATE, ask_description, description_caller, is_generic, same_label

    async def run():
        caller = description_caller(nc, call_cache, connect)
        try:
            msgs = [messages(c, nc) for c in clusters]
            outs = list(await asyncio.gather(*(ask_description(caller, nc, m) for m in msgs)))
            # generic labels and labels a more used cluster already has are asked once more,
            # sharper, with the labels taken (as the tree namer does)
            labels = {i: o.value.label for i, o in enumerate(outs) if o.value is not None}
            redo = {}
            for i in sorted(labels, key=lambda i: -clusters[i]["usage"]):
                earlier = [labels[j] for j in labels if clusters[j]["usage"] > clusters[i]["usage"]]
                if is_generic(labels[i]):
                    redo[i] = ("is too generic", earlier)
                elif any(same_label(labels[i], e) for e in earlier):
                    redo[i] = ("is the same as another group's label", earlier)
            asks = []
            for i, (problem, taken) in redo.items():
                m = [dict(x) for x in msgs[i]]
                taken_txt = " Labels already taken: " + ", ".join(f'"{t}"' for t in taken[:12]) + "." if taken else ""
                m[-1]["content"] += REASK_TEMPLATE.format(label=labels[i], problem=problem, taken=taken_txt)
                asks.append(ask_description(caller, nc, m))
            for i, out in zip(redo, await asyncio.gather(*asks)):
                if out.value is not None:
                    outs[i] = out
        finally:
            await caller.close()
        return outs, dict(caller.stats)

    outs, stats = asyncio.run(run())
    names = {}
    for c, out in zip(clusters, outs):
        kw = keywords(c, nc.n_keywords)
        if out.value is None:
            names[c["id"]] = NodeName(str(c["id"]), None, "llm", keywords=kw, name_error=out.error or "failed")
        else:
            a = out.value
            names[c["id"]] = NodeName(str(c["id"]), a.label, "llm", keywords=kw, summary=a.summary,
                                      category=a.category, coherence=a.coherence)
    bad = next((o for o in outs if o.kind in ("fatal", "unreachable")), None)
    fatal = (f"LLM endpoint {'rejected the request' if bad.kind == 'fatal' else 'unreachable'}: {bad.error}"
             if bad else None)
    usage = {c["id"]: c["usage"] for c in clusters}
    for c, n in names.items():  # still generic or duplicate after the re-ask: kept, flagged
        if n.name and is_generic(n.name):
            n.warnings.append("label is generic")
        dup = [o for o, m in names.items() if usage[o] > usage[c] and m.name and n.name and same_label(m.name, n.name)]
        if dup:
            n.warnings.append(f"same label as cluster {dup[0]}")
    return names, {**stats, "fatal": fatal}


def run_naming(cfg: ExperimentConfig, log=cli.console, connect=None) -> tuple[StageDir, dict[int, NodeName]]:
    """Name the config's soft clusters (cached; a run with failures keeps what it got and the next
    run asks again for the rest)."""
    soft_sd = soft_stage.stage_dir(cfg)
    if not soft_sd.complete:
        raise InputError(f"no soft clustering for this config yet ({soft_sd.path}); run "
                         f"`python soft_cluster.py CONFIG` first")
    sd = stage_dir(cfg, soft_sd)
    if sd.complete and not sd.read_meta().get("n_failed"):
        log.print(f"[green]soft-cluster names: cache hit[/green] {sd.path}")
        return sd, read_names(sd)
    clusters = ClusterAnalyzer(soft_sd.path).clusters
    nc = cfg.naming
    log.print(f"soft-cluster names: naming {len(clusters)} clusters with the {nc.namer} namer → {sd.path}")
    t0 = time.perf_counter()
    if nc.namer == "llm":
        names, stats = llm_names(clusters, nc, Path(cfg.cache_dir) / CALL_CACHE, connect)
    else:
        names, stats = offline_names(clusters, nc), {}
    n_failed = sum(1 for n in names.values() if n.name is None)
    sd.begin(redo=True)  # a retry rewrites a finished result; a concurrent run writes the same names
    atomic_write_json(sd.file("names.json"), {
        "namer": nc.namer, "model": nc.llm.model if nc.namer == "llm" else None, "softclust": soft_sd.key,
        "n_clusters": len(names), "n_failed": n_failed, "stats": stats,
        "clusters": [names[c].to_json() for c in sorted(names)]})
    sd.finish({"naming": to_dict(nc)}, {"softclust": soft_sd.key},
              {"seconds": round(time.perf_counter() - t0, 2), "n_clusters": len(names), "n_failed": n_failed})
    if stats.get("fatal"):
        raise InputError(f"{stats['fatal']}; the {len(names) - n_failed} name(s) obtained are kept in "
                         f"{sd.file('names.json')}; rerun to retry the {n_failed} other(s)")
    return sd, names


def read_names(sd: StageDir) -> dict[int, NodeName]:
    data = json.loads(sd.file("names.json").read_text())
    return {int(d["id"]): NodeName.from_json(d) for d in data["clusters"]}


def names_table(an: ClusterAnalyzer, names: dict[int, NodeName], n: int | None = None) -> Table:
    t = Table("cluster", "usage", "name", "coherence", "distinctive tokens")
    for c in an.ranked()[:n]:
        cl, nm = an.clusters[c], names.get(c)
        label = nm.name if nm and nm.name else f"[red]unnamed: {nm.name_error if nm else 'not named'}[/red]"
        if nm and nm.warnings:
            label += f" [yellow]⚠ {'; '.join(nm.warnings)}[/yellow]"
        t.add_row(str(c), f"{cl['usage_share']:.2%}", label, str(nm.coherence) if nm and nm.coherence else "",
                  " · ".join(keywords(cl, 6)))
    return t
