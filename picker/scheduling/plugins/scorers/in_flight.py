"""`in-flight-load-scorer`: prefer the least-loaded endpoints, a fixed cost per request of extra load.

Load = max(`in_flight`, `running` + `waiting`): `in_flight` (requests this replica sent and has not
seen finish) is live, so a burst between two scrapes is counted at once; the scraped count covers
requests from other picker replicas (and is the larger one then). Score `1 - (load - minLoad) /
loadRange`, clipped to [0, 1]: the least-loaded candidate scores 1, each request above it costs
`1 / loadRange`. Smooth, not min-max: one extra request on an idle fleet stays a small difference.

A request dispatched less than `prefillWindowMs` ago counts `prefillLoad` more, plus
`prefillLoadPerKTokens` per thousand prompt tokens the server probably has to prefill (those not in
its prefix cache, as far as this replica knows): it is probably still in prefill, the phase that
delays every other new request's first token on that server, for longer the longer the prompt. Among
pods with equal counts this sends the next request to one that has not just received one, or whose
last one was short (round-robin's strength on uniform traffic, kept without its blindness to load
and prompt length).

Parameters: `loadRange` (32): load above the least-loaded candidate at which the score reaches 0;
`prefillWindowMs` (50, 0 turns it off), `prefillLoad` (0.5, below one request so a short prompt
only breaks ties between equal counts) and `prefillLoadPerKTokens` (2.0; tokens are estimated as
4 prompt characters each).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np

from picker.scheduling.columns import Candidates, FloatArray, float_column, relative_scores
from picker.scheduling.framework import CycleState, Scores
from picker.scheduling.params import Params
from picker.scheduling.types import Decision, Endpoint

TYPE = "in-flight-load-scorer"
DEFAULT_LOAD_RANGE = 32.0
DEFAULT_PREFILL_WINDOW_S = 0.05
DEFAULT_PREFILL_LOAD = 0.5
DEFAULT_PREFILL_LOAD_PER_KTOKENS = 2.0
CHARS_PER_TOKEN = 4


class InFlightLoadScorer:
    TYPE = TYPE
    BOUNDED = True  # scores always in [0, 1]

    def __init__(
        self,
        load_range: float = DEFAULT_LOAD_RANGE,
        prefill_window_s: float = DEFAULT_PREFILL_WINDOW_S,
        prefill_load: float = DEFAULT_PREFILL_LOAD,
        prefill_load_per_ktokens: float = DEFAULT_PREFILL_LOAD_PER_KTOKENS,
    ) -> None:
        self.load_range = load_range
        self.prefill_window_s = prefill_window_s
        self.prefill_load = prefill_load
        self.prefill_load_per_ktokens = prefill_load_per_ktokens
        # Requests sent within the window, oldest first, as (sent at, endpoint, extra load), and the
        # extra load per endpoint (per replica, like in-flight counts): a few entries at any rate,
        # so scoring stays cheap over 1,000 candidates.
        self._recent: deque[tuple[float, str, float]] = deque()
        self._pending: dict[str, float] = {}

    def score(self, cycle: CycleState, candidates: Sequence[Endpoint]) -> Scores:
        candidates = Candidates.of(candidates)
        load = load_column(candidates)
        self._forget_before(cycle.now - self.prefill_window_s)
        if self._pending:
            index = candidates.positions()
            rows = [
                (i, extra)
                for address, extra in self._pending.items()
                if (i := index.get(address)) is not None
            ]
            if rows:
                load = load.copy()  # the column may be the snapshot's: never in place
                for i, extra in rows:
                    load[i] += extra
        return relative_scores(load, self.load_range)

    def record(self, decision: Decision, now: float) -> None:
        """The decision's primary was just sent a request (called by the scheduler after each one)."""
        if self.prefill_window_s <= 0:
            return
        tokens = decision.prefill_chars / CHARS_PER_TOKEN
        extra = self.prefill_load + self.prefill_load_per_ktokens * tokens / 1000.0
        if extra <= 0:
            return
        self._forget_before(now - self.prefill_window_s)
        self._recent.append((now, decision.primary, extra))
        self._pending[decision.primary] = self._pending.get(decision.primary, 0.0) + extra

    def _forget_before(self, since: float) -> None:
        recent, pending = self._recent, self._pending
        while recent and recent[0][0] <= since:
            _, address, extra = recent.popleft()
            left = pending[address] - extra
            if left > 1e-9:
                pending[address] = left
            else:
                del pending[address]


def load_column(candidates: Candidates) -> FloatArray:
    """max(in flight, running + waiting) per candidate, for this cycle."""
    scraped: FloatArray = candidates.column("load", lambda s: float_column(s, _load))
    in_flight = candidates.in_flight()
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
    per_ktokens = params.number("prefillLoadPerKTokens", DEFAULT_PREFILL_LOAD_PER_KTOKENS, minimum=0)
    params.done()
    return InFlightLoadScorer(load_range, window_ms / 1000, prefill_load, per_ktokens)
