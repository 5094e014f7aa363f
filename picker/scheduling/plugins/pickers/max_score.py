"""`max-score-picker`: the highest total first, ties broken at random; returns primary + fallbacks.

Parameters: `maxNumOfEndpoints` (default 3: the primary and up to 2 fallbacks, all distinct).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from picker.scheduling.columns import FloatArray
from picker.scheduling.framework import CycleState
from picker.scheduling.params import Params
from picker.scheduling.types import Endpoint

TYPE = "max-score-picker"
DEFAULT_MAX_ENDPOINTS = 3


class MaxScorePicker:
    TYPE = TYPE

    def __init__(self, max_endpoints: int = DEFAULT_MAX_ENDPOINTS) -> None:
        self.max_endpoints = max(1, max_endpoints)

    def pick(
        self, cycle: CycleState, candidates: Sequence[Endpoint], totals: Sequence[float] | FloatArray
    ) -> list[int]:
        scores = np.asarray(totals, dtype=np.float64)
        size = len(scores)
        count = min(self.max_endpoints, size)
        if count == 0:
            return []
        # The count-th best total is the cut (a partial sort finds it in one pass): all above it are
        # in, the rest come from the ties at the cut.
        cut = np.partition(scores, size - count)[size - count] if size > count else scores.min()
        contenders = np.flatnonzero(scores >= cut)
        best = scores[contenders]
        above: list[int] = contenders[best > cut].tolist()
        at_cut: list[int] = contenders[best == cut].tolist()
        if len(above) > 1:
            # Shuffle, then a stable sort by score: equal scores end up in random order.
            cycle.rng.shuffle(above)
            above.sort(key=scores.item, reverse=True)
        return above + cycle.rng.sample(at_cut, count - len(above))


def from_parameters(params: Params) -> MaxScorePicker:
    count = params.integer("maxNumOfEndpoints", DEFAULT_MAX_ENDPOINTS, minimum=1)
    params.done()
    return MaxScorePicker(count)
