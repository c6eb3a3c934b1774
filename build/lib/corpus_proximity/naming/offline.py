"""The offline namer: distinctive keyphrases of each node against its siblings, no network.

Class-based TF-IDF (as in BERTopic's c-TF-IDF), with the node's siblings as the classes — the
parent's other children, or the other top-level clusters at depth 0:

    score(c, t) = tf(c, t) · log(1 + A / f(t)) · idf(t)

``tf(c, t)`` is the share of class ``c``'s chunks that contain term ``t`` (presence, so one long
docstring repeating a word cannot dominate), ``f(t)`` the sum of those shares over the siblings
and ``A`` their mean — the c-TF-IDF weight — and ``idf(t) = log(N / df(t))`` its rarity among
all ``N`` chunks of the corpus. The last factor matters deep in the tree, where a node may have a
single sibling: a word every news chunk has ("said", "year") is not what tells two sub-topics
apart, even if one uses it a little more. The top terms (uni- and bigrams, English stop words
removed) become a label like ``Football · Chelsea · Premier League``.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Sequence

import numpy as np
from scipy import sparse

from corpus_proximity.naming.base import NamingResult, NodeName, named_ids
from corpus_proximity.tree.tree import ClusterTree

TOKEN_PATTERN = r"(?u)\b[a-zA-Z][a-zA-Z0-9_]*(?:-[a-zA-Z0-9_]+)*[a-zA-Z0-9_]\b"
"""Words, hyphenated words (``high-definition``) and identifiers (``event_loop``) of two or more
characters; no bare numbers."""

# Words that are frequent in prose and docstrings alike but never name a topic; scikit-learn's
# English list lacks them. Python keywords/builtins in docstrings ("self", "none", "true") belong here.
EXTRA_STOP_WORDS = frozenset("""
said says say told also just like new use used uses using way ways make makes made get gets got
going want wants know think year years time times people mr mrs ms dont didnt doesnt isnt wasnt
self none true false return returns returned default argument arguments args kwargs str int bool
object objects function functions method methods class classes value values param params
parameter parameters optional given set sets called call calls example e g ie eg etc
ve ll re don isn doesn didn wasn aren couldn wouldn shouldn hasn haven
heard added according including expected week weeks month months day days today yesterday ago later
""".split())
ANCESTOR_DEMOTION = 0.6
"""Terms sharing a word with an ancestor's label are scored this much lower: the path already says it."""

LABEL_SEP = " · "


def vectorize(texts: Sequence[str], ngram_max: int = 2):
    """Binary chunk × term matrix (terms in >= 2 chunks) and its vocabulary, for the whole corpus."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer

    stop = sorted(ENGLISH_STOP_WORDS | EXTRA_STOP_WORDS)
    min_df = 2 if len(texts) >= 20 else 1
    cv = CountVectorizer(token_pattern=TOKEN_PATTERN, stop_words=stop, ngram_range=(1, ngram_max),
                         min_df=min_df, binary=True, dtype=np.float32)
    try:
        X = cv.fit_transform(texts)
    except ValueError:  # no term at all (every text is digits/punctuation)
        return sparse.csr_matrix((len(texts), 0), dtype=np.float32), np.array([], dtype=object)
    return X.tocsr(), cv.get_feature_names_out()


def class_tfidf(X: sparse.csr_matrix, groups: list[np.ndarray], idf: np.ndarray) -> np.ndarray:
    """Scores (n_groups × n_terms) of each group of rows of ``X`` against the other groups."""
    tf = np.vstack([np.asarray(X[g].mean(axis=0)).ravel() if len(g) else np.zeros(X.shape[1])
                    for g in groups])
    f = tf.sum(axis=0)
    avg = tf.sum(axis=1).mean()
    with np.errstate(divide="ignore", invalid="ignore"):
        sib_idf = np.where(f > 0, np.log1p(avg / np.where(f > 0, f, 1.0)), 0.0)
    return tf * sib_idf[None, :] * idf[None, :]


def word_forms(word: str) -> set[str]:
    """The word and its possible singulars, enough to see that "award"/"awards" and
    "cookie"/"cookies" say the same thing."""
    w = word.lower()
    forms = {w}
    if len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
        forms.add(w[:-1])
        if w.endswith("es"):
            forms.add(w[:-2])
        if w.endswith("ies"):
            forms.add(w[:-3] + "y")
    return forms


def _same(a: str, b: str) -> bool:
    return bool(word_forms(a) & word_forms(b))


def overlaps(t1: str, t2: str) -> bool:
    return any(_same(a, b) for a in t1.split() for b in t2.split())


def contains(big: str, small: str) -> bool:
    """Every word of ``small`` is in the longer phrase ``big``."""
    bw = big.split()
    return len(bw) > len(small.split()) and all(any(_same(a, b) for b in bw) for a in small.split())


def pick_terms(terms: Sequence[str], scores: np.ndarray, n: int) -> list[str]:
    """The ``n`` best terms with no word repeated (plurals count as the same word): a phrase that
    contains an already chosen term replaces it ("league" → "premier league"); any other overlap
    is skipped ("awards" after "award")."""
    chosen: list[str] = []
    for j in np.argsort(-scores, kind="stable")[:50 * n]:
        if scores[j] <= 0 or len(chosen) >= n:
            break
        term = str(terms[j])
        words = term.split()
        if any(_same(a, b) for i, a in enumerate(words) for b in words[i + 1:]):  # "data data"
            continue
        hit = [c for c in chosen if overlaps(term, c)]
        if not hit:
            chosen.append(term)
        elif len(hit) == 1 and contains(term, hit[0]):
            chosen[chosen.index(hit[0])] = term
    # a replacement may have left two phrases sharing a word; keep the first of each
    out: list[str] = []
    for term in chosen:
        if not any(overlaps(term, o) for o in out):
            out.append(term)
    return out


def surface_form(term: str, texts: Sequence[str]) -> str:
    """How ``term`` is written in ``texts`` most often; all-lowercase words are title-cased."""
    words = term.split()
    pattern = re.compile(r"\b" + r"\W+".join(re.escape(w) for w in words) + r"\b", re.IGNORECASE)
    forms: Counter[str] = Counter()
    for t in texts:
        forms.update(" ".join(m.split()) for m in pattern.findall(t))
        if sum(forms.values()) >= 50:
            break
    form = forms.most_common(1)[0][0] if forms else term
    form = " ".join(form.split())
    if form.islower() and not re.search(r"[_.]", form):  # identifiers (tkinter.ttk, event_loop) stay as written
        form = " ".join(w[:1].upper() + w[1:] for w in form.split())
    return form


class OfflineNamer:
    """Names every node by its distinctive keyphrases (see the module docstring)."""

    source = "offline"

    def __init__(self, n_keywords: int = 3, ngram_max: int = 2, n_hint_keywords: int | None = None):
        self.n_keywords = n_keywords
        self.ngram_max = ngram_max
        self.n_hint_keywords = n_hint_keywords or 2 * n_keywords

    def keywords(self, tree: ClusterTree, texts: Sequence[str]) -> dict[str, list[str]]:
        """Per node, its ``n_hint_keywords`` most distinctive terms (lowercase), best first."""
        X, vocab = vectorize(texts, self.ngram_max)
        if X.shape[1] == 0:
            return {nid: [] for nid in named_ids(tree)}
        df = np.asarray(X.sum(axis=0)).ravel()
        idf = np.log(X.shape[0] / np.maximum(df, 1.0))
        vocab_forms = [set().union(*(word_forms(w) for w in str(t).split())) for t in vocab]
        out: dict[str, list[str]] = {}
        path_words: dict[str, set[str]] = {tree.root.id: set()}
        for parent in [tree.root] + [tree.nodes[i] for i in named_ids(tree)]:  # parents before children
            if not parent.children:
                continue
            scores = class_tfidf(X, [tree.nodes[c].members for c in parent.children], idf)
            above = path_words[parent.id]
            if above:
                scores = scores * np.array([ANCESTOR_DEMOTION if f & above else 1.0 for f in vocab_forms])
            for cid, row in zip(parent.children, scores):
                out[cid] = pick_terms(vocab, row, self.n_hint_keywords)
                path_words[cid] = above.union(*(word_forms(w) for t in out[cid][:self.n_keywords]
                                                for w in t.split()))
        return {nid: out.get(nid, []) for nid in named_ids(tree)}

    def name_tree(self, tree: ClusterTree, texts: Sequence[str], embeddings: np.ndarray | None = None
                  ) -> NamingResult:
        kws = self.keywords(tree, texts)
        names: dict[str, NodeName] = {}
        for nid, terms in kws.items():
            node_texts = [texts[i] for i in tree.nodes[nid].members[:400]]
            shown = [surface_form(t, node_texts) for t in terms]
            label = LABEL_SEP.join(shown[:self.n_keywords]) or None
            names[nid] = NodeName(nid, label, self.source, keywords=shown,
                                  name_error=None if label else "no distinctive terms in this node's texts")
        _separate_duplicates(tree, names)
        return NamingResult(names)


def _separate_duplicates(tree: ClusterTree, names: dict[str, NodeName]) -> None:
    """Siblings whose labels coincide get their next keyword appended, so paths stay unambiguous."""
    for parent in [n for n in tree.nodes.values() if n.children]:
        seen: dict[str, str] = {}
        for cid in parent.children:
            rec = names[cid]
            if not rec.name:
                continue
            key = rec.name.lower()
            if key in seen:
                used = set(rec.name.split(LABEL_SEP))
                extra = [k for k in rec.keywords if k not in used]
                if extra:
                    rec.name = rec.name + LABEL_SEP + extra[0]
                else:
                    rec.warnings.append(f"same label as sibling {seen[key]}")
            seen.setdefault(rec.name.lower(), cid)
