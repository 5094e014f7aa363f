"""`kv-cache-utilization-scorer`: prefer endpoints with free KV cache: score `1 - kv_cache_usage`.

Parameters: none. An endpoint without metrics scores 0.
"""

from __future__ import annotations

from collections.abc import Sequence

from picker.scheduling.framework import CycleState, Scores
from picker.scheduling.params import Params
from picker.scheduling.types import Endpoint

TYPE = "kv-cache-utilization-scorer"


class KvCacheScorer:
    TYPE = TYPE
    BOUNDED = True  # scores always in [0, 1]
    SNAPSHOT_PURE = True  # memoised per snapshot by the Scheduler

    def score(self, cycle: CycleState, candidates: Sequence[Endpoint]) -> Scores:
        return [1.0 - e.metrics.kv_cache_usage if e.metrics is not None else 0.0 for e in candidates]


def from_parameters(params: Params) -> KvCacheScorer:
    params.done()
    return KvCacheScorer()
