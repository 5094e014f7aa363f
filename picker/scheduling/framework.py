"""The scheduling framework: filters narrow the candidates, weighted scorers rank them, a picker chooses.

Plugins are one-method `Protocol`s; `Scheduler` runs one cycle per request over an immutable snapshot
(a sequence of `Endpoint`s) and returns a `Decision` (primary plus fallbacks) or a `Rejection`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import add, mul
from typing import TYPE_CHECKING, Any, Protocol

from picker.scheduling.types import Decision, Endpoint, InferenceRequest, Rejection

if TYPE_CHECKING:
    from picker.scheduling.prefix_index import PrefixIndex

# Scores for the candidates, in candidate order, each in [0, 1]. A bare float means "this score for
# every candidate": it cannot change the ranking, so the scheduler skips the per-endpoint work.
# A dict is sparse: candidate index -> score, every other candidate scores 0.
Scores = Sequence[float] | float | dict[int, float]


@dataclass
class CycleState:
    """Per-request scheduling context shared by the plugins of one cycle."""

    request: InferenceRequest
    now: float  # injected clock, seconds
    rng: random.Random
    data: dict[str, Any] = field(default_factory=dict)  # plugin scratch, e.g. the prompt's block hashes
    # Scratch that lives as long as the endpoint snapshot (the same `endpoints` object): plugins may
    # keep per-snapshot columns here, keyed by something that includes id(candidates).
    memo: dict[Any, Any] = field(default_factory=dict)


def is_bounded(plugin: object) -> bool:
    """A scorer that guarantees scores in [0, 1] (property-tested); its output is not re-clamped."""
    return bool(getattr(plugin, "BOUNDED", False))


def is_cacheable(plugin: object) -> bool:
    """Filters: output depends only on (snapshot, target model, subset hint).
    Scorers: scores depend only on (candidates, target model). Such results are memoised."""
    return bool(getattr(plugin, "SNAPSHOT_PURE", False))


class Filter(Protocol):
    """Keeps the candidates a request may go to; returns a Rejection when none is left."""

    def filter(self, cycle: CycleState, candidates: Sequence[Endpoint]) -> Sequence[Endpoint] | Rejection: ...


class Scorer(Protocol):
    """Scores every candidate in [0, 1] (higher is better), in candidate order."""

    def score(self, cycle: CycleState, candidates: Sequence[Endpoint]) -> Scores: ...


class Picker(Protocol):
    """Chooses candidates by total score: indexes into `candidates`, best first, distinct."""

    def pick(
        self, cycle: CycleState, candidates: Sequence[Endpoint], totals: Sequence[float]
    ) -> list[int]: ...


@dataclass(frozen=True)
class WeightedScorer:
    """A scorer with its weight in the total and its configured name (for logs)."""

    scorer: Scorer
    weight: float
    name: str = ""


class Scheduler:
    """Runs filters -> weighted scorers -> picker. Pure apart from the injected rng and clock."""

    def __init__(
        self,
        filters: Sequence[Filter],
        scorers: Sequence[WeightedScorer],
        picker: Picker,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        prefix_index: PrefixIndex | None = None,
    ) -> None:
        self.filters = tuple(filters)
        self.scorers = tuple(s for s in scorers if s.weight != 0)
        self._cached_filters = 0
        while self._cached_filters < len(self.filters) and is_cacheable(self.filters[self._cached_filters]):
            self._cached_filters += 1
        self._static = tuple(s for s in self.scorers if is_cacheable(s.scorer))
        self._dynamic = tuple(s for s in self.scorers if not is_cacheable(s.scorer))
        # The last snapshot seen and what was derived from it; a new `endpoints` object resets both.
        self._snapshot: Sequence[Endpoint] | None = None
        self._memo: dict[Any, Any] = {}
        self.picker = picker
        self.rng = rng if rng is not None else random.Random()
        self.clock = clock
        # Per-replica prompt-prefix memory fed by `record`; None when no prefix scorer is configured.
        self.prefix_index = prefix_index

    def schedule(self, request: InferenceRequest, endpoints: Sequence[Endpoint]) -> Decision | Rejection:
        """One scheduling cycle for `request` over the snapshot `endpoints`."""
        # Memoise per snapshot only for tuples: a list could be mutated in place between calls.
        if endpoints is not self._snapshot or not isinstance(endpoints, tuple):
            self._snapshot = endpoints
            self._memo = {}
        cycle = CycleState(request=request, now=self.clock(), rng=self.rng, memo=self._memo)
        key = ("filters", request.target_model, request.subset_hint)
        filtered = self._memo.get(key)
        if filtered is None:
            filtered = self._memo[key] = self._filter(cycle, endpoints, self.filters[: self._cached_filters])
        if isinstance(filtered, Rejection):
            return filtered
        candidates = self._filter(cycle, filtered, self.filters[self._cached_filters :])
        if isinstance(candidates, Rejection):
            return candidates
        totals, offset = self._totals(cycle, candidates)
        chosen = self.picker.pick(
            cycle, candidates, totals if totals is not None else [0.0] * len(candidates)
        )
        if not chosen:
            return Rejection(503, "no_ready_endpoint", f"no endpoint available for model {request.model!r}")
        picked = tuple(candidates[i].address for i in chosen)
        scores = {candidates[i].address: (totals[i] if totals is not None else 0.0) + offset for i in chosen}
        hashes: tuple[int, ...] = cycle.data.get(PROMPT_HASHES_KEY, ())
        return Decision(endpoints=picked, scores=scores, prefix_hashes=hashes)

    @staticmethod
    def _filter(
        cycle: CycleState, candidates: Sequence[Endpoint], filters: Sequence[Filter]
    ) -> Sequence[Endpoint] | Rejection:
        for plugin in filters:
            kept = plugin.filter(cycle, candidates)
            if isinstance(kept, Rejection):
                return kept
            if not kept:  # a filter that empties the set without saying why
                model = cycle.request.model
                return Rejection(503, "no_ready_endpoint", f"no endpoint available for model {model!r}")
            candidates = kept
        return candidates

    def _totals(self, cycle: CycleState, candidates: Sequence[Endpoint]) -> tuple[list[float] | None, float]:
        """Weighted sum of per-candidate scores, plus the constant part from uniform scores."""
        key = ("static-totals", id(candidates), cycle.request.target_model)
        cached = self._memo.get(key)
        if cached is None or cached[0] is not candidates:
            static, offset = self._sum(cycle, candidates, self._static, None, 0.0)
            # Keep `candidates` alive with the entry so its id cannot be reused by another list.
            cached = self._memo[key] = (candidates, static, offset)
        _, static, offset = cached
        return self._sum(
            cycle, candidates, self._dynamic, list(static) if static is not None else None, offset
        )

    @staticmethod
    def _sum(
        cycle: CycleState,
        candidates: Sequence[Endpoint],
        scorers: Sequence[WeightedScorer],
        totals: list[float] | None,
        offset: float,
    ) -> tuple[list[float] | None, float]:
        for weighted in scorers:
            scores = weighted.scorer.score(cycle, candidates)
            weight = weighted.weight
            if isinstance(scores, float | int):
                offset += weight * min(1.0, max(0.0, float(scores)))
                continue
            bounded = is_bounded(weighted.scorer)
            if isinstance(scores, dict):
                if totals is None:
                    totals = [0.0] * len(candidates)
                for index, score in scores.items():
                    totals[index] += weight * (score if bounded else min(1.0, max(0.0, score)))
                continue
            if len(scores) != len(candidates):
                raise ValueError(
                    f"scorer {weighted.name or type(weighted.scorer).__name__} returned "
                    f"{len(scores)} scores for {len(candidates)} candidates"
                )
            # Clamp only when needed: min/max run at C speed, a per-element clamp would not.
            if not bounded and scores and (min(scores) < 0.0 or max(scores) > 1.0):
                scores = [min(1.0, max(0.0, s)) for s in scores]
            if totals is None:
                totals = list(map(mul, scores, repeat(weight))) if weight != 1.0 else list(scores)
            elif weight == 1.0:
                totals = list(map(add, totals, scores))
            else:
                totals = list(map(add, totals, map(mul, scores, repeat(weight))))
        return totals, offset

    def record(self, decision: Decision) -> None:
        """Remember that the decision's primary now holds the prompt's prefix (per-replica state)."""
        if self.prefix_index is not None and decision.prefix_hashes:
            self.prefix_index.record(decision.primary, decision.prefix_hashes)


# Key in CycleState.data under which the prompt's block hashes are kept (computed once per cycle).
PROMPT_HASHES_KEY = "prompt_hashes"
