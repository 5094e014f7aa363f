"""`model-filter`: keep endpoints whose `/v1/models` lists the request's target model.

Parameters: none.
Rejections: 404 `model_not_found` when no endpoint serves the model; 503 `no_ready_endpoint` when
none is known to serve it but some have not reported their models yet.
"""

from __future__ import annotations

from collections.abc import Sequence

from picker.scheduling.framework import CycleState
from picker.scheduling.params import Params
from picker.scheduling.types import Endpoint, Rejection

TYPE = "model-filter"


class ModelFilter:
    TYPE = TYPE
    SNAPSHOT_PURE = True  # memoised per snapshot by the Scheduler

    def filter(self, cycle: CycleState, candidates: Sequence[Endpoint]) -> Sequence[Endpoint] | Rejection:
        target = cycle.request.target_model
        if not candidates:
            return Rejection(503, "no_ready_endpoint", "the inference pool has no endpoints")
        kept = [
            e
            for e in candidates
            if e.served is not None and (target in e.served.base or target in e.served.adapters)
        ]
        if len(kept) == len(candidates):
            return candidates
        if kept:
            return kept
        if any(e.served is None for e in candidates):
            return Rejection(
                503, "no_ready_endpoint", f"no endpoint has reported serving model {target!r} yet"
            )
        return Rejection(404, "model_not_found", f"The model `{target}` does not exist.")


def from_parameters(params: Params) -> ModelFilter:
    params.done()
    return ModelFilter()
