"""The canary judgement on generated samples (fixed seeds): false rollbacks, detection at the documented
minimum sample size, the exact tests against scipy, histograms against raw samples, and the state machine."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from rollout.decision import Decision, DecisionConfig, RolloutState, next_state
from rollout.judgement import (
    DEFAULT_METRICS,
    JudgementConfig,
    Metric,
    MetricSpec,
    Result,
    TargetWindow,
    Verdict,
    judge,
)
from rollout.stats import (
    Histogram,
    binned,
    binomial_sf,
    hypergeom_sf,
    mann_whitney_greater,
    quantile,
)

# The documented minimum per target and window (rollout/judgement.py, docs/rollout.md) at a 90/10 split:
# the candidate has the minimum, the stable target nine times as much.
MIN_SAMPLES = JudgementConfig().min_samples
MIN_REQUESTS = JudgementConfig().min_requests
SHARE = 9
WINDOWS = 1000
TTFT_MEDIAN, TTFT_SIGMA = 0.3, 0.5
TPOT_MEDIAN, TPOT_SIGMA = 0.03, 0.3
# Buckets 10% apart from 1 ms, finer than the 1.2x limit, as a TTFT histogram should be.
FINE_BUCKETS = tuple(0.001 * 1.1**i for i in range(120))


def _window(
    rng: np.random.Generator,
    *,
    n: int = MIN_SAMPLES,
    requests: int = MIN_REQUESTS,
    ttft_shift: float = 1.0,
    tpot_shift: float = 1.0,
    errors: tuple[float, float] = (0.005, 0.005),
) -> tuple[TargetWindow, TargetWindow]:
    """A stable and a candidate window: lognormal latencies, binomial errors; the candidate gets 1/10."""

    def target(count: int, reqs: int, ttft: float, tpot: float, error_rate: float) -> TargetWindow:
        return TargetWindow(
            ttft=ttft * rng.lognormal(math.log(TTFT_MEDIAN), TTFT_SIGMA, count),
            tpot=tpot * rng.lognormal(math.log(TPOT_MEDIAN), TPOT_SIGMA, count),
            requests=reqs,
            errors_5xx=int(rng.binomial(reqs, error_rate)),
        )

    stable = target(SHARE * n, SHARE * requests, 1.0, 1.0, errors[0])
    return stable, target(n, requests, ttft_shift, tpot_shift, errors[1])


def _verdicts(seed: int, config: JudgementConfig | None = None, **kwargs: object) -> list[Verdict]:
    rng = np.random.default_rng(seed)
    return [judge(*_window(rng, **kwargs), config) for _ in range(WINDOWS)]  # type: ignore[arg-type]


def _fail_rate(verdicts: list[Verdict]) -> float:
    return sum(v.result is Result.FAIL for v in verdicts) / len(verdicts)


# --- the acceptance numbers -------------------------------------------------------------------------------


def test_equal_targets_fail_under_one_percent_of_windows() -> None:
    verdicts = _verdicts(seed=1)
    assert _fail_rate(verdicts) < 0.01
    assert not any(v.clear_failure for v in verdicts)  # never an immediate rollback
    assert all(v.result is not Result.INCONCLUSIVE for v in verdicts)  # the minimum is enough to conclude


def test_equal_targets_rarely_roll_back_through_the_state_machine() -> None:
    # A rollout of 10 windows, rolled back after 2 failed checks: a false rollback needs 2 false FAILs.
    rng = np.random.default_rng(2)
    rollbacks = 0
    for _ in range(100):
        state = RolloutState()
        for _ in range(10):
            state = next_state(state, judge(*_window(rng)), DecisionConfig())
        rollbacks += state.decision is Decision.ROLLBACK
    assert rollbacks <= 1


def test_a_one_and_a_half_times_ttft_shift_is_detected_at_the_minimum_sample_size() -> None:
    verdicts = _verdicts(seed=3, ttft_shift=1.5)
    assert _fail_rate(verdicts) >= 0.95
    failed_ttft = {r.metric for v in verdicts for r in v.metrics if r.result is Result.FAIL}
    assert failed_ttft <= {Metric.TTFT_P50, Metric.TTFT_P90}


def test_five_percent_errors_against_half_a_percent_are_detected_at_the_minimum() -> None:
    verdicts = _verdicts(seed=4, errors=(0.005, 0.05))
    assert _fail_rate(verdicts) >= 0.95
    error = [next(r for r in v.metrics if r.metric is Metric.ERROR_RATE) for v in verdicts]
    assert sum(r.result is Result.FAIL for r in error) / WINDOWS >= 0.95


@pytest.mark.parametrize("rate", [0.005, 0.05])
def test_equal_error_rates_are_not_flagged(rate: float) -> None:
    # The default metrics, without latency samples (those metrics are inconclusive, and cost time).
    verdicts = _verdicts(seed=5, n=0, errors=(rate, rate))
    error = [next(r for r in v.metrics if r.metric is Metric.ERROR_RATE) for v in verdicts]
    assert all(r.result is not Result.INCONCLUSIVE for r in error)
    assert sum(r.result is Result.FAIL for r in error) / WINDOWS < 0.01


# --- the window's verdict ---------------------------------------------------------------------------------


def test_too_few_samples_is_inconclusive_never_a_pass() -> None:
    rng = np.random.default_rng(6)
    stable, _ = _window(rng)
    _, short = _window(rng, n=MIN_SAMPLES - 1, requests=MIN_REQUESTS - 1)
    verdict = judge(stable, short)
    assert verdict.result is Result.INCONCLUSIVE
    assert all(r.result is Result.INCONCLUSIVE for r in verdict.metrics)
    assert "too few samples" in verdict.reason and "too few requests" in verdict.reason
    # A candidate that got no traffic at all.
    assert judge(stable, TargetWindow()).result is Result.INCONCLUSIVE


def test_a_failure_outweighs_an_inconclusive_metric() -> None:
    rng = np.random.default_rng(7)
    stable, candidate = _window(rng, ttft_shift=3.0, requests=10)
    verdict = judge(stable, candidate)
    assert verdict.result is Result.FAIL
    assert {r.metric: r.result for r in verdict.metrics}[Metric.ERROR_RATE] is Result.INCONCLUSIVE


def test_a_verdict_carries_its_numbers() -> None:
    rng = np.random.default_rng(8)
    verdict = judge(*_window(rng, ttft_shift=3.0))
    assert verdict.result is Result.FAIL and verdict.clear_failure
    p90 = next(r for r in verdict.metrics if r.metric is Metric.TTFT_P90)
    assert p90.result is Result.FAIL and p90.critical and p90.clear
    assert p90.stable is not None and p90.candidate is not None and p90.ratio is not None
    assert p90.ratio == pytest.approx(p90.candidate / p90.stable)
    assert 2.0 < p90.ratio < 4.5
    assert p90.p_value is not None and p90.p_value < 1e-6
    assert (p90.n_stable, p90.n_candidate) == (SHARE * MIN_SAMPLES, MIN_SAMPLES)
    assert p90.limit == 1.2 and p90.cles is not None and p90.cles > 0.8
    assert "\n" not in p90.reason and "ttft_p90" in p90.reason and "over 1.2x" in p90.reason
    data = verdict.to_dict()
    assert data["result"] == "Fail"
    metrics = data["metrics"]
    assert isinstance(metrics, list) and metrics[1]["metric"] == "ttft_p90"
    assert verdict.alpha_per_test == pytest.approx(0.01 / len(DEFAULT_METRICS))


def test_a_significant_shift_within_the_limit_passes() -> None:
    # 10% slower is measurable with many samples, but within the 1.2x limit: no rollback for it.
    rng = np.random.default_rng(9)
    verdict = judge(*_window(rng, n=2000, ttft_shift=1.1))
    p50 = next(r for r in verdict.metrics if r.metric is Metric.TTFT_P50)
    assert p50.p_value is not None and p50.p_value < verdict.alpha_per_test
    assert p50.result is Result.PASS and "within 1.2x" in p50.reason


def test_a_faster_candidate_passes() -> None:
    rng = np.random.default_rng(10)
    verdicts = [judge(*_window(rng, ttft_shift=0.5, tpot_shift=0.5)) for _ in range(200)]
    assert not any(r.result is Result.FAIL for v in verdicts for r in v.metrics if r.metric.is_latency)


def test_a_non_critical_failure_is_not_clear() -> None:
    rng = np.random.default_rng(11)
    verdict = judge(*_window(rng, tpot_shift=3.0))
    tpot = next(r for r in verdict.metrics if r.metric is Metric.TPOT_P90)
    assert tpot.result is Result.FAIL and not tpot.clear
    assert verdict.result is Result.FAIL and not verdict.clear_failure


def test_absolute_limits() -> None:
    rng = np.random.default_rng(12)
    stable, candidate = _window(rng)
    p90 = float(np.quantile(np.asarray(candidate.ttft), 0.9))
    # The candidate's TTFT p90 is ~0.57 s: far above 0.3 s fails, above 2 s passes.
    tight = JudgementConfig(metrics=(MetricSpec(Metric.TTFT_P90, absolute_limit=p90 / 2),))
    loose = JudgementConfig(metrics=(MetricSpec(Metric.TTFT_P90, absolute_limit=2.0),))
    assert judge(stable, candidate, tight).result is Result.FAIL
    assert "absolute" in judge(stable, candidate, tight).reason
    assert judge(stable, candidate, loose).result is Result.PASS
    # 3% errors against an absolute limit of 1%, with the stable target just as bad.
    errors = TargetWindow(requests=1000, errors_5xx=30)
    rate = JudgementConfig(metrics=(MetricSpec(Metric.ERROR_RATE, absolute_limit=0.01),))
    assert judge(errors, errors, rate).result is Result.FAIL
    relative_only = JudgementConfig(metrics=(MetricSpec(Metric.ERROR_RATE),))
    assert judge(errors, errors, relative_only).result is Result.PASS


def test_timeouts_count_as_errors_and_shedding_is_its_own_rate() -> None:
    stable = TargetWindow(requests=3000, errors_5xx=5, timeouts=5, shed=10)
    candidate = TargetWindow(requests=300, timeouts=30, shed=1)
    metrics = (MetricSpec(Metric.ERROR_RATE, critical=True), MetricSpec(Metric.SHED_RATE))
    verdict = judge(stable, candidate, JudgementConfig(metrics=metrics))
    by_metric = {r.metric: r for r in verdict.metrics}
    assert by_metric[Metric.ERROR_RATE].result is Result.FAIL and by_metric[Metric.ERROR_RATE].clear
    assert by_metric[Metric.SHED_RATE].result is Result.PASS
    with pytest.raises(ValueError):
        judge(stable, TargetWindow(requests=10, errors_5xx=11), JudgementConfig(metrics=metrics))


def test_a_load_imbalance_makes_latency_inconclusive() -> None:
    rng = np.random.default_rng(13)
    stable, candidate = _window(rng, ttft_shift=3.0)
    stable = TargetWindow(stable.ttft, stable.tpot, stable.requests, stable.errors_5xx, load=2.0)
    busy = TargetWindow(candidate.ttft, candidate.tpot, candidate.requests, candidate.errors_5xx, load=6.0)
    verdict = judge(stable, busy)
    assert verdict.result is Result.INCONCLUSIVE
    latency = [r for r in verdict.metrics if r.metric.is_latency]
    assert all(r.result is Result.INCONCLUSIVE and "load per endpoint" in r.reason for r in latency)
    error = next(r for r in verdict.metrics if r.metric is Metric.ERROR_RATE)
    assert error.result is Result.PASS  # errors do not queue


def test_config_is_validated() -> None:
    with pytest.raises(ValueError):
        JudgementConfig(alpha=0.0)
    with pytest.raises(ValueError):
        JudgementConfig(min_samples=0)
    with pytest.raises(ValueError):
        MetricSpec(Metric.ERROR_RATE, absolute_limit=1.5)
    with pytest.raises(ValueError):
        MetricSpec(Metric.TTFT_P90, relative_limit=1.5, clear_limit=1.2)


# --- histograms -------------------------------------------------------------------------------------------


def _as_histograms(window: TargetWindow, buckets: tuple[float, ...]) -> TargetWindow:
    return TargetWindow(
        ttft=Histogram.of(np.asarray(window.ttft), buckets),
        tpot=Histogram.of(np.asarray(window.tpot), buckets),
        requests=window.requests,
        errors_5xx=window.errors_5xx,
    )


@pytest.mark.parametrize("shift", [1.0, 1.5, 3.0])
def test_histograms_give_the_verdicts_of_their_raw_samples(shift: float) -> None:
    rng = np.random.default_rng(14)
    agree = 0
    for _ in range(200):
        stable, candidate = _window(rng, ttft_shift=shift)
        raw = judge(stable, candidate)
        hist = judge(_as_histograms(stable, FINE_BUCKETS), _as_histograms(candidate, FINE_BUCKETS))
        agree += raw.result is hist.result
        for r, h in zip(raw.metrics, hist.metrics, strict=True):
            if r.metric.is_latency:
                assert h.ratio is not None and r.ratio is not None
                assert h.ratio == pytest.approx(r.ratio, rel=0.1)
                assert h.p_value is not None and r.p_value is not None
                assert abs(math.log10(h.p_value + 1e-300) - math.log10(r.p_value + 1e-300)) < 1.0
    assert agree >= 194


def test_raw_samples_are_compared_with_a_histogram_in_its_buckets() -> None:
    rng = np.random.default_rng(15)
    stable, candidate = _window(rng, ttft_shift=3.0)
    verdict = judge(_as_histograms(stable, FINE_BUCKETS), candidate)
    assert verdict.result is Result.FAIL and verdict.clear_failure


def test_replica_histograms_merge_by_bucket() -> None:
    rng = np.random.default_rng(16)
    a, b = rng.lognormal(0, 1, 300), rng.lognormal(0, 1, 200)
    merged = Histogram.of(a, FINE_BUCKETS).merge(Histogram.of(b, FINE_BUCKETS))
    assert merged == Histogram.of(np.concatenate([a, b]), FINE_BUCKETS)
    assert merged.total == 500 and merged.bounds[-1] == math.inf
    with pytest.raises(ValueError):
        merged.merge(Histogram.of(a, (1.0, 2.0)))
    with pytest.raises(ValueError):
        Histogram((1.0, 2.0), (5, 4))  # cumulative counts never fall


def test_histogram_quantiles_interpolate_within_the_bucket() -> None:
    h = Histogram((1.0, 2.0, 4.0, math.inf), (0, 10, 20, 20))
    assert quantile(binned(h), 0.5) == pytest.approx(2.0)
    assert quantile(binned(h), 0.25) == pytest.approx(1.5)
    assert quantile(binned(h), 0.75) == pytest.approx(3.0)
    # A quantile in the +Inf bucket reads as the highest finite bound, as Prometheus does.
    assert quantile(binned(Histogram((1.0, math.inf), (1, 10))), 0.9) == 1.0
    assert quantile(binned(()), 0.5) is None


# --- the exact statistics against scipy -------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_the_rank_test_matches_scipy_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    stable = np.round(rng.lognormal(0, 0.5, 450), 1)  # rounded: many ties
    candidate = np.round(rng.lognormal(0.1 * seed, 0.5, 50), 1)
    ours = mann_whitney_greater(binned(stable), binned(candidate))
    ref = scipy_stats.mannwhitneyu(candidate, stable, alternative="greater", method="asymptotic")
    assert ours.u == pytest.approx(ref.statistic)
    assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert ours.cles == pytest.approx(ref.statistic / (450 * 50))


def test_the_rank_test_of_identical_values_says_nothing() -> None:
    same = binned([1.0] * 60)
    assert mann_whitney_greater(same, same).p_value == 1.0
    assert mann_whitney_greater(same, binned(())).p_value == 1.0


@pytest.mark.parametrize(
    ("x_c", "n_c", "x_s", "n_s"),
    [(0, 300, 0, 2700), (1, 300, 13, 2700), (15, 300, 13, 2700), (3, 20, 1, 200)],
)
def test_the_fisher_tail_matches_scipy(x_c: int, n_c: int, x_s: int, n_s: int) -> None:
    ours = hypergeom_sf(x_c, n_c + n_s, x_c + x_s, n_c)
    ref = scipy_stats.fisher_exact([[x_c, n_c - x_c], [x_s, n_s - x_s]], alternative="greater").pvalue
    assert ours == pytest.approx(ref, rel=1e-9, abs=1e-300)


@pytest.mark.parametrize(
    ("x", "n", "p"), [(0, 50, 0.1), (2, 50, 0.1), (10, 50, 0.1), (30, 300, 0.01), (5, 5, 0.5)]
)
def test_the_binomial_tail_matches_scipy(x: int, n: int, p: float) -> None:
    assert binomial_sf(x, n, p) == pytest.approx(scipy_stats.binom.sf(x - 1, n, p), rel=1e-9, abs=1e-300)


# --- the state machine ------------------------------------------------------------------------------------


def _verdict(result: Result, clear: bool = False) -> Verdict:
    return Verdict(result, clear, f"a {result.value} window", 0.002)


def test_a_clear_critical_regression_rolls_back_at_once() -> None:
    rng = np.random.default_rng(17)
    verdict = judge(*_window(rng, ttft_shift=3.0))
    state = next_state(RolloutState(), verdict, DecisionConfig(max_failed_checks=5))
    assert state.decision is Decision.ROLLBACK
    assert state.reason.startswith("clear critical regression: ttft_p")


def test_failed_checks_roll_back_at_the_limit() -> None:
    config = DecisionConfig(max_failed_checks=3)
    state = RolloutState()
    for expected in (Decision.HOLD, Decision.HOLD, Decision.ROLLBACK):
        state = next_state(state, _verdict(Result.FAIL), config)
        assert state.decision is expected
    assert state.failed_checks == 3 and "3 failed checks" in state.reason
    # Rolled back is final, whatever comes next.
    assert next_state(state, _verdict(Result.PASS), config) == state


def test_failed_checks_count_across_steps() -> None:
    config = DecisionConfig(max_failed_checks=2)
    state = next_state(RolloutState(), _verdict(Result.FAIL), config)
    state = next_state(state, _verdict(Result.PASS), config)
    assert state.decision is Decision.PROMOTE_STEP
    assert next_state(state, _verdict(Result.FAIL), config).decision is Decision.ROLLBACK


def test_a_pass_promotes_and_passes_per_step_wait_for_more() -> None:
    assert (
        next_state(RolloutState(), _verdict(Result.PASS), DecisionConfig()).decision is Decision.PROMOTE_STEP
    )
    config = DecisionConfig(passes_per_step=2)
    state = next_state(RolloutState(), _verdict(Result.PASS), config)
    assert state.decision is Decision.HOLD and state.passes == 1
    state = next_state(state, _verdict(Result.PASS), config)
    assert state.decision is Decision.PROMOTE_STEP and state.passes == 0


def test_inconclusive_windows_fail_after_the_deadline() -> None:
    config = DecisionConfig(max_inconclusive_windows=3)
    state = RolloutState()
    for _ in range(2):
        state = next_state(state, _verdict(Result.INCONCLUSIVE), config)
        assert state.decision is Decision.HOLD
    state = next_state(state, _verdict(Result.INCONCLUSIVE), config)
    assert state.decision is Decision.ROLLBACK and "inconclusive for 3 windows" in state.reason


def test_a_conclusive_window_restarts_the_inconclusive_count() -> None:
    config = DecisionConfig(max_inconclusive_windows=2, passes_per_step=5)
    state = next_state(RolloutState(), _verdict(Result.INCONCLUSIVE), config)
    state = next_state(state, _verdict(Result.PASS), config)
    state = next_state(state, _verdict(Result.INCONCLUSIVE), config)
    assert state.decision is Decision.HOLD and state.inconclusive_windows == 1


def test_the_inconclusive_deadline_may_be_a_time() -> None:
    config = DecisionConfig(max_inconclusive_windows=100, inconclusive_deadline_s=600.0)
    state = next_state(RolloutState(), _verdict(Result.INCONCLUSIVE), config, now=1000.0)
    state = next_state(state, _verdict(Result.INCONCLUSIVE), config, now=1300.0)
    assert state.decision is Decision.HOLD and state.inconclusive_since == 1000.0
    state = next_state(state, _verdict(Result.INCONCLUSIVE), config, now=1600.0)
    assert state.decision is Decision.ROLLBACK


def test_a_candidate_without_traffic_is_never_promoted() -> None:
    rng = np.random.default_rng(18)
    stable, _ = _window(rng)
    state, decisions = RolloutState(), []
    for _ in range(10):
        state = next_state(state, judge(stable, TargetWindow()), DecisionConfig())
        decisions.append(state.decision)
    assert Decision.PROMOTE_STEP not in decisions
    assert decisions[-1] is Decision.ROLLBACK
