"""The scheduling framework: filters narrow the candidates, admission may shed, weighted scorers rank
them, a picker chooses.

Plugins are one-method `Protocol`s; `Scheduler` runs one cycle per request over an immutable snapshot
(an `EndpointSnapshot`, which owns the columns derived from its endpoints) and returns a `Decision`
(primary plus fallbacks) or a `Rejection`. Filters narrow the candidates' index set; scorers are
pure functions of the request, the snapshot, the indexes and the live in-flight counts.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol, cast

import numpy as np

from picker.scheduling import admission
from picker.scheduling.admission import AdmissionConfig
from picker.scheduling.columns import Candidates, FloatArray
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


class Filter(Protocol):
    """Keeps the candidates a request may go to (a subset of their indexes); returns a Rejection
    when none is left."""

    def filter(self, cycle: CycleState, candidates: Candidates) -> Candidates | Rejection: ...


class Scorer(Protocol):
    """Scores every candidate in [0, 1] (higher is better), in candidate order."""

    def score(self, cycle: CycleState, candidates: Candidates) -> Scores: ...


class ColumnScorer(Protocol):
    """A scorer whose scores are a column of the snapshot: a function of the request's target model
    and the snapshot alone (not of live counts, the clock or the scorer's own state). The scheduler
    adds such columns, weighted, into one column the snapshot keeps per target model; `score` gives
    the same values at the candidates."""

    def score_column(self, target_model: str, snapshot: EndpointSnapshot) -> FloatArray: ...


def score_column(plugin: object) -> Callable[[str, EndpointSnapshot], FloatArray] | None:
    method = getattr(plugin, "score_column", None)
    return method if callable(method) else None


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
        # Column scorers first (summed once per snapshot), then the others per cycle, in profile order.
        self._columns = tuple(
            (cast(ColumnScorer, s.scorer), s.weight)
            for s in self.scorers
            if score_column(s.scorer) is not None
        )
        self._per_cycle = tuple(
            (s, is_bounded(s.scorer)) for s in self.scorers if score_column(s.scorer) is None
        )
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

        Pass an `EndpointSnapshot` reused across decisions (with live in-flight counts): the columns
        derived from its metrics are then computed once, not per request.
        """
        snapshot = endpoints if isinstance(endpoints, EndpointSnapshot) else EndpointSnapshot(endpoints)
        cycle = CycleState(request=request, now=self.clock(), rng=self.rng)
        candidates = self._filter(cycle, Candidates(snapshot), self.filters)
        if isinstance(candidates, Rejection):
            return candidates
        if self.admission is not None and admission.sheddable(request.criticality, self.admission):
            shed = admission.check(request, list(candidates), self.admission, snapshot.in_flight)
            if shed is not None:
                return shed
        totals, offset = self._sum(
            cycle, candidates, self._per_cycle, self._column_totals(request, candidates)
        )
        if totals is None:
            totals = np.zeros(len(candidates))
        chosen = self.picker.pick(cycle, candidates, totals)
        if not chosen:
            return Rejection(503, "no_ready_endpoint", f"no endpoint available for model {request.model!r}")
        addresses = candidates.addresses_at(chosen)
        picked = tuple(addresses)
        scores = {address: float(totals[i]) + offset for address, i in zip(addresses, chosen, strict=True)}
        prefill = max(0, len(request.prompt) - cycle.cached_prefix_chars.get(picked[0], 0))
        return Decision(endpoints=picked, scores=scores, prefix_hashes=cycle.hashes, prefill_chars=prefill)

    @staticmethod
    def _filter(
        cycle: CycleState, candidates: Candidates, filters: Sequence[Filter]
    ) -> Candidates | Rejection:
        for plugin in filters:
            kept = plugin.filter(cycle, candidates)
            if isinstance(kept, Rejection):
                return kept
            if not len(kept.indexes):  # a filter that empties the set without saying why
                model = cycle.request.model
                return Rejection(503, "no_ready_endpoint", f"no endpoint available for model {model!r}")
            candidates = kept
        return candidates

    def _column_totals(self, request: InferenceRequest, candidates: Candidates) -> FloatArray | None:
        """The column scorers' weighted sum at the candidates (read-only), a column of the snapshot."""
        if not self._columns:
            return None
        # The key holds the scorers themselves (with their weights): the column is theirs alone.
        key = (self._columns, request.target_model)
        totals: FloatArray = candidates.column(
            key, partial(_weighted_columns, self._columns, request.target_model)
        )
        return totals

    @staticmethod
    def _sum(
        cycle: CycleState,
        candidates: Candidates,
        scorers: Sequence[tuple[WeightedScorer, bool]],
        totals: FloatArray | None,
    ) -> tuple[FloatArray | None, float]:
        """`totals` (never modified) plus each scorer's weighted per-candidate scores (a new array;
        None if all were uniform), and the constant part from uniform scores."""
        count = len(candidates.indexes)
        owned = False  # whether `totals` is this call's own array, safe to update in place
        offset = 0.0
        for weighted, bounded in scorers:
            scores = weighted.scorer.score(cycle, candidates)
            weight = weighted.weight
            if isinstance(scores, (float, int)):
                offset += weight * min(1.0, max(0.0, float(scores)))
                continue
            if isinstance(scores, dict):
                if scores:
                    totals = np.zeros(count) if totals is None else totals if owned else totals.copy()
                    owned = True
                    _add_sparse(totals, scores, weight, bounded)
                continue
            column = np.asarray(scores, dtype=np.float64)
            if column.shape != (count,):
                raise ValueError(
                    f"scorer {weighted.name or type(weighted.scorer).__name__} returned "
                    f"{len(column)} scores for {count} candidates"
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


def _add_sparse(totals: FloatArray, scores: dict[int, float], weight: float, bounded: bool) -> None:
    """Adds sparse scores (candidate index -> score) into `totals`, in place."""
    index = np.fromiter(scores.keys(), dtype=np.intp, count=len(scores))
    values = np.fromiter(scores.values(), dtype=np.float64, count=len(scores))
    if not bounded:
        values = np.clip(values, 0.0, 1.0)
    totals[index] += values * weight  # keys are distinct: no lost updates


def _weighted_columns(
    scorers: Sequence[tuple[ColumnScorer, float]], target_model: str, snapshot: EndpointSnapshot
) -> FloatArray:
    """Sum of the column scorers' weighted scores over the snapshot, in profile order (read-only)."""
    totals: FloatArray = np.zeros(len(snapshot))
    for i, (scorer, weight) in enumerate(scorers):
        column = np.clip(scorer.score_column(target_model, snapshot), 0.0, 1.0)  # a new array
        if i == 0:
            totals = column * weight if weight != 1.0 else column
        else:
            totals += column * weight if weight != 1.0 else column
    totals.flags.writeable = False  # shared by every cycle over the snapshot
    return totals
