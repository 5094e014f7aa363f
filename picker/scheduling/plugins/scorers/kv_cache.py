"""`kv-cache-utilization-scorer`: prefer endpoints with free KV cache: score `1 - kv_cache_usage`.

Parameters: none. An endpoint without metrics scores 0.
"""

from __future__ import annotations

from collections.abc import Sequence

from picker.scheduling.columns import Candidates, FloatArray, float_column
from picker.scheduling.framework import CycleState, Scores
from picker.scheduling.params import Params
from picker.scheduling.types import Endpoint, EndpointSnapshot

TYPE = "kv-cache-utilization-scorer"


class KvCacheScorer:
    TYPE = TYPE
    BOUNDED = True  # scores always in [0, 1]

    def score(self, cycle: CycleState, candidates: Sequence[Endpoint]) -> Scores:
        column: Scores = Candidates.of(candidates).column("kv-free", _free_column)
        return column

    def score_column(self, target_model: str, snapshot: EndpointSnapshot) -> FloatArray:
        """The same scores over the whole snapshot (they depend on nothing else)."""
        column: FloatArray = snapshot.column("kv-free", _free_column)
        return column


def _free_column(snapshot: EndpointSnapshot) -> FloatArray:
    return float_column(snapshot, _free)


def _free(endpoint: Endpoint) -> float:
    return 1.0 - endpoint.metrics.kv_cache_usage if endpoint.metrics is not None else 0.0


def from_parameters(params: Params) -> KvCacheScorer:
    params.done()
    return KvCacheScorer()
