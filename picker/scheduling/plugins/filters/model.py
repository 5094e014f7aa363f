"""`model-filter`: keep endpoints whose `/v1/models` lists the request's target model.

Parameters: none.
Rejections: 404 `model_not_found` when no endpoint serves the model; 503 `no_ready_endpoint` when
none is known to serve it but some have not reported their models yet.
"""

from __future__ import annotations

from collections.abc import Sequence

from picker.scheduling.columns import Candidates, Selection, selection
from picker.scheduling.framework import CycleState
from picker.scheduling.params import Params
from picker.scheduling.types import Endpoint, EndpointSnapshot, Rejection

TYPE = "model-filter"


def _serving(snapshot: EndpointSnapshot, target: str) -> Selection:
    return selection(snapshot, lambda e: e.served is not None and e.served.serves(target))


def _unreported(snapshot: EndpointSnapshot) -> Selection:
    return selection(snapshot, lambda e: e.served is None)


class ModelFilter:
    TYPE = TYPE

    def filter(self, cycle: CycleState, candidates: Sequence[Endpoint]) -> Candidates | Rejection:
        target = cycle.request.target_model
        candidates = Candidates.of(candidates)
        if not len(candidates.indexes):
            return Rejection(503, "no_ready_endpoint", "the inference pool has no endpoints")
        snapshot = candidates.snapshot
        kept = candidates.keep(snapshot.column(("serving", target), lambda s: _serving(s, target)))
        if len(kept.indexes):
            return kept
        if len(candidates.keep(snapshot.column("unreported", _unreported)).indexes):
            return Rejection(
                503, "no_ready_endpoint", f"no endpoint has reported serving model {target!r} yet"
            )
        return Rejection(404, "model_not_found", f"The model `{target}` does not exist.")


def from_parameters(params: Params) -> ModelFilter:
    params.done()
    return ModelFilter()
