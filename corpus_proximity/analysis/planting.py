"""A positive control for contamination: benchmark items planted into a copy of a corpus.

:func:`plant` copies a corpus's documents (tagged with a corpus stage, e.g. ``pretrain``) and adds,
as an extra source tagged with another stage (e.g. ``sft``), a seeded choice of benchmark items
verbatim, others paraphrased by word swaps (:func:`swap_words`: no 8-gram of the item survives),
and optionally filler documents (e.g. the benchmark's train split: same style, other questions).
The remaining benchmark items are absent. The truth (item → verbatim / paraphrased / absent) is
returned with the rows, so contamination.py's verdicts can be checked against it.
"""

from __future__ import annotations

import numpy as np

KINDS = ("verbatim", "paraphrased", "absent")


def swap_words(text: str) -> str:
    """A word-swap paraphrase: adjacent words swapped every four words (no 8-gram survives)."""
    w = text.split()
    for i in range(1, len(w) - 1, 4):
        w[i], w[i + 1] = w[i + 1], w[i]
    return " ".join(w)


def plant(docs: list[dict], items: list[str], n_verbatim: int, n_paraphrased: int, filler: list[str] = (),
          stage_field: str = "stage", corpus_stage: str = "pretrain", planted_stage: str = "sft",
          seed: int = 0) -> tuple[list[dict], list[str]]:
    """(corpus rows, kind per item). Rows are flat records ``{"id", "text", stage_field, "source",
    "topic"}``: the documents first (their source and topic kept), then the planted items and
    the filler, in a seeded order."""
    if n_verbatim + n_paraphrased > len(items):
        raise ValueError(f"cannot plant {n_verbatim} + {n_paraphrased} of {len(items)} items")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(items))
    kinds = np.full(len(items), "absent", dtype=object)
    kinds[order[:n_verbatim]] = "verbatim"
    kinds[order[n_verbatim:n_verbatim + n_paraphrased]] = "paraphrased"
    rows = [{"id": d["doc_id"], "text": d["text"], stage_field: corpus_stage,
             "source": str(d["metadata"].get("source", "")), "topic": str(d["metadata"].get("topic", ""))}
            for d in docs]
    extra = [{"id": f"planted-{kinds[i]}-{i}", "text": items[i] if kinds[i] == "verbatim" else swap_words(items[i]),
              stage_field: planted_stage, "source": "benchmark", "topic": str(kinds[i])}
             for i in sorted(order[:n_verbatim + n_paraphrased].tolist())]
    extra += [{"id": f"filler-{k}", "text": t, stage_field: planted_stage, "source": "filler", "topic": "filler"}
              for k, t in enumerate(filler)]
    rows += [extra[k] for k in rng.permutation(len(extra))]
    return rows, kinds.tolist()
