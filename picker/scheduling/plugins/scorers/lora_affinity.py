"""`lora-affinity-scorer`: for adapter requests, prefer endpoints that have the adapter loaded.

Scores: adapter running 1.0; a free adapter slot 0.8 (also when the endpoint has not reported LoRA
state yet, as an idle vLLM does); adapter waiting to load 0.6; otherwise 0 (loading would evict).
Requests for a base model score 1.0 everywhere, so the scorer never affects them.

Parameters: `running` (1.0), `freeSlot` (0.8), `waiting` (0.6), `none` (0.0).
"""

from __future__ import annotations

from collections.abc import Sequence

from picker.scheduling.framework import CycleState, Scores
from picker.scheduling.params import Params
from picker.scheduling.types import Endpoint, PodMetrics

TYPE = "lora-affinity-scorer"


class LoraAffinityScorer:
    TYPE = TYPE
    BOUNDED = True  # scores always in [0, 1]
    SNAPSHOT_PURE = True  # memoised per snapshot by the Scheduler

    def __init__(self, running: float = 1.0, free_slot: float = 0.8, waiting: float = 0.6, none: float = 0.0):
        self.running = running
        self.free_slot = free_slot
        self.waiting = waiting
        self.none = none

    def score(self, cycle: CycleState, candidates: Sequence[Endpoint]) -> Scores:
        target = cycle.request.target_model
        if not any(e.served is not None and target in e.served.adapters for e in candidates):
            return 1.0
        return [self._one(target, e) for e in candidates]

    def _one(self, target: str, endpoint: Endpoint) -> float:
        if endpoint.served is None or target not in endpoint.served.adapters:
            return 1.0  # served as a base model here: nothing to load
        metrics = endpoint.metrics
        if metrics is None:
            return self.none
        return self.adapter_score(target, metrics)

    def adapter_score(self, target: str, metrics: PodMetrics) -> float:
        if target in metrics.running_adapters:
            return self.running
        if metrics.max_loras == 0 and not metrics.running_adapters and not metrics.waiting_adapters:
            return self.free_slot  # no LoRA state reported yet: nothing loaded, so slots are free
        if len(metrics.running_adapters | metrics.waiting_adapters) < metrics.max_loras:
            return self.free_slot
        if target in metrics.waiting_adapters:
            return self.waiting
        return self.none


def from_parameters(params: Params) -> LoraAffinityScorer:
    scorer = LoraAffinityScorer(
        running=params.number("running", 1.0, minimum=0, maximum=1),
        free_slot=params.number("freeSlot", 0.8, minimum=0, maximum=1),
        waiting=params.number("waiting", 0.6, minimum=0, maximum=1),
        none=params.number("none", 0.0, minimum=0, maximum=1),
    )
    params.done()
    return scorer
