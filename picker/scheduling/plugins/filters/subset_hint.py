"""`subset-hint-filter`: honour the gateway's subset hint (`envoy.lb.subset_hint`): choose only from it.

Parameters: none. No hint on the request: every candidate passes.
Rejection: 503 `no_endpoint_in_subset` when the hint names no candidate (including an empty hint).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from picker.scheduling.columns import Candidates
from picker.scheduling.framework import CycleState
from picker.scheduling.params import Params
from picker.scheduling.types import Endpoint, Rejection

TYPE = "subset-hint-filter"


class SubsetHintFilter:
    TYPE = TYPE

    def filter(self, cycle: CycleState, candidates: Sequence[Endpoint]) -> Candidates | Rejection:
        hint = cycle.request.subset_hint
        candidates = Candidates.of(candidates)
        if hint is None:
            return candidates
        index = candidates.positions()
        inside = [i for address in hint if (i := index.get(address)) is not None]
        if not inside:
            return Rejection(
                503, "no_endpoint_in_subset", "no ready endpoint in the gateway's endpoint subset"
            )
        if len(inside) == len(candidates):
            return candidates
        return Candidates(candidates.snapshot, candidates.indexes[np.unique(np.array(inside, dtype=np.intp))])


def from_parameters(params: Params) -> SubsetHintFilter:
    params.done()
    return SubsetHintFilter()
