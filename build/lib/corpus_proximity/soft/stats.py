"""Per-cluster statistics accumulated while memberships stream past, in memory that does not grow
with the data: usage, position and token distributions, exemplars with their context, and the
sums behind the intervention vectors (weighted LDA with Ledoit-Wolf shrinkage).

Every accumulator keeps its arrays as attributes named in ``ARRAYS`` so a checkpoint is just
``state()`` saved to an NPZ and ``load_state()`` after a crash.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from corpus_proximity.soft.kernels import rows as kernels
from corpus_proximity.soft.kernels import stats as stats_kernels


class _Stateful:
    ARRAYS: tuple[str, ...] = ()

    def state(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}{name}": np.asarray(getattr(self, name)) for name in self.ARRAYS}

    def load_state(self, state: dict[str, np.ndarray], prefix: str) -> None:
        """Take over the arrays of ``state`` (as read from a checkpoint): they are updated in place
        from then on, not copied (the LDA reservoir alone is lda_sample x d floats)."""
        for name in self.ARRAYS:
            setattr(self, name, np.asarray(state[f"{prefix}{name}"]))


@dataclass
class ChunkMemberships:
    """The stored (sparse) memberships of one chunk, sorted by (sequence, position, cluster)."""

    chunk: int
    seq: np.ndarray  # int32 [nnz]
    pos: np.ndarray  # int32 [nnz]
    cluster: np.ndarray  # int32 [nnz]
    value: np.ndarray  # float32 [nnz]
    token_ids: np.ndarray  # int32 [n_seq, seq_len]
    valid: np.ndarray  # bool [n_seq, seq_len]: positions that were assigned
    _lookup: tuple | None = field(default=None, repr=False, compare=False)

    def _tables(self) -> tuple:
        """What the context kernel looks contexts up in, read-only (one compiled variant, whether the
        chunk came from a file or not): tokens, valid positions, the entries' sequences, positions,
        clusters and memberships. Made once, as both exemplar lists look contexts up in the same chunk."""
        if self._lookup is None:
            self._lookup = tuple(kernels.read_only(a) for a in (self.token_ids.astype(np.int32, copy=False),
                                                                self.valid, self.seq, self.pos, self.cluster,
                                                                self.value))
        return self._lookup

    def context(self, seq: np.ndarray, pos: np.ndarray, cluster: np.ndarray, window: int, top_m: int, k: int):
        """For exemplars (seq, pos, cluster): tokens of the window around them (-1 outside the
        sequence or on unassigned positions), the cluster's membership at each window position,
        and every stored (cluster, membership) at the exemplar's own position
        (``kernels.stats.exemplar_context``)."""
        n = len(seq)
        tokens, values = np.empty((n, 2 * window + 1), dtype=np.int32), np.empty((n, 2 * window + 1), dtype=np.float32)
        others_c, others_v = np.empty((n, top_m), dtype=np.int32), np.empty((n, top_m), dtype=np.float32)
        if not n:
            return tokens, values, others_c, others_v
        stats_kernels.exemplar_context(*self._tables(), *(kernels.read_only(np.asarray(a, dtype=np.int32))
                                                          for a in (seq, pos, cluster)),
                                       k, tokens, values, others_c, others_v)
        return tokens, values, others_c, others_v


@dataclass
class ExemplarCandidates:
    """Exemplar candidates of a chunk, in the order they came, with their location and context, so
    the lists can take them without the chunk's memberships."""

    cluster: np.ndarray  # int32 [c]
    key: np.ndarray  # float64 [c]
    loc: np.ndarray  # int64 [c, 3]: chunk, sequence, position
    value: np.ndarray  # float32 [c]: the membership
    ctx_tokens: np.ndarray  # int32 [c, 2 window + 1] (ChunkMemberships.context)
    ctx_values: np.ndarray  # float32 [c, 2 window + 1]
    others_c: np.ndarray  # int32 [c, top_m]
    others_v: np.ndarray  # float32 [c, top_m]

    @classmethod
    def of_chunk(cls, cm: ChunkMemberships, seq: np.ndarray, pos: np.ndarray, cluster: np.ndarray, key: np.ndarray,
                 value: np.ndarray, n: int, window: int, top_m: int, k: int) -> "ExemplarCandidates":
        """Chunk ``cm``'s candidates (``seq``, ``pos``, ``cluster``, ``key``, membership ``value``, in
        order) for lists of ``n`` per cluster: those among their cluster's n largest keys in the
        chunk (no other can make the lists, whatever comes before or after), with their context
        (one numba call: ``kernels.stats.exemplar_candidates``)."""
        return cls(*stats_kernels.exemplar_candidates(cm.chunk, seq, pos, cluster, key, value, n, k, *cm._tables(),
                                                      2 * window + 1, top_m))

    def arrays(self) -> tuple[np.ndarray, ...]:
        return (self.cluster, self.key, self.loc, self.value, self.ctx_tokens, self.ctx_values, self.others_c,
                self.others_v)


class Exemplars(_Stateful):
    """Per cluster, the ``n`` candidates with the largest keys seen so far, with their context.

    Keys = memberships gives the top-k exemplars; keys = uniform random numbers drawn once per
    position gives a reservoir sample (the n smallest/largest of i.i.d. keys are a uniform sample
    without replacement, whatever the order of arrival)."""

    ARRAYS = ("key", "loc", "value", "ctx_tokens", "ctx_values", "others_c", "others_v")

    def __init__(self, k: int, n: int, window: int, top_m: int):
        self.k, self.n, self.window, self.top_m = k, n, window, top_m
        self.key = np.full((k, n), -np.inf)
        self.loc = np.full((k, n, 3), -1, dtype=np.int64)  # chunk, sequence, position
        self.value = np.zeros((k, n), dtype=np.float32)
        self.ctx_tokens = np.full((k, n, 2 * window + 1), -1, dtype=np.int32)
        self.ctx_values = np.zeros((k, n, 2 * window + 1), dtype=np.float32)
        self.others_c = np.full((k, n, top_m), -1, dtype=np.int32)
        self.others_v = np.zeros((k, n, top_m), dtype=np.float32)

    def floor(self) -> np.ndarray:
        """Per cluster, the key a candidate must beat (-inf while there is room)."""
        return self.key[:, -1].copy() if self.n else np.full(self.k, np.inf)

    def offer(self, cand: "ExemplarCandidates") -> None:
        """Candidates in the order the chunks came: the ``n`` largest keys per cluster stay (ties:
        earlier first), the new ones with their context (``kernels.stats.insert_exemplars``)."""
        if self.n == 0 or not len(cand.key):
            return
        stats_kernels.insert_exemplars(self.key, self.loc, self.value, self.ctx_tokens, self.ctx_values, self.others_c,
                                       self.others_v, *cand.arrays())

    def records(self, c: int, decode, sequence_ids) -> list[dict]:
        out = []
        for j in range(self.n):
            if not np.isfinite(self.key[c, j]):
                break
            chunk, seq, pos = (int(v) for v in self.loc[c, j])
            ids = self.ctx_tokens[c, j].tolist()
            others = [{"cluster": int(a), "membership": round(float(b), 4)}
                      for a, b in zip(self.others_c[c, j], self.others_v[c, j]) if a >= 0 and a != c]
            out.append({"chunk": chunk, "sequence": seq, "position": pos,
                        "sequence_id": sequence_ids(chunk, seq), "membership": round(float(self.value[c, j]), 4),
                        "token": decode([ids[self.window]])[0], "context_ids": ids,
                        "context": decode(ids), "context_membership": [round(float(v), 4) for v in self.ctx_values[c, j]],
                        "focus": self.window, "other_clusters": others})
        return out


def pair_slots(rows: int, top_m: int) -> int:
    """Slots of a chunk's (token, cluster) hash table: a power of two, at least 2^16, and at least
    twice what one sub-tile of ``rows`` rows can add, so a sub-tile never fills it beyond half."""
    return 1 << max(16, int(2 * rows * top_m - 1).bit_length())


@dataclass
class ChunkParts:
    """One chunk's phase-2 sums (``kernels.rows.phase2_rows``), added to the statistics by
    the main thread in chunk order, so the result depends on neither the workers nor thread timing."""

    acc: np.ndarray  # [k + 1] sums of memberships, then of log z + offsets
    pos_hist: np.ndarray  # [k, seq_len] stored membership mass per position
    stored: np.ndarray  # [k] stored entries
    hard: np.ndarray  # [k] positions whose top cluster it is
    xsum: np.ndarray  # [k, d] float32: confident positions' weighted vectors
    wsum: np.ndarray  # [k] their weights
    pair_keys: np.ndarray  # [slots] token * k + cluster, -1 = empty (slots: ``pair_slots``)
    pair_w: np.ndarray  # [slots] stored membership mass of each key
    fill: np.ndarray  # [1] used slots
    used: np.ndarray  # [slots // 2] which (the kernel never fills the table beyond half)
    spilled: list  # (keys, weights) of the table's contents emptied before

    @classmethod
    def zeros(cls, k: int, seq_len: int, d: int, slots: int = 2 ** 16) -> "ChunkParts":
        return cls(np.zeros(k + 1), np.zeros((k, seq_len)), np.zeros(k, dtype=np.int64), np.zeros(k, dtype=np.int64),
                   np.zeros((k, d), dtype=np.float32), np.zeros(k), np.full(slots, -1, dtype=np.int64),
                   np.zeros(slots), np.zeros(1, dtype=np.int64), np.zeros(slots // 2, dtype=np.int64), [])

    def clear(self) -> None:
        """Zero every sum and empty the table, for reuse."""
        for a in (self.acc, self.pos_hist, self.stored, self.hard, self.xsum, self.wsum):
            a.fill(0)
        self._take()
        self.spilled = []

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays (not counting spilled pairs, which are bounded by the data)."""
        return sum(v.nbytes for v in vars(self).values() if isinstance(v, np.ndarray))

    def spill(self) -> None:
        """Empty the table into the spilled list (``kernels.rows.phase2_block`` stops when
        the next sub-tile could fill it beyond half, so linear probing stays short)."""
        self.spilled.append(self._take())

    def _take(self) -> tuple[np.ndarray, np.ndarray]:
        used = self.used[:self.fill[0]]
        out = self.pair_keys[used], self.pair_w[used]
        self.pair_keys[used] = -1  # a key's weight is set when it takes a slot
        self.fill[0] = 0
        return out

    def pairs(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The (token * k + cluster, mass) pairs, emptying the table; a key can recur."""
        return [*self.spilled, self._take()]


class UsageStats(_Stateful):
    """How much each cluster is used, where in the sequence, on which tokens."""

    ARRAYS = ("soft", "hard", "stored", "n_positions", "loglik", "pos_hist", "token_counts",
              "pair_keys", "pair_weights")

    def __init__(self, k: int):
        self.k = k
        self.soft = np.zeros(k)  # sum of memberships
        self.hard = np.zeros(k, dtype=np.int64)  # positions whose top cluster it is
        self.stored = np.zeros(k, dtype=np.int64)  # stored (sparse) entries
        self.n_positions = np.zeros((), dtype=np.int64)
        self.loglik = np.zeros(())
        self.pos_hist = np.zeros((k, 0))  # [k, seq_len] stored membership mass per position
        self.token_counts = np.zeros(0, dtype=np.int64)  # [vocab] all assigned positions
        # stored membership mass per (token * k + cluster): a hash table (linear probing, -1 = empty
        # slot, at most half full) that every chunk's pairs go into, in chunk order
        self.pair_keys = np.zeros(0, dtype=np.int64)
        self.pair_weights = np.zeros(0)
        self._n_pairs = 0
        self._compact: tuple[np.ndarray, np.ndarray] | None = None

    def fit_positions(self, seq_len: int) -> None:
        """Room in the position histogram for sequences of ``seq_len``."""
        if self.pos_hist.shape[1] < seq_len:
            self.pos_hist = np.pad(self.pos_hist, ((0, 0), (0, seq_len - self.pos_hist.shape[1])))

    def add_tokens(self, valid_tokens: np.ndarray) -> None:
        """Count the tokens at a chunk's assigned positions."""
        if len(valid_tokens):
            top = int(valid_tokens.max())
            if top >= len(self.token_counts):
                self.token_counts = np.pad(self.token_counts, (0, top + 1 - len(self.token_counts)))
            stats_kernels.add_counts(self.token_counts, valid_tokens)  # not a bincount over the vocabulary

    def take_pairs(self, parts: "ChunkParts") -> None:
        """A chunk's (token, cluster) pairs into the table, in the order the chunk added them: those it
        spilled, then its table's (``kernels.stats.merge_table``), which is left empty."""
        for keys, weights in parts.spilled:
            self._merge(keys, weights)
        parts.spilled = []
        n = int(parts.fill[0])
        if n:
            self._merge(np.zeros(0, dtype=np.int64), np.zeros(0), room=n)
            self._n_pairs += stats_kernels.merge_table(self.pair_keys, self.pair_weights, parts.pair_keys, parts.pair_w,
                                                       parts.used, n)
            parts.fill[0] = 0

    def _merge(self, keys: np.ndarray, weights: np.ndarray, room: int = 0) -> None:
        """Pairs into the table in one numba call (sorting the pairs seen so far with the new ones,
        as np.unique did every million pairs, cost more than the products at k = 512 on text's
        thousands of distinct tokens per chunk). The table doubles before it could pass half full
        (with ``room`` more pairs to come)."""
        self._compact = None
        need = self._n_pairs + len(keys) + room
        if 2 * need > len(self.pair_keys):
            self._resize(max(2 * need, 2 * len(self.pair_keys)))
        self._n_pairs += stats_kernels.merge_pairs(self.pair_keys, self.pair_weights, keys, weights)

    def _resize(self, least: int) -> None:
        """A table of at least ``least`` (and 2^16) slots holding the same pairs: each weight moves as
        it is, so no sum changes."""
        keys, weights = self.pair_keys, self.pair_weights
        slots = 1 << max(16, int(least - 1).bit_length())
        self.pair_keys, self.pair_weights = np.full(slots, -1, dtype=np.int64), np.zeros(slots)
        self._n_pairs = stats_kernels.merge_pairs(self.pair_keys, self.pair_weights, keys, weights)

    def load_state(self, state: dict[str, np.ndarray], prefix: str) -> None:
        """Also takes over the sorted unique pairs earlier versions saved: they fill their arrays, so
        the first merge rebuilds them as a table."""
        super().load_state(state, prefix)
        self._compact = None
        self._n_pairs = int((self.pair_keys >= 0).sum())

    @property
    def table_nbytes(self) -> int:
        """Bytes of the (token, cluster) table, which grows with the distinct pairs seen."""
        return self.pair_keys.nbytes + self.pair_weights.nbytes

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """The (token * k + cluster, mass) pairs, sorted by key (made once per change)."""
        if self._compact is None:
            used = np.flatnonzero(self.pair_keys >= 0)
            order = np.argsort(self.pair_keys[used])
            self._compact = self.pair_keys[used][order], self.pair_weights[used][order]
        return self._compact

    def top_tokens(self, c: int, n: int) -> tuple[list[tuple[int, float]], list[tuple[int, float, float]]]:
        """(most stored mass: [(token, mass)], most distinctive: [(token, lift, mass)]) for cluster c;
        lift = share of the cluster's mass on the token / share of all positions holding it,
        among tokens with at least 3 positions' worth of mass."""
        keys, weights = self.pairs()
        mine = keys % self.k == c
        toks, w = keys[mine] // self.k, weights[mine]
        if not len(w):
            return [], []
        freq = np.argsort(-w, kind="stable")[:n]
        total = max(float(w.sum()), 1e-12)
        lift = (w / total) / (self.token_counts[toks] / max(int(self.n_positions), 1))
        lift = np.where(w >= 3, lift, 0.0)
        dist = [i for i in np.argsort(-lift, kind="stable")[:n] if lift[i] > 0]
        return ([(int(toks[i]), float(w[i])) for i in freq],
                [(int(toks[i]), float(lift[i]), float(w[i])) for i in dist])


class LdaStats(_Stateful):
    """Sums for the intervention vectors: per-cluster membership-weighted sums of the confident
    positions (exact, streamed) and a reservoir sample of them for the shared covariance."""

    ARRAYS = ("wsum", "xsum", "res_key", "res_x", "res_c", "res_w", "res_heap")

    def __init__(self, k: int, d: int, sample: int):
        self.wsum = np.zeros(k)
        self.xsum = np.zeros((k, d))
        self.res_key = np.full(sample, np.inf)  # reservoir keeps the smallest keys
        self.res_x = np.zeros((sample, d), dtype=np.float32)
        self.res_c = np.full(sample, -1, dtype=np.int32)
        self.res_w = np.zeros(sample, dtype=np.float32)
        self.res_heap = np.arange(sample)  # its slots as a max-heap by key (all inf: any order is one)

    def threshold(self) -> float:
        """Keys at or above this cannot enter the reservoir any more."""
        return float(self.res_key[self.res_heap[0]])

    def load_state(self, state: dict[str, np.ndarray], prefix: str) -> None:
        """Also rebuilds the heap where a state has none."""
        if f"{prefix}res_heap" not in state:
            state = {**state, f"{prefix}res_heap": np.empty(len(state[f"{prefix}res_key"]), dtype=np.int64)}
            stats_kernels.heapify(state[f"{prefix}res_heap"], state[f"{prefix}res_key"])
        super().load_state(state, prefix)

    def add_sample(self, key: np.ndarray, raw: np.ndarray, cluster: np.ndarray, weight: np.ndarray) -> None:
        """Offer reservoir candidates (raw vectors: float32, or float16 as uint16 bits, kept as
        float32), in order: the ``lda_sample`` smallest keys stay, each new one in the slot of the
        largest it beats (``kernels.stats.reservoir_offer``)."""
        if len(key):
            stats_kernels.reservoir_offer(self.res_key, self.res_x, self.res_c, self.res_w, self.res_heap, key, raw,
                                          cluster, weight)


def ledoit_wolf_cov(x: np.ndarray, block: int = 4096) -> tuple[np.ndarray, float]:
    """Ledoit-Wolf shrunk covariance of centred rows ``x`` (as sklearn's ``ledoit_wolf`` with
    ``assume_centered=True``), in blocks of rows so only [d, d] float64 arrays are held:
    S = x'x / n, mu = tr(S) / d, delta = |S - mu I|^2 / d, beta = (sum |x_i|^4 / n - |S|^2) / (n d),
    shrinkage = min(beta, delta) / delta, Sigma = (1 - shrinkage) S + shrinkage mu I."""
    n, d = x.shape
    s = np.zeros((d, d))
    fourth = 0.0
    for lo in range(0, n, block):
        b = np.asarray(x[lo:lo + block], dtype=np.float64)
        s += b.T @ b
        fourth += float((np.einsum("ij,ij->i", b, b) ** 2).sum())
    s /= n
    mu = np.trace(s) / d
    s2 = float((s * s).sum())
    delta = (s2 - 2 * mu * np.trace(s) + d * mu * mu) / d
    beta = min((fourth / n - s2) / (n * d), delta)
    shrink = 0.0 if delta <= 0 else beta / delta
    s *= 1 - shrink
    s[np.diag_indices(d)] += shrink * mu
    return s, float(shrink)


def intervention_vectors(lda: LdaStats, centres: np.ndarray, min_positives: int = 2) -> dict[str, np.ndarray]:
    """Weighted LDA direction per cluster, cluster vs the rest.

    Positives of c: positions whose top cluster is c with membership >= lda_min_membership;
    negatives: the other clusters' such positions; weights: those memberships. mu+ and mu- are
    their weighted means (exact, streamed). Two-class LDA is w = S_c^-1 (mu+ - mu-) with S_c the
    pooled covariance of the two classes, and S_c = T - p(1 - p) (mu+ - mu-)(mu+ - mu-)^T where T is
    the covariance of all confident positions and p the positives' weight share, so by
    Sherman-Morrison w ∝ T^-1 (mu+ - mu-): one Ledoit-Wolf-shrunk T (from the reservoir sample)
    serves every cluster. w is normalised and signed so moving along it goes from the others
    towards the cluster. Recorded: separation d' of the sampled positives and negatives projected on
    w (difference of weighted means / root mean of their variances), the positives'
    mean squared distance to mu+ (within_variance), cosines between clusters' vectors
    (cross_correlation) and to the centre. Clusters with fewer than ``min_positives`` sampled
    positives get a zero vector and NaN statistics."""
    k, d = lda.xsum.shape
    have = lda.res_c >= 0
    xs, cs, ws = lda.res_x[have], lda.res_c[have], lda.res_w[have].astype(np.float64)
    n_pos = np.bincount(cs, minlength=k)
    out = {"intervention_vectors": np.zeros((k, d), dtype=np.float32), "separation": np.full(k, np.nan),
           "within_variance": np.full(k, np.nan), "n_positives": n_pos, "shrinkage": np.array(np.nan),
           "cross_correlation": np.full((k, k), np.nan), "cos_to_centre": np.full(k, np.nan)}
    ok = (n_pos >= min_positives) & (lda.wsum > 0)
    if ok.sum() < 2:
        return out
    wtot = lda.wsum.sum()
    mu_pos = lda.xsum / np.maximum(lda.wsum, 1e-300)[:, None]
    total = lda.xsum.sum(axis=0)
    mu_neg = (total[None, :] - lda.xsum) / np.maximum(wtot - lda.wsum, 1e-300)[:, None]
    scale = np.sqrt(ws / ws.mean()).astype(np.float32)[:, None]
    cov, shrink = ledoit_wolf_cov((xs - (total / wtot).astype(np.float32)) * scale)
    diff = mu_pos[ok] - mu_neg[ok]
    w = np.linalg.solve(cov, diff.T).T
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    out["intervention_vectors"][ok] = w
    proj = xs @ w.T.astype(np.float32)  # [n sampled, clusters with a vector]
    for col, c in enumerate(np.flatnonzero(ok)):
        pos = cs == c
        mp, mn = (np.average(proj[m, col], weights=ws[m]) for m in (pos, ~pos))
        vp, vn = (np.average((proj[m, col] - mu) ** 2, weights=ws[m]) for m, mu in ((pos, mp), (~pos, mn)))
        out["separation"][c] = (mp - mn) / np.sqrt(max((vp + vn) / 2, 1e-300))
    resid = xs - mu_pos[cs].astype(np.float32)
    sq = np.einsum("ij,ij->i", resid, resid).astype(np.float64)
    out["within_variance"][ok] = (np.bincount(cs, weights=ws * sq, minlength=k) /
                                  np.maximum(np.bincount(cs, weights=ws, minlength=k), 1e-300))[ok]
    out["shrinkage"] = np.array(shrink)
    corr = np.full((k, k), np.nan)
    corr[np.ix_(ok, ok)] = w @ w.T
    out["cross_correlation"] = corr
    out["cos_to_centre"][ok] = np.einsum("ij,ij->i", w, centres[ok].astype(np.float64))
    return out


def model_space_vectors(vectors: np.ndarray, whitening) -> dict[str, np.ndarray]:
    """Intervention vectors (unit rows, the clustering's coordinates) in the model's coordinates.

    Without whitening they already are. With PCA whitening (``activations.Whitening``) a direction
    has two images, and they differ: ``intervention_vectors_model``, the displacement to add to a
    hidden state so that its whitened image moves along the vector (steering), and
    ``probe_vectors_model``, the linear readout that scores a hidden state as the vector scores
    its whitened image (probing). Both unit rows; zero rows stay zero."""
    if whitening is None:
        return {"intervention_vectors_model": vectors.copy(), "probe_vectors_model": vectors.copy()}
    out = {}
    for name, mapped in (("intervention_vectors_model", whitening.steering(vectors)),
                         ("probe_vectors_model", whitening.readout(vectors))):
        norms = np.linalg.norm(mapped, axis=1, keepdims=True)
        out[name] = np.divide(mapped, norms, out=np.zeros_like(mapped), where=norms > 0).astype(np.float32)
    return out
