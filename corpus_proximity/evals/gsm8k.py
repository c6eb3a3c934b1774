"""Eval samples and their graders: the `Sample` protocol and GSM8K.

A sample knows its question, its reference answer and how to grade a completion. GSM8K is read
from the official JSONL files (``{"question", "answer"}`` per line, the answer ending in
``#### <number>``) at a user path, or from the Hugging Face hub (``openai/gsm8k``) where it is
reachable; no package registry carries it.

Grading: the final answer of a completion is the number after whichever comes *last* of its
last ``####``, ``\\boxed{}`` and closing phrases ("the answer is", "Answer:", "A:") — a model that
writes ``#### 180`` mid-way and ends on ``\\boxed{540}`` answered 540 — else its last number;
thousands separators, currency signs, units, percent signs and trailing zeros are ignored
("$1,000.00 dollars" == 1000), simple fractions are evaluated ("3/4" and LaTeX ``\\frac{3}{4}`` == 0.75),
and GSM8K's calculator annotations (``<<16-3=13>>``) are dropped first.
A completion whose final answer is LaTeX (``\\boxed{\\dfrac{1}{2}}``, ``\\boxed{540\\text{ dollars}}``)
is also checked with HuggingFace's ``math-verify``, which parses and compares it symbolically.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Protocol

from corpus_proximity.errors import InputError
from corpus_proximity.text.corpus import read_jsonl

GSM8K_HUB = "openai/gsm8k"
GSM8K_SOURCE = "https://github.com/openai/grade-school-math (grade_school_math/data/test.jsonl)"

_CALC = re.compile(r"<<[^<>]*>>")
_FRAC = re.compile(r"\\[dt]?frac\{\s*(-?[\d.,]+)\s*\}\{\s*(-?[\d.,]+)\s*\}")
# a number: optional sign (not a minus between two operands: "16-3"), thousands groups, decimals,
# or a simple fraction
_NUM = re.compile(r"(?<![\w.])-?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s?/\s?\d+(?:\.\d+)?)?|(?<![\w.])-?\.\d+")
_CLOSERS = [
    re.compile(r"\\boxed\{([^{}]*)\}"),
    re.compile(r"(?:final answer|the answer)\s*(?:is|=|:)\s*:?\s*([^\n]*)", re.IGNORECASE),
    re.compile(r"(?:^|\n)\s*(?:answer|a)\s*:\s*([^\n]*)", re.IGNORECASE),
]


class Sample(Protocol):
    """One eval item: what is asked, what is right, how a completion is graded."""

    id: str
    question: str

    @property
    def reference(self) -> str: ...

    def grade(self, completion: str) -> tuple[bool, str | None]:
        """(correct, the answer read from the completion or None when it has none)."""
        ...


def parse_number(text: str) -> Fraction | None:
    """The first number in ``text`` as an exact fraction, or None."""
    m = _NUM.search(text)
    return _to_fraction(m.group(0)) if m else None


def _to_fraction(tok: str) -> Fraction | None:
    tok = tok.replace("$", "").replace(",", "").replace(" ", "")
    try:
        if "/" in tok:
            num, den = tok.split("/")
            return Fraction(num) / Fraction(den) if Fraction(den) != 0 else None
        return Fraction(tok)
    except (ValueError, ZeroDivisionError):
        return None


def extract_answer(completion: str) -> str | None:
    """The final numeric answer of a completion, normalised ("1000", "0.75", "-3"), or None."""
    if not completion:
        return None
    text = _FRAC.sub(r"\1/\2", _CALC.sub("", completion))
    candidates: list[tuple[int, str]] = []
    if "####" in text:
        at = text.rindex("####")
        candidates.append((at, text[at + 4:]))
    for pat in _CLOSERS:
        found = list(pat.finditer(text))
        if found:
            candidates.append((found[-1].start(), found[-1].group(1)))
    for _, c in sorted(candidates, key=lambda t: -t[0]):  # the last anchor in the text is the answer
        value = parse_number(c)
        if value is not None:
            return format_number(value)
    nums = [v for v in (_to_fraction(m.group(0)) for m in _NUM.finditer(text)) if v is not None]
    return format_number(nums[-1]) if nums else None


def format_number(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    return f"{float(value):.10g}"


def same_number(a: str | None, b: str | None, rel_tol: float = 1e-6) -> bool:
    if a is None or b is None:
        return False
    fa, fb = _to_fraction(a), _to_fraction(b)
    if fa is None or fb is None:
        return False
    return abs(fa - fb) <= rel_tol * max(1, abs(fb))


@dataclass(frozen=True)
class GSM8KSample:
    id: str
    """``gsm8k-<split>-<line index>``: stable across runs, joins rollouts to questions."""
    question: str
    answer: str
    """The reference solution, ending in ``#### <number>``."""

    @property
    def reference(self) -> str:
        ref = extract_answer(self.answer)
        if ref is None:
            raise InputError(f"GSM8K sample {self.id}: its answer has no final number after '####'")
        return ref

    def grade(self, completion: str) -> tuple[bool, str | None]:
        predicted = extract_answer(completion or "")
        if same_number(predicted, self.reference):
            return True, predicted
        return ("\\boxed" in (completion or "") and latex_equal(self.reference, completion)), predicted


def latex_equal(reference: str, completion: str) -> bool:
    """math-verify's symbolic check of the completion's (boxed) final answer against the reference.

    Its signal-based timeouts are off: they only work in the main thread, and rollouts grade in
    worker threads; a GSM8K answer is a single short expression."""
    import logging

    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # it warns on every call that timeouts are off
    gold = parse(f"${reference}$", parsing_timeout=None)
    pred = parse(completion, parsing_timeout=None)
    return bool(gold and pred and verify(gold, pred, timeout_seconds=None))


def load_gsm8k(path: str | Path | None, split: str = "test", limit: int | None = None) -> list[GSM8KSample]:
    """GSM8K from a JSONL file, a folder holding ``<split>.jsonl``, or the hub (path None)."""
    if path is None:
        rows, source = _from_hub(split), f"hf://{GSM8K_HUB}/{split}"
    else:
        p = Path(path)
        if p.is_dir():
            p = p / f"{split}.jsonl"
        if not p.is_file():
            raise InputError(f"rollout.data_path: {p} does not exist; give GSM8K's {split}.jsonl "
                             f"(from {GSM8K_SOURCE}) or the folder holding it")
        rows, source = read_jsonl(p), p.stem
    out = []
    for i, r in enumerate(rows[:limit] if limit else rows):
        if not isinstance(r, dict) or not isinstance(r.get("question"), str) or not isinstance(r.get("answer"), str):
            raise InputError(f"{path or GSM8K_HUB}: row {i + 1} needs string fields 'question' and 'answer' "
                             f"(GSM8K's format)")
        out.append(GSM8KSample(id=f"gsm8k-{source if path is None else split}-{i}", question=r["question"],
                               answer=r["answer"]))
    if not out:
        raise InputError(f"{path or GSM8K_HUB}: no GSM8K samples")
    for s in out[:1]:
        s.reference  # fail early on a file that is not GSM8K
    return out


def _from_hub(split: str) -> list[dict]:
    try:
        from huggingface_hub import hf_hub_download

        f = hf_hub_download(GSM8K_HUB, f"main/{split}-00000-of-00001.parquet", repo_type="dataset")
        import pandas as pd

        return pd.read_parquet(f)[["question", "answer"]].to_dict(orient="records")
    except Exception as e:  # offline, blocked, or HF_HUB_OFFLINE=1 without a cached copy
        raise InputError(f"GSM8K is not reachable on the Hugging Face hub ({type(e).__name__}); download "
                         f"{GSM8K_SOURCE} and set rollout.data_path to it") from None
