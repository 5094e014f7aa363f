"""`readiness-filter`: drop endpoints whose metrics are missing or too old to trust.

Parameters: `maxMetricsAgeSeconds` (default 2.0): metrics older than this make an endpoint ineligible.
It is the picker's one staleness limit: admission (a stale pod counts full) and the ready-pods
gauge use the same value (`SchedulerConfig.staleness_s`).
Rejection: 503 `no_ready_endpoint` when none is left.
"""

from __future__ import annotations

from collections.abc import Sequence

from picker.scheduling.columns import Candidates, Selection, selection
from picker.scheduling.framework import CycleState
from picker.scheduling.params import Params
from picker.scheduling.types import METRICS_STALENESS_SECONDS, Endpoint, EndpointSnapshot, Rejection

TYPE = "readiness-filter"
DEFAULT_MAX_METRICS_AGE_S = METRICS_STALENESS_SECONDS
PARAMETER = "maxMetricsAgeSeconds"


def _ready(snapshot: EndpointSnapshot, limit: float) -> Selection:
    return selection(snapshot, lambda e: e.metrics is not None and e.metrics_age_s <= limit)


class ReadinessFilter:
    TYPE = TYPE

    def __init__(self, max_metrics_age_s: float = DEFAULT_MAX_METRICS_AGE_S) -> None:
        self.max_metrics_age_s = max_metrics_age_s

    def filter(self, cycle: CycleState, candidates: Sequence[Endpoint]) -> Candidates | Rejection:
        limit = self.max_metrics_age_s
        candidates = Candidates.of(candidates)
        kept = candidates.keep(candidates.snapshot.column(("ready", limit), lambda s: _ready(s, limit)))
        if len(kept.indexes):
            return kept
        return Rejection(
            503,
            "no_ready_endpoint",
            f"no ready endpoint for model {cycle.request.target_model!r}: "
            f"metrics missing or older than {limit:g}s",
        )


def max_metrics_age(params: Params) -> float:
    return params.number(PARAMETER, DEFAULT_MAX_METRICS_AGE_S, minimum=0, exclusive_minimum=True)


def from_parameters(params: Params) -> ReadinessFilter:
    age = max_metrics_age(params)
    params.done()
    return ReadinessFilter(age)
