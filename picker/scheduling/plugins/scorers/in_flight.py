"""`in-flight-load-scorer`: prefer the least-loaded endpoints, a fixed cost per request of extra load.

Load = max(`in_flight`, `running` + `waiting`): `in_flight` (requests this replica sent and has not
seen finish) is live, so a burst between two scrapes is counted at once; the scraped count covers
requests from other picker replicas (and is the larger one then). Score `1 - (load - minLoad) /
loadRange`, clipped to [0, 1]: the least-loaded candidate scores 1, each request above it costs
`1 / loadRange`. Smooth, not min-max: one extra request on an idle fleet stays a small difference.

A request dispatched less than `prefillWindowMs` ago counts `prefillLoad` more: it is probably still
in prefill, the phase that delays every other new request's first token on that server. Among pods
with equal counts this sends the next request to one that has not just received one (round-robin's
strength on uniform traffic, kept without its blindness to load).

Parameters: `loadRange` (32): load above the least-loaded candidate at which the score reaches 0;
`prefillWindowMs` (50, 0 turns it off) and `prefillLoad` (0.5, below one request so it only
breaks ties between equal counts).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from picker.scheduling.columns import (
    FloatArray,
    in_flight_column,
    positions,
    relative_scores,
    snapshot_column,
)
from picker.scheduling.framework import CycleState, Scores
from picker.scheduling.params import Params
from picker.scheduling.types import Decision, Endpoint

TYPE = "in-flight-load-scorer"
DEFAULT_LOAD_RANGE = 32.0
DEFAULT_PREFILL_WINDOW_S = 0.05
DEFAULT_PREFILL_LOAD = 0.5


class InFlightLoadScorer:
    TYPE = TYPE
    BOUNDED = True  # scores always in [0, 1]

    def __init__(
        self,
        load_range: float = DEFAULT_LOAD_RANGE,
        prefill_window_s: float = DEFAULT_PREFILL_WINDOW_S,
        prefill_load: float = DEFAULT_PREFILL_LOAD,
    ) -> None:
        self.load_range = load_range
        self.prefill_window_s = prefill_window_s
        self.prefill_load = prefill_load
        # Endpoints sent a request within the window, oldest first (per replica, like in-flight
        # counts): a few entries at any rate, so scoring stays cheap over 1,000 candidates.
        self._recent: OrderedDict[str, float] = OrderedDict()

    def score(self, cycle: CycleState, candidates: Sequence[Endpoint]) -> Scores:
        load = load_column(cycle, candidates)
        self._forget_before(cycle.now - self.prefill_window_s)
        if self._recent:
            index = positions(cycle, candidates)
            rows = [i for address in self._recent if (i := index.get(address)) is not None]
            if rows:
                load = load.copy()  # the column may be memoised for other cycles: never in place
                load[rows] += self.prefill_load
        return relative_scores(load, self.load_range)

    def record(self, decision: Decision, now: float) -> None:
        """The decision's primary was just sent a request (called by the scheduler after each one)."""
        if self.prefill_window_s <= 0:
            return
        self._recent[decision.primary] = now
        self._recent.move_to_end(decision.primary)
        self._forget_before(now - self.prefill_window_s)

    def _forget_before(self, since: float) -> None:
        recent = self._recent
        while recent:
            address, at = next(iter(recent.items()))
            if at > since:
                return
            del recent[address]


def load_column(cycle: CycleState, candidates: Sequence[Endpoint]) -> FloatArray:
    """max(in flight, running + waiting) per candidate, for this cycle."""
    scraped = snapshot_column(cycle, candidates, "load", _load)
    in_flight = in_flight_column(cycle, candidates)
    if in_flight is None:
        return scraped
    load: FloatArray = np.maximum(scraped, in_flight)
    return load


def _load(endpoint: Endpoint) -> int:
    metrics = endpoint.metrics
    return metrics.running + metrics.waiting if metrics is not None else 0


def from_parameters(params: Params) -> InFlightLoadScorer:
    load_range = params.number("loadRange", DEFAULT_LOAD_RANGE, minimum=0, exclusive_minimum=True)
    window_ms = params.number("prefillWindowMs", DEFAULT_PREFILL_WINDOW_S * 1000, minimum=0)
    prefill_load = params.number("prefillLoad", DEFAULT_PREFILL_LOAD, minimum=0)
    params.done()
    return InFlightLoadScorer(load_range, window_ms / 1000, prefill_load)
