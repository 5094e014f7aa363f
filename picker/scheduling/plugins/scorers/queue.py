"""`queue-scorer`: prefer endpoints with the shortest queue, min-max normalised over the candidates.

Queue estimate = `waiting` (last scrape) + `in_flight` (requests this replica has sent and not seen
finish): scrapes every 50 ms lag a burst, and without the in-flight part every request of the burst
would herd onto the same endpoint. Score `(maxQ - q) / (maxQ - minQ)`; all equal -> 1.0.

Parameters: `countInFlight` (default true): add the in-flight requests to the queue estimate.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from picker.scheduling.columns import Candidates, FloatArray, float_column
from picker.scheduling.framework import CycleState, Scores
from picker.scheduling.params import Params
from picker.scheduling.types import Endpoint

TYPE = "queue-scorer"


def min_max_scores(values: Sequence[float] | FloatArray) -> Scores:
    """(max - v) / (max - min) per value; 1.0 for every value when they are all equal."""
    column = np.asarray(values, dtype=np.float64)
    if not column.size:
        return 1.0
    low = column.min()
    high = column.max()
    if high == low:
        return 1.0
    # Subtract, then scale by the reciprocal: the same float operations as the scalar formula.
    scores: FloatArray = (high - column) * (1.0 / (high - low))
    return scores


class QueueScorer:
    TYPE = TYPE
    BOUNDED = True  # scores always in [0, 1]

    def __init__(self, count_in_flight: bool = True) -> None:
        self.count_in_flight = count_in_flight

    def score(self, cycle: CycleState, candidates: Sequence[Endpoint]) -> Scores:
        candidates = Candidates.of(candidates)
        waiting: FloatArray = candidates.column("waiting", lambda s: float_column(s, _waiting))
        if not self.count_in_flight:
            return min_max_scores(waiting)
        return min_max_scores(candidates.with_in_flight(waiting))


def _waiting(endpoint: Endpoint) -> int:
    return endpoint.metrics.waiting if endpoint.metrics is not None else 0


def from_parameters(params: Params) -> QueueScorer:
    count = params.boolean("countInFlight", True)
    params.done()
    return QueueScorer(count)
