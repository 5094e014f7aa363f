"""rollout/config.py: a rollout's analysis as JudgementConfig and DecisionConfig, a verdict as status."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from api import validation as v
from api.parse import parse_object
from api.rollout import Analysis, InferenceRollout, MetricLimit, Phase
from api.rollout_status import AnalysisState, RolloutStatus, parse_status, status_dict
from api.yamlio import load_documents
from rollout.config import analysis_state, analysis_status, decision_config, decision_state, judgement_config
from rollout.decision import Decision, DecisionConfig, RolloutState
from rollout.judgement import DEFAULT_METRICS, JudgementConfig, Metric, MetricSpec, TargetWindow, judge
from tests.test_api_rollout import SAMPLE


def test_metric_names_are_the_judgements() -> None:
    assert tuple(m.value for m in Metric) == v.METRIC_NAMES


def test_defaults_map_to_the_modules_defaults() -> None:
    assert judgement_config(Analysis()) == JudgementConfig()
    assert decision_config(Analysis()) == DecisionConfig()


def test_the_sample_maps_field_by_field() -> None:
    (doc,) = load_documents(SAMPLE)
    rollout = parse_object(doc)
    assert isinstance(rollout, InferenceRollout)
    judgement = judgement_config(rollout)
    assert [m.metric for m in judgement.metrics] == [
        Metric.TTFT_P50, Metric.TTFT_P90, Metric.TPOT_P90, Metric.ERROR_RATE, Metric.SHED_RATE,
    ]  # fmt: skip
    errors = judgement.metrics[3]
    assert (errors.limit, errors.absolute_limit, errors.critical) == (2.0, 0.05, True)
    assert judgement.metrics[4] == MetricSpec(Metric.SHED_RATE)
    assert (judgement.min_samples, judgement.min_requests) == (50, 300)
    assert decision_config(rollout) == DecisionConfig(
        max_failed_checks=2, passes_per_step=1, max_inconclusive_windows=5, inconclusive_deadline_s=1800.0
    )


def test_every_spec_value_reaches_the_configs() -> None:
    analysis = Analysis(
        metrics=(MetricLimit("shed_rate", 3.0, 0.2, True, 0.05),),
        alpha=0.05,
        min_samples=80,
        min_requests=400,
        max_load_imbalance=2.0,
        failure_limit=3,
        passes_per_step=2,
        inconclusive_limit=7,
        inconclusive_deadline_s=60.0,
    )
    assert judgement_config(analysis) == JudgementConfig(
        metrics=(MetricSpec(Metric.SHED_RATE, 3.0, 0.2, True, 0.05),),
        alpha=0.05,
        min_samples=80,
        min_requests=400,
        max_load_imbalance=2.0,
    )
    assert decision_config(analysis) == DecisionConfig(3, 2, 7, 60.0)


def test_a_tiny_alpha_stays_a_valid_config() -> None:
    """clear_alpha <= alpha is the judgement's rule: the smallest alpha the CRD allows keeps it."""
    config = judgement_config(Analysis(alpha=v.ALPHA_MIN))
    assert config.clear_alpha == config.alpha == v.ALPHA_MIN


def test_valid_spec_limits_always_give_valid_metric_specs() -> None:
    """The CRD's bounds are within MetricSpec's: no spec it accepts makes the mapping raise."""
    for name in v.METRIC_NAMES:
        for relative in (1.0, 1000.0, None):
            absolute = 0.999999 if name in v.RATE_METRICS else 3600.0
            judgement_config(Analysis(metrics=(MetricLimit(name, relative, absolute, True, 1.0),)))


def test_verdict_becomes_last_analysis_in_camel_case() -> None:
    rng = random.Random(7)
    stable = TargetWindow(ttft=[rng.lognormvariate(-2, 0.5) for _ in range(400)], requests=400)
    candidate = TargetWindow(ttft=[3 * rng.lognormvariate(-2, 0.5) for _ in range(60)], requests=60)
    verdict = judge(stable, candidate, JudgementConfig(metrics=DEFAULT_METRICS[:2]))
    status = analysis_status(verdict, Decision.ROLLBACK, 1, "2026-12-02T00:00:00Z")
    assert (status["result"], status["decision"], status["step"]) == ("Fail", "Rollback", 1)
    p90 = status["metrics"][1]
    assert p90["metric"] == "ttft_p90" and p90["result"] == "Fail" and p90["ratio"] > 2.0
    assert {"pValue", "nStable", "nCandidate", "cles", "limit"} <= set(p90)
    assert p90["nStable"] == 400 and p90["nCandidate"] == 60
    assert "absoluteLimit" not in status["metrics"][0]  # None is left out


def test_status_round_trip_and_the_decision_state_it_resumes() -> None:
    status = RolloutStatus(
        phase=Phase.PROGRESSING,
        observed_generation=3,
        current_step=1,
        current_weight=25,
        started_at="2026-12-02T00:00:00Z",
        step_started_at="2026-12-02T00:05:00Z",
        applied_weights=(("tweet-summary", 75), ("sql-lora", 25)),
        state=AnalysisState(1, 0, 2, "2026-12-02T00:06:00Z"),
        message="step 2 of 4",
    )
    again, problems = parse_status(status_dict(status))
    assert again == status and problems == []
    resumed = decision_state(status.state)
    assert (resumed.failed_checks, resumed.inconclusive_windows) == (1, 2)
    assert resumed.inconclusive_since == datetime(2026, 12, 2, 0, 6, tzinfo=UTC).timestamp()
    assert analysis_state(resumed) == status.state
    assert analysis_state(RolloutState()) == AnalysisState()


def test_absent_or_broken_status_gives_defaults_and_the_paths() -> None:
    assert parse_status(None) == (RolloutStatus(), [])
    status, problems = parse_status(
        {"phase": "Done", "currentWeight": 150, "appliedWeights": [{"name": "a"}]}
    )
    assert status == RolloutStatus()
    assert [p.split(": ")[0] for p in problems] == [
        "status.phase",
        "status.currentWeight",
        "status.appliedWeights[0].weight",
    ]
