"""`in-flight-load-scorer`: prefer endpoints with the least total load, min-max over the candidates.

Load = `running` + `waiting` (last scrape) + `in_flight` (sent by this replica, not yet finished), so
it keeps counting a burst between scrapes. Score `(maxL - l) / (maxL - minL)`; all equal -> 1.0.
`in_flight` is PER PICKER REPLICA: other replicas' requests show up only through the scrapes.

Parameters: none.
"""

from __future__ import annotations

from collections.abc import Sequence

from picker.scheduling.columns import snapshot_column, with_in_flight
from picker.scheduling.framework import CycleState, Scores
from picker.scheduling.params import Params
from picker.scheduling.plugins.scorers.queue import min_max_scores
from picker.scheduling.types import Endpoint

TYPE = "in-flight-load-scorer"


class InFlightLoadScorer:
    TYPE = TYPE
    BOUNDED = True  # scores always in [0, 1]

    def score(self, cycle: CycleState, candidates: Sequence[Endpoint]) -> Scores:
        loads = snapshot_column(cycle, candidates, "load", _load)
        return min_max_scores(with_in_flight(cycle, candidates, loads))


def _load(endpoint: Endpoint) -> int:
    metrics = endpoint.metrics
    return metrics.running + metrics.waiting if metrics is not None else 0


def from_parameters(params: Params) -> InFlightLoadScorer:
    params.done()
    return InFlightLoadScorer()
