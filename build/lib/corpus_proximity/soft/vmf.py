"""Array kernels of the streaming von Mises-Fisher mixture: memberships, updates, initialisation.

The model: unit-normalised token activations x, k unit centres mu_j with one shared concentration
kappa = 1 / temperature and equal weights, so the posterior membership of x in cluster j is

    r_j(x) = softmax_j(cos(x, mu_j) / temperature)

and the M-step sets mu_j ∝ sum_x r_j(x) x. Everything here works on one in-memory block; the
streaming over chunk files, checkpoints and memory budget live in ``soft.stream``.
The two matrix products (x @ mu.T for the memberships, r.T @ x for the update) carry the cost;
the rest is a few vectorised passes over a [rows, k] array.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from corpus_proximity.errors import InputError
from corpus_proximity.soft.kernels import rows as kernels
from corpus_proximity.soft.kernels import stats as stats_kernels


def kmeanspp_sphere(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy spherical k-means++ (as scikit-learn's): at each step draw 2 + log k candidates with
    probability ∝ 1 - max cos to the centres chosen so far (= squared chord distance / 2) and keep
    the one that lowers the total the most. ``x`` has unit rows; returns [k, d] unit centres."""
    n = len(x)
    trials = 2 + int(np.log(k))
    centres = np.empty((k, x.shape[1]), dtype=np.float32)
    i = int(rng.integers(n))
    centres[0] = x[i]
    best = x @ x[i]
    for j in range(1, k):
        dist = np.clip(1.0 - best, 0.0, None).astype(np.float64)
        total = dist.sum()
        cand = rng.choice(n, size=trials, p=dist / total) if total > 0 else rng.integers(n, size=trials)
        sims = np.maximum(best[:, None], x @ x[cand].T)  # [n, trials]
        pick = int(np.argmin(np.clip(1.0 - sims, 0.0, None).sum(axis=0)))
        centres[j] = x[cand[pick]]
        best = sims[:, pick].copy()
    return centres


def random_init(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k distinct sample points (unit rows) as the initial centres."""
    return x[np.sort(rng.choice(len(x), size=k, replace=False))].copy()


def init_centres(x: np.ndarray, k: int, method: str, rng: np.random.Generator) -> np.ndarray:
    if len(x) < k:
        raise InputError(f"only {len(x)} usable positions to initialise {k} clusters; "
                         f"lower soft_cluster.n_clusters or give more data")
    return kmeanspp_sphere(x, k, rng) if method == "kmeans++" else random_init(x, k, rng)


EXP_SAFE_INV_T = 80.0
"""Unit rows and centres give |cos| <= 1, so exp(cos / T) cannot overflow float32 (e^88) while
1 / T <= 80: up to there the scores skip the row-max shift (one pass less)."""


class Scorer:
    """Unnormalised memberships of rows against fixed unit centres.

    :meth:`scores` takes rows ``x`` and their inverse norms (rows are not normalised: the [rows, k]
    products are scaled instead, k values a row, not d) and returns (E, offset):
    E[i, j] = exp(cos_ij / T - offset_i), with offset_i = 0 where that cannot overflow
    (1 / T <= ``EXP_SAFE_INV_T``) and max_j cos_ij / T otherwise, so the row's mixture
    log-likelihood log(mean_j exp(cos_ij / T)) (up to the shared vMF normaliser) is
    offset_i + log(sum_j E[i, j]) - log k. A zero row has cos = 0 with every centre."""

    def __init__(self, centres: np.ndarray, inv_t: float):
        self.k = centres.shape[0]
        self.inv_t = float(inv_t)
        self.shift = self.inv_t > EXP_SAFE_INV_T
        self.centres_t = np.ascontiguousarray(centres, dtype=np.float32).T  # [d, k], Fortran order

    def scores(self, x: np.ndarray, inv_norm: np.ndarray, out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        e = np.matmul(x, self.centres_t, out=out)
        bits = np.empty(self.k, dtype=np.int32)
        if not self.shift:
            kernels.exp_rows(e, inv_norm * np.float32(self.inv_t), bits)
            return e, np.zeros(len(x))
        e *= inv_norm[:, None]
        smax = np.empty(len(x), dtype=np.float32)
        kernels.shift_rows(e, np.float32(self.inv_t), smax)
        kernels.exp_rows(e, np.ones(len(x), dtype=np.float32), bits)
        return e, smax.astype(np.float64) * self.inv_t


def inverse_norms(norms: np.ndarray) -> np.ndarray:
    """float32 1 / norm, 0 for zero rows."""
    norms = np.asarray(norms, dtype=np.float32)
    return np.divide(np.float32(1.0), norms, out=np.zeros_like(norms), where=norms > 0)


def estep_sums(x: np.ndarray, inv_norm: np.ndarray, scorer: Scorer, rx: np.ndarray,
               scratch: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, float]:
    """Phase-1 sufficient statistics of a tile of rows ``x`` (any norm; ``inv_norm`` from
    :func:`inverse_norms`): adds sum_i r_i (x_i / |x_i|)^T to the float32 [k, d] ``rx`` in place
    and returns (sum_i r_i [k], sum of the rows' log-likelihoods). ``scratch``: optional buffers
    for the scores [rows, k] and the product [k, d]."""
    e_buf, kd = scratch if scratch is not None else (None, None)
    e, offset = scorer.scores(x, inv_norm, out=e_buf)
    z = np.empty(len(x))
    r = np.zeros(scorer.k)
    kernels.normalise_rows(e, z, inv_norm, r)  # e: memberships / |x|
    # numpy's product, not scipy's sgemm with beta = 1: the f2py wrapper holds the GIL
    rx += np.matmul(e.T, x, out=kd)
    ll = float((offset + np.log(z)).sum()) - len(x) * np.log(scorer.k)
    return r, ll


@dataclass
class StepwiseEM:
    """Running sufficient statistics of the online (stepwise) EM of Cappé & Moulines / Liang & Klein.

    After a chunk's sample with mean statistics (r̄ [k], r̄x [k, d]): s <- (1 - eta) s + eta r̄x,
    n <- (1 - eta) n + eta r̄, mu = s / |s|, with eta_t = (t + 2) ** -decay. Directions only depend on
    s, so starting from s = 0 the first update is a full EM step on the first sample."""

    centres: np.ndarray  # [k, d] float32, unit rows
    s: np.ndarray  # [k, d] float64
    n: np.ndarray  # [k] float64: running share of memberships per cluster
    t: int = 0

    @classmethod
    def start(cls, centres: np.ndarray) -> "StepwiseEM":
        k, d = centres.shape
        return cls(centres.astype(np.float32), np.zeros((k, d)), np.zeros(k), 0)

    def update(self, r: np.ndarray, rx_parts: np.ndarray, count: int, decay: float) -> tuple[float, np.ndarray]:
        """Apply one step for a chunk of ``count`` points with memberships summing to ``r`` [k] and
        float32 sums r x [workers, k, d] (added over the workers in float64, then zeroed); returns
        (eta, per-centre shift 1 - cos(old, new)). A centre no point has reached yet (|s| <= 1e-12)
        keeps its place. One numba pass (``kernels.stats.stepwise_em_step``): the numpy
        version's ~10 temporaries of [k, d] took ~0.25 ms a chunk, while the workers waited."""
        eta = (self.t + 2.0) ** -decay
        self.t += 1
        shift = np.empty(len(self.n))
        stats_kernels.stepwise_em_step(self.s, self.n, self.centres, rx_parts, np.asarray(r, dtype=np.float64),
                                       float(count), eta, shift)
        return eta, shift

    def repair(self, rng: np.random.Generator, dup_cos: float = 0.99, dead_share: float = 0.01) -> int:
        """Move redundant centres where they are needed; returns how many moved.

        A centre is redundant when it sits on another (cos > ``dup_cos``; the less used of the two
        moves) or is nearly unused (running share < ``dead_share`` / k). Each is replaced by splitting
        the most used cluster in two along a random direction (both halves keep half its statistics),
        so EM can separate two true clusters that one centre had been covering."""
        k = len(self.n)
        cos = self.centres.astype(np.float64) @ self.centres.T.astype(np.float64)
        np.fill_diagonal(cos, -1.0)
        redundant: list[int] = []
        for i, j in zip(*np.nonzero(np.triu(cos > dup_cos))):
            loser = int(i if self.n[i] < self.n[j] else j)
            if loser not in redundant:
                redundant.append(loser)
        redundant += [int(j) for j in np.flatnonzero(self.n * k < dead_share) if j not in redundant]
        for j in redundant:
            n = self.n.copy()
            n[redundant] = -1.0
            b = int(np.argmax(n))
            mu = self.centres[b].astype(np.float64)
            r = rng.standard_normal(len(mu))
            r -= (r @ mu) * mu
            r /= np.linalg.norm(r)
            size = np.linalg.norm(self.s[b]) / 2
            for idx, sign in ((b, 1.0), (j, -1.0)):
                v = mu + sign * 0.1 * r
                v /= np.linalg.norm(v)
                self.centres[idx], self.s[idx] = v.astype(np.float32), size * v
            self.n[b] = self.n[j] = self.n[b] / 2
        return len(redundant)


def sample_positions(valid: np.ndarray, max_points: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``max_points`` flat indices of True cells of ``valid``, without replacement, sorted."""
    flat = np.flatnonzero(valid.ravel())
    if len(flat) > max_points:
        flat = np.sort(rng.choice(flat, size=max_points, replace=False))
    return flat
