"""The statistics behind the judgement: a rank test and quantiles on raw or binned samples, exact tails.

Everything works on a `Binned` form (distinct sorted values with counts), so raw samples and Prometheus
histograms go through the same code: a histogram bucket is a group of tied values at its upper bound.
A rank test only needs the order of values, so the bucket's representative value does not change it; the
tie correction accounts for the loss of resolution. Pure numpy and math: see docs/rollout.md for why
scipy is only a test dependency.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Histogram:
    """Prometheus-style cumulative buckets: `counts[i]` observations <= `bounds[i]`; the last may be inf.

    Replicas merge by a bucket-wise sum (`merge`), as Prometheus sums `_bucket` series."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.bounds) != len(self.counts) or not self.bounds:
            raise ValueError("a histogram needs one cumulative count per bucket bound")
        if any(b >= a for a, b in zip(self.bounds[1:], self.bounds, strict=False)):
            raise ValueError("bucket bounds must be strictly increasing")
        if self.counts[0] < 0 or any(b < a for a, b in zip(self.counts, self.counts[1:], strict=False)):
            raise ValueError("cumulative bucket counts must be non-negative and non-decreasing")

    @property
    def total(self) -> int:
        return self.counts[-1]

    def merge(self, other: Histogram) -> Histogram:
        """The bucket-wise sum: the histogram of both sets of observations."""
        if other.bounds != self.bounds:
            raise ValueError("histograms with different bucket bounds cannot be merged")
        return Histogram(self.bounds, tuple(a + b for a, b in zip(self.counts, other.counts, strict=True)))

    @classmethod
    def of(cls, values: Sequence[float] | FloatArray, bounds: Sequence[float]) -> Histogram:
        """Bins raw observations as Prometheus would (`le`: a value equal to a bound falls in its bucket)."""
        edges = tuple(float(b) for b in bounds)
        if edges[-1] != math.inf:
            edges = (*edges, math.inf)
        ranks = np.searchsorted(np.asarray(edges), np.asarray(values, dtype=np.float64), side="left")
        per_bucket = np.bincount(ranks, minlength=len(edges))
        return cls(edges, tuple(int(c) for c in np.cumsum(per_bucket)))


Samples = Sequence[float] | FloatArray | Histogram


@dataclass(frozen=True)
class Binned:
    """Distinct sorted values with their counts, and how to read quantiles from them."""

    values: FloatArray
    counts: IntArray
    # For a histogram, each value's bucket lower bound (quantiles interpolate within the bucket);
    # None for raw samples.
    lower: FloatArray | None = None
    raw: FloatArray | None = None

    @property
    def n(self) -> int:
        return int(self.counts.sum())


def binned(samples: Samples, like: Samples | None = None) -> Binned:
    """The Binned form of samples; raw samples compared with a histogram are first binned the same way."""
    if isinstance(samples, Histogram):
        return _from_histogram(samples)
    if isinstance(like, Histogram):
        return _from_histogram(Histogram.of(samples, like.bounds))
    raw = np.sort(np.asarray(samples, dtype=np.float64))
    if raw.size and not np.all(np.isfinite(raw)):
        raise ValueError("latency samples must be finite")
    values, counts = np.unique(raw, return_counts=True)
    return Binned(values, counts.astype(np.int64), None, raw)


def _from_histogram(h: Histogram) -> Binned:
    bounds = np.asarray(h.bounds, dtype=np.float64)
    cumulative = np.asarray(h.counts, dtype=np.int64)
    per_bucket: IntArray = np.diff(cumulative, prepend=np.int64(0))
    # A first bucket's lower edge is 0 (latencies are non-negative), like Prometheus' histogram_quantile.
    lower = np.concatenate(([min(0.0, bounds[0])], bounds[:-1]))
    keep = per_bucket > 0
    return Binned(bounds[keep], per_bucket[keep], lower[keep], None)


def quantile(b: Binned, q: float) -> float | None:
    """The q-quantile: linear between order statistics for raw samples, within the bucket for histograms.

    None without samples. A quantile that falls in the +Inf bucket reads as the highest finite bound, as
    Prometheus reads it."""
    if b.n == 0:
        return None
    if b.raw is not None:
        return float(np.quantile(b.raw, q))
    assert b.lower is not None
    cum = np.cumsum(b.counts)
    rank = q * b.n
    i = min(int(np.searchsorted(cum, rank, side="left")), len(cum) - 1)
    upper, lower = float(b.values[i]), float(b.lower[i])
    if math.isinf(upper):
        return lower
    before = float(cum[i - 1]) if i else 0.0
    return lower + (upper - lower) * (rank - before) / float(b.counts[i])


@dataclass(frozen=True)
class RankTest:
    """One-sided Mann-Whitney U: is the candidate stochastically greater (slower) than the stable target?"""

    u: float  # pairs (candidate, stable) with the candidate greater, ties counted half
    p_value: float
    # Common-language effect size: P(candidate > stable) + P(tie) / 2; 0.5 when they are alike.
    cles: float
    n_stable: int
    n_candidate: int

    @property
    def rank_biserial(self) -> float:
        return 2.0 * self.cles - 1.0


def mann_whitney_greater(stable: Binned, candidate: Binned) -> RankTest:
    """The normal approximation with tie correction and continuity correction, on tied groups of values.

    Exact enough from ~20 samples a side; it needs no equal sample sizes (the stable target's larger
    share only makes its side of the test more precise)."""
    n1, n2 = stable.n, candidate.n
    if n1 == 0 or n2 == 0:
        return RankTest(0.0, 1.0, 0.5, n1, n2)
    values = np.union1d(stable.values, candidate.values)
    c1 = np.zeros(values.size, dtype=np.int64)
    c2 = np.zeros(values.size, dtype=np.int64)
    c1[np.searchsorted(values, stable.values)] = stable.counts
    c2[np.searchsorted(values, candidate.values)] = candidate.counts
    tied = (c1 + c2).astype(np.float64)
    before = np.cumsum(tied) - tied
    midrank = before + (tied + 1.0) / 2.0
    r2 = float(np.dot(c2.astype(np.float64), midrank))
    u2 = r2 - n2 * (n2 + 1) / 2.0
    n = n1 + n2
    tie_term = float(np.sum(tied**3 - tied)) / (n * (n - 1)) if n > 1 else 0.0
    var = n1 * n2 / 12.0 * ((n + 1) - tie_term)
    cles = u2 / (n1 * n2)
    if var <= 0.0:  # every observation tied: no evidence either way
        return RankTest(u2, 1.0, cles, n1, n2)
    z = (u2 - n1 * n2 / 2.0 - 0.5) / math.sqrt(var)
    return RankTest(u2, normal_sf(z), cles, n1, n2)


def normal_sf(z: float) -> float:
    """P(Z >= z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def _tail_sum(log_pmf: Callable[[int], float], ratio: Callable[[int], float], start: int, stop: int) -> float:
    """Sums a pmf from `start` towards `stop`, either way, where terms only shrink (from the mode out)."""
    step = 1 if stop >= start else -1
    term = math.exp(log_pmf(start))
    total, k = term, start
    while k != stop:
        term *= ratio(k)
        k += step
        total += term
        if term <= total * 1e-17:
            break
    return total


def hypergeom_sf(x: int, population: int, successes: int, draws: int) -> float:
    """P(X >= x) for X ~ Hypergeometric: the one-sided Fisher exact test's p-value."""
    lo, hi = max(0, draws - (population - successes)), min(successes, draws)
    if x <= lo:
        return 1.0
    if x > hi:
        return 0.0
    rest = population - successes

    def log_pmf(k: int) -> float:
        return _log_comb(successes, k) + _log_comb(rest, draws - k) - _log_comb(population, draws)

    mode = (draws + 1) * (successes + 1) // (population + 2)
    if x >= mode:
        up = _tail_sum(
            log_pmf, lambda k: (successes - k) * (draws - k) / ((k + 1) * (rest - draws + k + 1)), x, hi
        )
        return min(1.0, up)
    down = _tail_sum(
        log_pmf, lambda k: k * (rest - draws + k) / ((successes - k + 1) * (draws - k + 1)), x - 1, lo
    )
    return max(0.0, 1.0 - down)


def binomial_sf(x: int, n: int, p: float) -> float:
    """P(X >= x) for X ~ Binomial(n, p): the exact one-sided test of a rate against a fixed limit."""
    if x <= 0:
        return 1.0
    if x > n or p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    odds = p / (1.0 - p)

    def log_pmf(k: int) -> float:
        return _log_comb(n, k) + k * math.log(p) + (n - k) * math.log1p(-p)

    mode = int((n + 1) * p)
    if x >= mode:
        return min(1.0, _tail_sum(log_pmf, lambda k: (n - k) / (k + 1) * odds, x, n))
    return max(0.0, 1.0 - _tail_sum(log_pmf, lambda k: k / (n - k + 1) / odds, x - 1, 0))


def count_above(b: Binned, limit: float) -> int:
    """Observations above `limit`; for a histogram only whole buckets above it count (never overstated)."""
    if b.lower is None:
        return int(b.counts[b.values > limit].sum())
    return int(b.counts[b.lower >= limit].sum())
