"""The scheduling framework: filters narrow the candidates, admission may shed, weighted scorers rank
them, a picker chooses.

Plugins are one-method `Protocol`s; `Scheduler` runs one cycle per request over an immutable snapshot
(a sequence of `Endpoint`s) and returns a `Decision` (primary plus fallbacks) or a `Rejection`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import numpy as np

from picker.scheduling import admission
from picker.scheduling.admission import AdmissionConfig
from picker.scheduling.columns import FloatArray
from picker.scheduling.prefix_index import PrefixIndex, PromptScheme, prompt_hashes
from picker.scheduling.types import Decision, Endpoint, EndpointSnapshot, InferenceRequest, Rejection

# Scores for the candidates, in candidate order, each in [0, 1]: a sequence or a float64 array. A
# bare float means "this score for every candidate": it cannot change the ranking, so the scheduler
# skips the per-endpoint work. A dict is sparse: candidate index -> score, every other scores 0.
Scores = Sequence[float] | FloatArray | float | dict[int, float]


@dataclass
class CycleState:
    """Per-request scheduling context shared by the plugins of one cycle."""

    request: InferenceRequest
    now: float  # injected clock, seconds
    rng: random.Random
    data: dict[Any, Any] = field(default_factory=dict)  # plugin scratch, e.g. the prompt's block hashes
    # Scratch that lives as long as the endpoint snapshot (the same `endpoints` object): plugins may
    # keep per-snapshot columns here, keyed by something that includes id(candidates).
    memo: dict[Any, Any] = field(default_factory=dict)
    # Live in-flight counts by address (from an EndpointSnapshot); None: read Endpoint.in_flight.
    in_flight: Mapping[str, int] | None = None
    # The prompt's block hashes per hashing scheme (block size, max blocks), computed once per cycle
    # by `prompt_hashes` and handed to the decision, so each prefix-aware plugin records its own.
    hashes: dict[PromptScheme, tuple[int, ...]] = field(default_factory=dict)
    # address -> prompt characters that endpoint probably holds in its prefix cache, as estimated by
    # this cycle's cache-aware scorers (the largest estimate wins; counted in UTF-8 bytes: the same
    # for ASCII text, an overestimate otherwise). Empty: every character counts as prefill.
    cached_prefix_chars: dict[str, int] = field(default_factory=dict)

    def prompt_hashes(self, block_size: int, max_blocks: int) -> tuple[int, ...]:
        """The request prompt's block hashes for this scheme, computed once per cycle."""
        scheme = (block_size, max_blocks)
        found = self.hashes.get(scheme)
        if found is None:
            request = self.request
            found = self.hashes[scheme] = prompt_hashes(
                request.prompt, request.target_model, block_size, max_blocks
            )
        return found

    def note_cached_prefix(self, matched_chars: Mapping[str, int]) -> None:
        """A scorer's estimate of the prompt characters each endpoint holds in its prefix cache."""
        cached = self.cached_prefix_chars
        if not cached:
            cached.update(matched_chars)
            return
        for address, chars in matched_chars.items():
            if chars > cached.get(address, 0):
                cached[address] = chars


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
    """Chooses candidates by total score: indexes into `candidates`, best first, distinct.
    `totals` is a float64 array from the Scheduler (a plain sequence works too)."""

    def pick(
        self, cycle: CycleState, candidates: Sequence[Endpoint], totals: Sequence[float] | FloatArray
    ) -> list[int]: ...


@dataclass(frozen=True)
class WeightedScorer:
    """A scorer with its weight in the total and its configured name (for logs)."""

    scorer: Scorer
    weight: float
    name: str = ""


class Recorder(Protocol):
    """A plugin told of every decision carried out (per-replica state: recent dispatches, prefixes)."""

    def record(self, decision: Decision, now: float) -> None: ...


class Scheduler:
    """Runs filters -> admission -> weighted scorers -> picker. Pure apart from the injected rng and
    clock (and the recorders' per-replica state). Admission (None: admit all) sheds on the filtered
    candidates: those the request may go to."""

    def __init__(
        self,
        filters: Sequence[Filter],
        scorers: Sequence[WeightedScorer],
        picker: Picker,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        admission: AdmissionConfig | None = None,
    ) -> None:
        self.filters = tuple(filters)
        self.admission = admission
        self.scorers = tuple(s for s in scorers if s.weight != 0)
        self._cached_filters = 0
        while self._cached_filters < len(self.filters) and is_cacheable(self.filters[self._cached_filters]):
            self._cached_filters += 1
        self._static = tuple(s for s in self.scorers if is_cacheable(s.scorer))
        self._dynamic = tuple(s for s in self.scorers if not is_cacheable(s.scorer))
        # The last snapshot seen and what was derived from it; a new `endpoints` object resets both.
        self._snapshot: Sequence[Endpoint] | None = None
        self._memo: dict[Any, Any] = {}
        self._token = object()  # this scheduler's key in an EndpointSnapshot's memo
        self.picker = picker
        self.rng = rng if rng is not None else random.Random()
        self.clock = clock
        # Scorers that keep per-replica state about dispatched requests (`record(decision, now)`),
        # each once even if the profile names it twice.
        recorders = {
            id(s.scorer): s.scorer for s in self.scorers if callable(getattr(s.scorer, "record", None))
        }
        self._recorders: tuple[Recorder, ...] = tuple(cast(Recorder, r) for r in recorders.values())

    @property
    def prefix_index(self) -> PrefixIndex | None:
        """The first prefix-aware scorer's memory (for tools and tests); None without one."""
        for weighted in self.scorers:
            index = getattr(weighted.scorer, "index", None)
            if isinstance(index, PrefixIndex):
                return index
        return None

    def schedule(self, request: InferenceRequest, endpoints: Sequence[Endpoint]) -> Decision | Rejection:
        """One scheduling cycle for `request` over the snapshot `endpoints`.

        Pass an `EndpointSnapshot` reused across decisions (with live in-flight counts): what is
        derived from its metrics is then computed once, not per request.
        """
        in_flight: Mapping[str, int] | None = None
        if isinstance(endpoints, EndpointSnapshot):
            in_flight = endpoints.in_flight
            # Keyed by this scheduler's token (kept alive by the entry): another scheduler, with
            # other plugins, sharing the snapshot must not see these results.
            memo = endpoints.memo.get(self._token)
            if memo is None:
                memo = endpoints.memo[self._token] = {}
        else:
            # Memoise per snapshot only for tuples: a list could be mutated in place between calls.
            if endpoints is not self._snapshot or not isinstance(endpoints, tuple):
                self._snapshot = endpoints
                self._memo = {}
            memo = self._memo
        cycle = CycleState(request=request, now=self.clock(), rng=self.rng, memo=memo, in_flight=in_flight)
        key = ("filters", request.target_model, request.subset_hint)
        filtered = memo.get(key)
        if filtered is None:
            filtered = memo[key] = self._filter(cycle, endpoints, self.filters[: self._cached_filters])
        if isinstance(filtered, Rejection):
            return filtered
        candidates = self._filter(cycle, filtered, self.filters[self._cached_filters :])
        if isinstance(candidates, Rejection):
            return candidates
        if self.admission is not None:
            shed = admission.check(request, candidates, self.admission, in_flight)
            if shed is not None:
                return shed
        totals, offset = self._totals(cycle, candidates)
        if totals is None:
            totals = np.zeros(len(candidates))
        chosen = self.picker.pick(cycle, candidates, totals)
        if not chosen:
            return Rejection(503, "no_ready_endpoint", f"no endpoint available for model {request.model!r}")
        picked = tuple(candidates[i].address for i in chosen)
        scores = {candidates[i].address: float(totals[i]) + offset for i in chosen}
        prefill = max(0, len(request.prompt) - cycle.cached_prefix_chars.get(picked[0], 0))
        return Decision(endpoints=picked, scores=scores, prefix_hashes=cycle.hashes, prefill_chars=prefill)

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

    def _totals(self, cycle: CycleState, candidates: Sequence[Endpoint]) -> tuple[FloatArray | None, float]:
        """Weighted sum of per-candidate scores, plus the constant part from uniform scores."""
        key = ("static-totals", id(candidates), cycle.request.target_model)
        cached = cycle.memo.get(key)
        if cached is None or cached[0] is not candidates:
            static, offset = self._sum(cycle, candidates, self._static, None, 0.0)
            if static is not None:
                static.flags.writeable = False  # shared by every later cycle: never updated in place
            # Keep `candidates` alive with the entry so its id cannot be reused by another list.
            cached = cycle.memo[key] = (candidates, static, offset)
        _, static, offset = cached
        return self._sum(cycle, candidates, self._dynamic, static, offset)

    @staticmethod
    def _sum(
        cycle: CycleState,
        candidates: Sequence[Endpoint],
        scorers: Sequence[WeightedScorer],
        totals: FloatArray | None,
        offset: float,
    ) -> tuple[FloatArray | None, float]:
        """Adds each scorer's weighted scores; never modifies the `totals` passed in (a new array)."""
        owned = False  # whether `totals` is this call's own array, safe to update in place
        for weighted in scorers:
            scores = weighted.scorer.score(cycle, candidates)
            weight = weighted.weight
            if isinstance(scores, float | int):
                offset += weight * min(1.0, max(0.0, float(scores)))
                continue
            bounded = is_bounded(weighted.scorer)
            if isinstance(scores, dict):
                if not scores:
                    continue
                if totals is None:
                    totals = np.zeros(len(candidates))
                elif not owned:
                    totals = totals.copy()
                owned = True
                index = np.fromiter(scores.keys(), dtype=np.intp, count=len(scores))
                values = np.fromiter(scores.values(), dtype=np.float64, count=len(scores))
                if not bounded:
                    values = np.clip(values, 0.0, 1.0)
                totals[index] += values * weight  # keys are distinct: no lost updates
                continue
            column = np.asarray(scores, dtype=np.float64)
            if column.shape != (len(candidates),):
                raise ValueError(
                    f"scorer {weighted.name or type(weighted.scorer).__name__} returned "
                    f"{len(column)} scores for {len(candidates)} candidates"
                )
            if not bounded and column.size and (column.min() < 0.0 or column.max() > 1.0):
                column = np.clip(column, 0.0, 1.0)
            weighted_column = column if weight == 1.0 else column * weight
            if totals is None:
                totals = weighted_column.copy() if weighted_column is column else weighted_column
            elif owned:
                totals += weighted_column
            else:
                totals = totals + weighted_column
            owned = True
        return totals, offset

    def record(self, decision: Decision) -> None:
        """The decision was carried out: each recording plugin notes it (the primary now holds the
        prompt's prefix and one more request)."""
        if self._recorders:
            now = self.clock()
            for recorder in self._recorders:
                recorder.record(decision, now)
