"""The judgement of one analysis window: is the candidate worse than the stable target it runs beside?

Each metric compares the two targets over the same window. Latency (TTFT, time per output token) fails
only if a one-sided Mann-Whitney U test is significant AND the candidate's quantile exceeds the stable
target's by more than the relative limit; a rate (errors, shed) fails only if a one-sided Fisher exact
test is significant AND the rate exceeds the limit. `alpha` is the window's false-FAIL budget, split
over the tests (Bonferroni), so equal targets fail a window with probability below `alpha`.

Documented minimum (docs/rollout.md, measured by tests/test_rollout_judgement.py at a 90/10 split):
50 latency samples and 300 requests per target and window. With them a 1.5x TTFT shift (lognormal,
sigma 0.5) fails >= 95% of windows and 5% errors against 0.5% fail >= 95%; equal targets fail < 1%.
Fewer samples make a metric INCONCLUSIVE, which never passes (decision.py sets the deadline).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum

from rollout.stats import (
    Binned,
    Samples,
    binned,
    binomial_sf,
    count_above,
    hypergeom_sf,
    mann_whitney_greater,
    quantile,
)


class Result(StrEnum):
    PASS = "Pass"
    FAIL = "Fail"
    INCONCLUSIVE = "Inconclusive"


class Metric(StrEnum):
    """The metrics an analysis may name; a latency metric reads one quantile of its samples."""

    TTFT_P50 = "ttft_p50"
    TTFT_P90 = "ttft_p90"
    TPOT_P50 = "tpot_p50"
    TPOT_P90 = "tpot_p90"
    ERROR_RATE = "error_rate"
    SHED_RATE = "shed_rate"

    @property
    def is_latency(self) -> bool:
        return self.value.startswith(("ttft", "tpot"))

    @property
    def q(self) -> float:
        return int(self.value.rsplit("_p", 1)[1]) / 100.0


@dataclass(frozen=True)
class MetricSpec:
    """One metric's limits. Latency: `relative_limit` is the largest candidate/stable quantile ratio and
    `absolute_limit` the candidate's largest quantile in seconds. Rates: `relative_limit` is the largest
    candidate/stable rate ratio, `min_increase` the smallest rise that counts (a rate near 0 doubles
    easily), `absolute_limit` the candidate's largest rate."""

    metric: Metric
    relative_limit: float | None = None  # None: the metric's default (1.2 for latency, 2.0 for rates)
    absolute_limit: float | None = None
    critical: bool = False
    min_increase: float = 0.01
    # A critical FAIL whose ratio reaches this is "clear" (immediate rollback); None: 1 + 2 x (limit - 1).
    clear_limit: float | None = None

    def __post_init__(self) -> None:
        if self.limit <= 0.0 or self.clear < self.limit or self.min_increase < 0.0:
            raise ValueError(f"{self.metric.value}: need 0 < limit <= clear limit and min_increase >= 0")
        if self.absolute_limit is not None and not (
            self.absolute_limit > 0.0 and (self.metric.is_latency or self.absolute_limit < 1.0)
        ):
            raise ValueError(f"{self.metric.value}: an absolute limit is > 0 (and a rate's < 1)")

    @property
    def limit(self) -> float:
        if self.relative_limit is not None:
            return self.relative_limit
        return 1.2 if self.metric.is_latency else 2.0

    @property
    def clear(self) -> float:
        return self.clear_limit if self.clear_limit is not None else 1.0 + 2.0 * (self.limit - 1.0)

    @property
    def tests(self) -> int:
        return 1 + (self.absolute_limit is not None)


DEFAULT_METRICS = (
    MetricSpec(Metric.TTFT_P50),
    MetricSpec(Metric.TTFT_P90, critical=True),
    MetricSpec(Metric.TPOT_P90),
    MetricSpec(Metric.ERROR_RATE, critical=True),
    MetricSpec(Metric.SHED_RATE),
)


@dataclass(frozen=True)
class JudgementConfig:
    """The analysis' statistics: the window's false-FAIL budget, the minimum samples and the metrics."""

    metrics: tuple[MetricSpec, ...] = DEFAULT_METRICS
    alpha: float = 0.01  # per window, over all tests together
    clear_alpha: float = 1e-4  # per test: a critical FAIL is "clear" only beyond this doubt
    min_samples: int = 50  # latency samples per target and window
    min_requests: int = 300  # requests per target and window, for the rates
    # Mean in-flight requests per endpoint, candidate over stable (or back), beyond which latency and
    # shedding are not compared: a target under more load queues more, whatever its model.
    max_load_imbalance: float = 1.5

    def __post_init__(self) -> None:
        if not 0.0 < self.clear_alpha <= self.alpha < 1.0:
            raise ValueError("need 0 < clear_alpha <= alpha < 1")
        if self.min_samples < 1 or self.min_requests < 1 or self.max_load_imbalance < 1.0:
            raise ValueError("minimum samples and requests are at least 1, the load imbalance at least 1.0")

    @property
    def alpha_per_test(self) -> float:
        return self.alpha / max(1, sum(m.tests for m in self.metrics))


@dataclass(frozen=True)
class TargetWindow:
    """What one target served in one window: latency samples (raw seconds or a Histogram) and counts.

    5xx, timeouts and shed (429) requests are disjoint parts of `requests`; `load` is the mean number
    of requests in flight per endpoint, when the caller knows it."""

    ttft: Samples = ()
    tpot: Samples = ()
    requests: int = 0
    errors_5xx: int = 0
    timeouts: int = 0
    shed: int = 0
    load: float | None = None


@dataclass(frozen=True)
class MetricResult:
    """One metric's outcome with every number behind it, for the rollout's status and Events."""

    metric: Metric
    result: Result
    reason: str
    critical: bool = False
    clear: bool = False  # a critical FAIL beyond doubt and far past its limit: roll back at once
    stable: float | None = None  # the quantile in seconds, or the rate
    candidate: float | None = None
    ratio: float | None = None  # candidate / stable; None when the stable value is 0
    p_value: float | None = None
    n_stable: int = 0
    n_candidate: int = 0
    limit: float = 0.0
    absolute_limit: float | None = None
    absolute_p_value: float | None = None
    cles: float | None = None  # latency: P(candidate slower than stable), 0.5 when alike


@dataclass(frozen=True)
class Verdict:
    """A window's verdict: FAIL if any metric fails, else INCONCLUSIVE if any is, else PASS."""

    result: Result
    clear_failure: bool
    reason: str
    alpha_per_test: float
    metrics: tuple[MetricResult, ...] = field(default=())

    def to_dict(self) -> dict[str, object]:
        """Plain data (str enums, floats, None, lists) for a status field, an Event or a log line."""
        data = asdict(self)
        data["metrics"] = list(data["metrics"])
        return data


def judge(stable: TargetWindow, candidate: TargetWindow, config: JudgementConfig | None = None) -> Verdict:
    """The verdict on one window, in which both targets served the same kind of traffic at once."""
    cfg = config or JudgementConfig()
    imbalance = _load_imbalance(stable, candidate, cfg)
    # Each side's samples are binned once, however many quantiles of them the metrics read.
    latency = {
        "ttft": (binned(stable.ttft, like=candidate.ttft), binned(candidate.ttft, like=stable.ttft)),
        "tpot": (binned(stable.tpot, like=candidate.tpot), binned(candidate.tpot, like=stable.tpot)),
    }
    results = tuple(
        _judge_latency(spec, *latency[spec.metric.value[:4]], cfg, imbalance)
        if spec.metric.is_latency
        else _judge_rate(spec, stable, candidate, cfg, imbalance if spec.metric is Metric.SHED_RATE else None)
        for spec in cfg.metrics
    )
    failed = [r for r in results if r.result is Result.FAIL]
    unsure = [r for r in results if r.result is Result.INCONCLUSIVE]
    clear = any(r.clear for r in failed)
    if failed:
        result, picked = Result.FAIL, [r for r in failed if r.clear] or failed
    elif unsure:
        result, picked = Result.INCONCLUSIVE, unsure
    else:
        result, picked = Result.PASS, []
    reason = "; ".join(r.reason for r in picked) or "every metric within its limits"
    return Verdict(result, clear, reason, cfg.alpha_per_test, results)


def _load_imbalance(stable: TargetWindow, candidate: TargetWindow, cfg: JudgementConfig) -> str | None:
    if stable.load is None or candidate.load is None or min(stable.load, candidate.load) <= 0.0:
        return None
    ratio = candidate.load / stable.load
    if max(ratio, 1.0 / ratio) <= cfg.max_load_imbalance:
        return None
    return f"load per endpoint differs {ratio:.2f}x (candidate/stable), over {cfg.max_load_imbalance:g}x"


def _ratio(candidate: float, stable: float) -> float | None:
    if stable > 0.0:
        return candidate / stable
    return 1.0 if candidate == 0.0 else None


def _judge_latency(
    spec: MetricSpec, s: Binned, c: Binned, cfg: JudgementConfig, imbalance: str | None
) -> MetricResult:
    name = spec.metric.value
    base = MetricResult(
        spec.metric, Result.INCONCLUSIVE, "", spec.critical, n_stable=s.n, n_candidate=c.n,
        limit=spec.limit, absolute_limit=spec.absolute_limit,
    )  # fmt: skip
    if min(s.n, c.n) < cfg.min_samples:
        return _with(
            base, f"{name}: too few samples (stable {s.n}, candidate {c.n}; need {cfg.min_samples} each)"
        )
    qs, qc = quantile(s, spec.metric.q), quantile(c, spec.metric.q)
    assert qs is not None and qc is not None
    test = mann_whitney_greater(s, c)
    ratio = _ratio(qc, qs)
    numbers = f"candidate {qc * 1000:.3g}ms vs stable {qs * 1000:.3g}ms" + (
        f" ({ratio:.2f}x)" if ratio else ""
    )
    stats = f"p={test.p_value:.2g}, n={c.n}/{s.n}"
    measured = _with(base, "", stable=qs, candidate=qc, ratio=ratio, p_value=test.p_value, cles=test.cles)
    if imbalance is not None:
        return _with(measured, f"{name}: not compared: {imbalance}")
    abs_p = _absolute_latency_p(c, spec) if spec.absolute_limit is not None else None
    beyond = ratio is None or ratio > spec.limit
    return _conclude(measured, spec, cfg, numbers, stats, beyond, abs_p)


def _absolute_latency_p(c: Binned, spec: MetricSpec) -> float:
    """Is the candidate's quantile above the absolute limit? More than (1 - q) of its samples above it."""
    assert spec.absolute_limit is not None
    return binomial_sf(count_above(c, spec.absolute_limit), c.n, 1.0 - spec.metric.q)


def _judge_rate(
    spec: MetricSpec,
    stable: TargetWindow,
    candidate: TargetWindow,
    cfg: JudgementConfig,
    imbalance: str | None,
) -> MetricResult:
    name = spec.metric.value
    if spec.metric is Metric.ERROR_RATE:
        xs, xc = stable.errors_5xx + stable.timeouts, candidate.errors_5xx + candidate.timeouts
    else:
        xs, xc = stable.shed, candidate.shed
    ns, nc = stable.requests, candidate.requests
    if min(xs, xc) < 0 or xs > ns or xc > nc:
        raise ValueError(f"{name}: counts must lie between 0 and the window's requests")
    base = MetricResult(
        spec.metric, Result.INCONCLUSIVE, "", spec.critical, n_stable=ns, n_candidate=nc,
        limit=spec.limit, absolute_limit=spec.absolute_limit,
    )  # fmt: skip
    if min(ns, nc) < cfg.min_requests:
        return _with(
            base, f"{name}: too few requests (stable {ns}, candidate {nc}; need {cfg.min_requests} each)"
        )
    rs, rc = xs / ns, xc / nc
    # Fisher's exact test, one-sided: given all errors of the window, are too many the candidate's?
    p = hypergeom_sf(xc, ns + nc, xs + xc, nc)
    ratio = _ratio(rc, rs)
    numbers = f"candidate {rc:.2%} vs stable {rs:.2%}" + (f" ({ratio:.2f}x)" if ratio else "")
    stats = f"p={p:.2g}, n={nc}/{ns}"
    measured = _with(base, "", stable=rs, candidate=rc, ratio=ratio, p_value=p)
    if imbalance is not None:
        return _with(measured, f"{name}: not compared: {imbalance}")
    beyond = (ratio is None or ratio > spec.limit) and rc - rs > spec.min_increase
    abs_p = binomial_sf(xc, nc, spec.absolute_limit) if spec.absolute_limit is not None else None
    return _conclude(measured, spec, cfg, numbers, stats, beyond, abs_p)


def _conclude(
    measured: MetricResult,
    spec: MetricSpec,
    cfg: JudgementConfig,
    numbers: str,
    stats: str,
    beyond: bool,
    abs_p: float | None,
) -> MetricResult:
    """PASS or FAIL from the relative test (significant AND beyond the limit) and the absolute one."""
    assert measured.p_value is not None
    significant = measured.p_value < cfg.alpha_per_test
    relative_fail = significant and beyond
    absolute_fail = abs_p is not None and abs_p < cfg.alpha_per_test
    head = f"{spec.metric.value}: {numbers}"
    if relative_fail or absolute_fail:
        clear = (
            spec.critical
            and relative_fail
            and measured.p_value < cfg.clear_alpha
            and (measured.ratio is None or measured.ratio >= spec.clear)
        )
        if relative_fail:
            why = f"over {spec.limit:g}x"
        elif spec.metric.is_latency:
            why = f"over the absolute {spec.absolute_limit:g}s"
        else:
            why = f"over the absolute {spec.absolute_limit:.2%}"
        return _with(
            measured, f"{head} {why} ({stats})", result=Result.FAIL, clear=clear, absolute_p_value=abs_p
        )
    # Why it passed: within the limit, or beyond it without enough evidence.
    why = "beyond the limit but not significant" if beyond else f"within {spec.limit:g}x"
    return _with(measured, f"{head} {why} ({stats})", result=Result.PASS, absolute_p_value=abs_p)


def _with(r: MetricResult, reason: str, **changes: object) -> MetricResult:
    return replace(r, reason=reason, **changes)  # type: ignore[arg-type]
