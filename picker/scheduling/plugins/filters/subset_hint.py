"""`subset-hint-filter`: honour the gateway's subset hint (`envoy.lb.subset_hint`): choose only from it.

Parameters: none. No hint on the request: every candidate passes.
Rejection: 503 `no_endpoint_in_subset` when the hint names no candidate (including an empty hint).
"""

from __future__ import annotations

from collections.abc import Sequence

from picker.scheduling.framework import CycleState
from picker.scheduling.params import Params
from picker.scheduling.types import Endpoint, Rejection

TYPE = "subset-hint-filter"


class SubsetHintFilter:
    TYPE = TYPE
    SNAPSHOT_PURE = True  # memoised per snapshot by the Scheduler

    def filter(self, cycle: CycleState, candidates: Sequence[Endpoint]) -> Sequence[Endpoint] | Rejection:
        hint = cycle.request.subset_hint
        if hint is None:
            return candidates
        kept = [e for e in candidates if e.address in hint]
        if kept:
            return kept
        return Rejection(503, "no_endpoint_in_subset", "no ready endpoint in the gateway's endpoint subset")


def from_parameters(params: Params) -> SubsetHintFilter:
    params.done()
    return SubsetHintFilter()
