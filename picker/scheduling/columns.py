"""Per-candidate columns as numpy arrays, memoised so each is computed once per snapshot (or cycle).

Scorers read endpoint fields through these instead of looping over the endpoints on every request:
a snapshot's metrics do not change while it is reused, so only the in-flight counts (live, from the
snapshot's mapping) are read per cycle, and those touch only the busy endpoints.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import repeat
from operator import attrgetter
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from picker.scheduling.types import Endpoint

if TYPE_CHECKING:
    from picker.scheduling.framework import CycleState

FloatArray = npt.NDArray[np.float64]

_address = attrgetter("address")
_in_flight = attrgetter("in_flight")


def _memoised(
    cycle: CycleState, key: tuple[Any, ...], candidates: Sequence[Endpoint], make: Callable[[], Any]
) -> Any:
    """`make()` once per candidates object; the entry keeps `candidates` alive so its id stays unique."""
    cached = cycle.memo.get(key)
    if cached is None or cached[0] is not candidates:
        cached = cycle.memo[key] = (candidates, make())
    return cached[1]


def snapshot_column(
    cycle: CycleState, candidates: Sequence[Endpoint], name: str, read: Callable[[Endpoint], float]
) -> FloatArray:
    """`read(endpoint)` per candidate as float64, memoised for the snapshot (its metrics are fixed)."""

    def make() -> FloatArray:
        return np.fromiter(map(read, candidates), dtype=np.float64, count=len(candidates))

    column: FloatArray = _memoised(cycle, ("column", name, id(candidates)), candidates, make)
    return column


def positions(cycle: CycleState, candidates: Sequence[Endpoint]) -> dict[str, int]:
    """address -> index in candidates, memoised for the snapshot."""

    def make() -> dict[str, int]:
        return {address: i for i, address in enumerate(map(_address, candidates))}

    found: dict[str, int] = _memoised(cycle, ("positions", id(candidates)), candidates, make)
    return found


def in_flight_column(cycle: CycleState, candidates: Sequence[Endpoint]) -> FloatArray | None:
    """Each candidate's in-flight count (None when all are 0), read once per cycle, shared by scorers.

    With a live mapping (from an `EndpointSnapshot`) only its entries are visited: it holds the busy
    endpoints, typically far fewer than the candidates. Otherwise `Endpoint.in_flight` is read.
    """
    key = ("in_flight", id(candidates))
    data = cycle.data
    if key in data:
        column: FloatArray | None = data[key]
        return column
    mapping = cycle.in_flight
    count = len(candidates)
    if mapping is None:
        column = np.fromiter(map(_in_flight, candidates), dtype=np.float64, count=count)
    elif not mapping:
        column = None
    elif len(mapping) * 4 < count:
        index = positions(cycle, candidates)
        column = np.zeros(count)
        for address, n in mapping.items():
            i = index.get(address)
            if i is not None:
                column[i] = n
    else:
        addresses: list[str] = _memoised(
            cycle, ("addresses", id(candidates)), candidates, lambda: list(map(_address, candidates))
        )
        column = np.fromiter(map(mapping.get, addresses, repeat(0)), dtype=np.float64, count=count)
    if column is not None and not column.any():
        column = None
    data[key] = column
    return column


def with_in_flight(cycle: CycleState, candidates: Sequence[Endpoint], base: FloatArray) -> FloatArray:
    """`base` plus each candidate's in-flight count (a new array only when some are in flight)."""
    in_flight = in_flight_column(cycle, candidates)
    return base if in_flight is None else base + in_flight


def relative_scores(values: FloatArray, span: float) -> FloatArray | float:
    """`1 - (v - min) / span`, clipped to [0, 1]: each unit above the lowest costs the same (1/span).

    Unlike min-max normalisation, a difference of one request between otherwise idle endpoints stays
    a small difference, so it cannot outweigh a strong preference (a cached prefix) from another scorer.
    A bare 1.0 when all values are equal (the ranking cannot change).
    """
    if not values.size:
        return 1.0
    low = values.min()
    if values.max() == low:
        return 1.0
    scores: FloatArray = np.clip(1.0 - (values - low) * (1.0 / span), 0.0, 1.0)
    return scores
