"""InferenceRollout spec -> the judgement's and the decision's configs; a verdict -> status.lastAnalysis.

Pure mappings, so the controller only wires them: api/rollout.py holds the validated spec,
rollout/judgement.py and rollout/decision.py the statistics and the state machine.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from api.rollout import Analysis, InferenceRollout, MetricLimit
from api.rollout_status import AnalysisState
from rollout.decision import Decision, DecisionConfig, RolloutState
from rollout.judgement import DEFAULT_METRICS, JudgementConfig, Metric, MetricSpec, Verdict

DEFAULT_CLEAR_ALPHA = JudgementConfig().clear_alpha


def _analysis(spec: InferenceRollout | Analysis) -> Analysis:
    return spec.analysis if isinstance(spec, InferenceRollout) else spec


def metric_spec(limit: MetricLimit) -> MetricSpec:
    """One spec metric; unset limits keep MetricSpec's defaults."""
    extra = {} if limit.min_increase is None else {"min_increase": limit.min_increase}
    return MetricSpec(
        Metric(limit.name),
        relative_limit=limit.relative_limit,
        absolute_limit=limit.absolute_limit,
        critical=limit.critical,
        **extra,
    )


def judgement_config(spec: InferenceRollout | Analysis) -> JudgementConfig:
    """The window's statistics; no metrics in the spec means the judgement's defaults."""
    a = _analysis(spec)
    return JudgementConfig(
        metrics=tuple(metric_spec(m) for m in a.metrics) if a.metrics else DEFAULT_METRICS,
        alpha=a.alpha,
        # A "clear" failure needs more certainty than any failure: never a larger level than alpha.
        clear_alpha=min(DEFAULT_CLEAR_ALPHA, a.alpha),
        min_samples=a.min_samples,
        min_requests=a.min_requests,
        max_load_imbalance=a.max_load_imbalance,
    )


def decision_config(spec: InferenceRollout | Analysis) -> DecisionConfig:
    a = _analysis(spec)
    return DecisionConfig(
        max_failed_checks=a.failure_limit,
        passes_per_step=a.passes_per_step,
        max_inconclusive_windows=a.inconclusive_limit,
        inconclusive_deadline_s=a.inconclusive_deadline_s,
    )


_STATUS_KEYS = {
    "p_value": "pValue",
    "n_stable": "nStable",
    "n_candidate": "nCandidate",
    "absolute_limit": "absoluteLimit",
    "absolute_p_value": "absolutePValue",
}


def analysis_status(verdict: Verdict, decision: Decision, step: int, time: str) -> dict[str, Any]:
    """status.lastAnalysis (api/crd_schema_rollout.py): the verdict's to_dict() in camelCase.

    A number not measured (None) is left out: a JSON merge patch, as status is written, deletes nulls."""
    data = verdict.to_dict()
    raw: list[dict[str, Any]] = data["metrics"]  # type: ignore[assignment]
    metrics = [{_STATUS_KEYS.get(k, k): value for k, value in m.items() if value is not None} for m in raw]
    return {
        "time": time,
        "step": step,
        "result": data["result"],
        "clearFailure": data["clear_failure"],
        "reason": data["reason"],
        "alphaPerTest": data["alpha_per_test"],
        "decision": str(decision),
        "metrics": metrics,
    }


def decision_state(state: AnalysisState, reason: str = "resumed from status") -> RolloutState:
    """status.analysisState as the decision's state; its clock is Unix time (a restart keeps it)."""
    since = (
        datetime.fromisoformat(state.inconclusive_since.replace("Z", "+00:00")).timestamp()
        if state.inconclusive_since
        else None
    )
    return RolloutState(
        reason=reason,
        failed_checks=state.failed_checks,
        passes=state.passes,
        inconclusive_windows=state.inconclusive_windows,
        inconclusive_since=since,
    )


def analysis_state(state: RolloutState) -> AnalysisState:
    """The decision's counters for status.analysisState (`inconclusive_since` read as Unix time)."""
    since = state.inconclusive_since
    return AnalysisState(
        state.failed_checks,
        state.passes,
        state.inconclusive_windows,
        datetime.fromtimestamp(since, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if since is not None else "",
    )
