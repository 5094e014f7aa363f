"""`max-score-picker`: the highest total first, ties broken at random; returns primary + fallbacks.

Parameters: `maxNumOfEndpoints` (default 3: the primary and up to 2 fallbacks, all distinct).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from itertools import compress, repeat
from operator import ge

from picker.scheduling.framework import CycleState
from picker.scheduling.params import Params
from picker.scheduling.types import Endpoint

TYPE = "max-score-picker"
DEFAULT_MAX_ENDPOINTS = 3


class MaxScorePicker:
    TYPE = TYPE

    def __init__(self, max_endpoints: int = DEFAULT_MAX_ENDPOINTS) -> None:
        self.max_endpoints = max(1, max_endpoints)

    def pick(self, cycle: CycleState, candidates: Sequence[Endpoint], totals: Sequence[float]) -> list[int]:
        count = min(self.max_endpoints, len(totals))
        if count == 0:
            return []
        # The count-th best total is the cut: all above it are in, the rest come from ties at the cut.
        cut = heapq.nlargest(count, totals)[-1]
        contenders = list(compress(range(len(totals)), map(ge, totals, repeat(cut))))
        above = [i for i in contenders if totals[i] > cut]
        at_cut = [i for i in contenders if totals[i] == cut] if above else contenders
        if len(above) > 1:
            # Shuffle, then a stable sort by score: equal scores end up in random order.
            cycle.rng.shuffle(above)
            above.sort(key=totals.__getitem__, reverse=True)
        return above + cycle.rng.sample(at_cut, count - len(above))


def from_parameters(params: Params) -> MaxScorePicker:
    count = params.integer("maxNumOfEndpoints", DEFAULT_MAX_ENDPOINTS, minimum=1)
    params.done()
    return MaxScorePicker(count)
