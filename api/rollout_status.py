"""InferenceRollout status <-> a frozen RolloutStatus: what a restarted controller resumes from.

The controller writes the whole status (status subresource); this reads back the fields it resumes
from, leniently: a field of the wrong type is reported, never fatal, since nothing but the controller
writes status. `lastAnalysis` and `conditions` stay plain data (rollout/config.py, api/sources/status.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from api import validation as v
from api.rollout import Phase
from api.validation import FieldErrors


@dataclass(frozen=True)
class AnalysisState:
    """rollout.decision.RolloutState's counters; `inconclusive_since` is RFC 3339 ("" for none)."""

    failed_checks: int = 0
    passes: int = 0
    inconclusive_windows: int = 0
    inconclusive_since: str = ""


@dataclass(frozen=True)
class RolloutStatus:
    phase: Phase = Phase.PENDING
    observed_generation: int = 0
    current_step: int = 0
    current_weight: int = 0
    started_at: str = ""
    step_started_at: str = ""
    applied_weights: tuple[tuple[str, int], ...] = ()  # (target model or pool, weight) as last written
    state: AnalysisState = AnalysisState()
    message: str = ""


def parse_status(raw: Mapping[str, Any] | None) -> tuple[RolloutStatus, list[str]]:
    """The status (defaults for what is absent or invalid) and the problems found, as `path: message`."""
    errors = FieldErrors()
    raw = raw or {}
    phase = errors.string(raw, "phase", "status.phase", enum=tuple(p.value for p in Phase))
    generation = errors.integer(
        raw, "observedGeneration", "status.observedGeneration", minimum=0, maximum=2**63 - 1
    )
    step = errors.integer(
        raw, "currentStep", "status.currentStep", minimum=0, maximum=v.ROLLOUT_STEPS_MAX - 1
    )
    weight = errors.integer(raw, "currentWeight", "status.currentWeight", minimum=0, maximum=100)
    weights: list[tuple[str, int]] = []
    items = raw.get("appliedWeights") or []
    if not isinstance(items, list):
        errors.add("status.appliedWeights", "must be a list")
        items = []
    for i, item in enumerate(items):
        path = f"status.appliedWeights[{i}]"
        if not isinstance(item, Mapping):
            errors.add(path, "must be an object")
            continue
        name = errors.string(item, "name", f"{path}.name", required=True)
        value = errors.integer(
            item, "weight", f"{path}.weight", required=True, minimum=0, maximum=v.WEIGHT_MAX
        )
        if name is not None and value is not None:
            weights.append((name, value))
    counts = errors.mapping(raw, "analysisState", "status.analysisState", required=False) or {}
    failed, passes, inconclusive = (
        errors.integer(counts, key, f"status.analysisState.{key}", minimum=0, maximum=v.COUNT_MAX) or 0
        for key in ("failedChecks", "passes", "inconclusiveWindows")
    )
    since = _time(counts, "inconclusiveSince", "status.analysisState", errors)
    state = AnalysisState(failed, passes, inconclusive, since)
    status = RolloutStatus(
        phase=Phase(phase) if phase is not None else Phase.PENDING,
        observed_generation=generation or 0,
        current_step=step or 0,
        current_weight=weight or 0,
        started_at=_time(raw, "startedAt", "status", errors),
        step_started_at=_time(raw, "stepStartedAt", "status", errors),
        applied_weights=tuple(weights),
        state=state,
        message=errors.string(raw, "message", "status.message") or "",
    )
    return status, errors.items


def _time(raw: Mapping[str, Any], key: str, path: str, errors: FieldErrors) -> str:
    value = raw.get(key)
    if value is None:
        return ""
    if isinstance(value, str) or hasattr(value, "tzinfo"):
        return v.rfc3339(value)
    errors.add(f"{path}.{key}", "must be an RFC 3339 time")
    return ""


def status_dict(status: RolloutStatus) -> dict[str, Any]:
    """The status fields in Kubernetes form; parse_status reads them back to `status`."""
    out: dict[str, Any] = {
        "phase": str(status.phase),
        "observedGeneration": status.observed_generation,
        "currentStep": status.current_step,
        "currentWeight": status.current_weight,
        "appliedWeights": [{"name": n, "weight": w} for n, w in status.applied_weights],
    }
    for key, value in (("startedAt", status.started_at), ("stepStartedAt", status.step_started_at)):
        if value:
            out[key] = value
    s = status.state
    state: dict[str, Any] = {
        "failedChecks": s.failed_checks,
        "passes": s.passes,
        "inconclusiveWindows": s.inconclusive_windows,
    }
    if s.inconclusive_since:
        state["inconclusiveSince"] = s.inconclusive_since
    out["analysisState"] = state
    if status.message:
        out["message"] = status.message
    return out
