"""`lora-affinity-scorer`: for adapter requests, prefer endpoints that have the adapter loaded.

Scores: adapter running 1.0; a free adapter slot 0.8 (also when the endpoint has not reported LoRA
state yet, as an idle vLLM does); adapter waiting to load 0.6; otherwise 0 (loading would evict).
Requests for a base model score 1.0 everywhere, so the scorer never affects them.

Parameters: `running` (1.0), `freeSlot` (0.8), `waiting` (0.6), `none` (0.0).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from picker.scheduling.columns import Candidates, FloatArray
from picker.scheduling.framework import CycleState, Scores
from picker.scheduling.params import Params
from picker.scheduling.types import Endpoint, EndpointSnapshot, PodMetrics

TYPE = "lora-affinity-scorer"


class LoraAffinityScorer:
    TYPE = TYPE
    BOUNDED = True  # scores always in [0, 1]

    def __init__(self, running: float = 1.0, free_slot: float = 0.8, waiting: float = 0.6, none: float = 0.0):
        self.running = running
        self.free_slot = free_slot
        self.waiting = waiting
        self.none = none
        # Score per adapter state (see `adapter_state`).
        self._table: FloatArray = np.array([1.0, running, free_slot, waiting, none], dtype=np.float64)

    def score(self, cycle: CycleState, candidates: Sequence[Endpoint]) -> Scores:
        candidates = Candidates.of(candidates)
        key, make = self._column(cycle.request.target_model)
        column = candidates.snapshot.column(key, make)
        if candidates.full:
            return column.scores if column.adapter else 1.0
        if not column.states[candidates.indexes].any():
            return 1.0
        scores: FloatArray = column.scores[candidates.indexes]
        return scores

    def score_column(self, target_model: str, snapshot: EndpointSnapshot) -> FloatArray:
        """Scores over the whole snapshot (they depend on nothing else); 1.0 where the target is a
        base model, so where no candidate serves it as an adapter they cannot change the ranking."""
        key, make = self._column(target_model)
        column: _Column = snapshot.column(key, make)
        return column.scores

    def _column(self, target: str) -> tuple[Hashable, Callable[[EndpointSnapshot], _Column]]:
        key = ("lora-affinity", target, self.running, self.free_slot, self.waiting, self.none)
        return key, lambda snapshot: _column(snapshot, target, self._table)

    def adapter_score(self, target: str, metrics: PodMetrics) -> float:
        return float(self._table[adapter_state(target, metrics)])


BASE, RUNNING, FREE_SLOT, WAITING, NONE = range(5)


def adapter_state(target: str, metrics: PodMetrics | None) -> int:
    """Where adapter `target` stands on a server that serves it as an adapter."""
    if metrics is None:
        return NONE
    if target in metrics.running_adapters:
        return RUNNING
    if metrics.max_loras == 0 and not metrics.running_adapters and not metrics.waiting_adapters:
        return FREE_SLOT  # no LoRA state reported yet: nothing loaded, so slots are free
    if len(metrics.running_adapters | metrics.waiting_adapters) < metrics.max_loras:
        return FREE_SLOT
    if target in metrics.waiting_adapters:
        return WAITING
    return NONE


def _state(target: str, endpoint: Endpoint) -> int:
    if endpoint.served is None or target not in endpoint.served.adapters:
        return BASE  # served as a base model here: nothing to load
    return adapter_state(target, endpoint.metrics)


@dataclass(frozen=True)
class _Column:
    """A snapshot's adapter states for one target, their scores, and whether any serves it as an adapter."""

    states: npt.NDArray[np.int8]
    scores: FloatArray
    adapter: bool


def _column(snapshot: EndpointSnapshot, target: str, table: FloatArray) -> _Column:
    states = np.fromiter((_state(target, e) for e in snapshot), dtype=np.int8, count=len(snapshot))
    scores = table[states]
    states.flags.writeable = scores.flags.writeable = False  # shared by every cycle over the snapshot
    return _Column(states, scores, bool(states.any()))


def from_parameters(params: Params) -> LoraAffinityScorer:
    scorer = LoraAffinityScorer(
        running=params.number("running", 1.0, minimum=0, maximum=1),
        free_slot=params.number("freeSlot", 0.8, minimum=0, maximum=1),
        waiting=params.number("waiting", 0.6, minimum=0, maximum=1),
        none=params.number("none", 0.0, minimum=0, maximum=1),
    )
    params.done()
    return scorer
