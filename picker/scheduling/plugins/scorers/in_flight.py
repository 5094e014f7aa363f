"""`in-flight-load-scorer`: prefer the least-loaded endpoints, a fixed cost per request of extra load.

Load = max(`in_flight`, `running` + `waiting`): `in_flight` (requests this replica sent and has not
seen finish) is live, so a burst between two scrapes is counted at once; the scraped count covers
requests from other picker replicas (and is the larger one then). Score `1 - (load - minLoad) /
loadRange`, clipped to [0, 1]: the least-loaded candidate scores 1, each request above it costs
`1 / loadRange`. Smooth, not min-max: one extra request on an idle fleet stays a small difference.

Parameters: `loadRange` (32): load above the least-loaded candidate at which the score reaches 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from picker.scheduling.columns import FloatArray, in_flight_column, relative_scores, snapshot_column
from picker.scheduling.framework import CycleState, Scores
from picker.scheduling.params import Params
from picker.scheduling.types import Endpoint

TYPE = "in-flight-load-scorer"
DEFAULT_LOAD_RANGE = 32.0


class InFlightLoadScorer:
    TYPE = TYPE
    BOUNDED = True  # scores always in [0, 1]

    def __init__(self, load_range: float = DEFAULT_LOAD_RANGE) -> None:
        self.load_range = load_range

    def score(self, cycle: CycleState, candidates: Sequence[Endpoint]) -> Scores:
        return relative_scores(load_column(cycle, candidates), self.load_range)


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
    params.done()
    return InFlightLoadScorer(load_range)
