"""A cycle's candidates: an index set into the pool's immutable snapshot, and the columns they read.

Filters narrow the index set; scorers read numpy columns the snapshot owns (each computed once per
snapshot: its metrics do not change while it is reused), taken at the candidates' indexes. Only the
in-flight counts (live, from the snapshot's mapping) are read per cycle, and those touch only the
busy endpoints.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import attrgetter
from typing import Any, overload

import numpy as np
import numpy.typing as npt

from picker.scheduling.types import Endpoint, EndpointSnapshot

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
Indexes = npt.NDArray[np.intp]

_address = attrgetter("address")
_in_flight = attrgetter("in_flight")
_UNSET: Any = object()


@dataclass(frozen=True)
class Selection:
    """Which of a snapshot's endpoints pass one test: a mask over the snapshot and its indexes."""

    mask: BoolArray
    indexes: Indexes
    everything: bool


def _all(snapshot: EndpointSnapshot) -> Indexes:
    indexes: Indexes = _frozen(np.arange(len(snapshot), dtype=np.intp))
    return indexes


def _addresses(snapshot: EndpointSnapshot) -> list[str]:
    return list(map(_address, snapshot))


def _positions(snapshot: EndpointSnapshot) -> dict[str, int]:
    return {address: i for i, address in enumerate(map(_address, snapshot))}


def _frozen(array: Any) -> Any:
    array.flags.writeable = False  # shared by every cycle over the snapshot
    return array


def float_column(snapshot: EndpointSnapshot, read: Callable[[Endpoint], float]) -> FloatArray:
    """`read(endpoint)` per endpoint of the snapshot as float64 (read-only)."""
    column: FloatArray = _frozen(np.fromiter(map(read, snapshot), dtype=np.float64, count=len(snapshot)))
    return column


def selection(snapshot: EndpointSnapshot, test: Callable[[Endpoint], bool]) -> Selection:
    """The endpoints of the snapshot for which `test` holds."""
    mask: BoolArray = _frozen(np.fromiter(map(test, snapshot), dtype=np.bool_, count=len(snapshot)))
    indexes = _frozen(np.flatnonzero(mask))
    return Selection(mask, indexes, len(indexes) == len(snapshot))


class Candidates(Sequence[Endpoint]):
    """The endpoints one cycle may still choose from: sorted indexes into `snapshot`."""

    __slots__ = ("_in_flight", "_positions", "full", "indexes", "snapshot")

    def __init__(self, snapshot: EndpointSnapshot, indexes: Indexes | None = None) -> None:
        self.snapshot = snapshot
        self.indexes: Indexes = snapshot.column("all", _all) if indexes is None else indexes
        self.full = len(self.indexes) == len(snapshot)  # sorted and distinct: the identity
        self._in_flight: FloatArray | None = _UNSET
        self._positions: dict[str, int] | None = None

    @classmethod
    def of(cls, endpoints: Sequence[Endpoint]) -> Candidates:
        """`endpoints` as candidates (all of a snapshot; a plain sequence becomes one)."""
        if isinstance(endpoints, Candidates):
            return endpoints
        if isinstance(endpoints, EndpointSnapshot):
            return cls(endpoints)
        return cls(EndpointSnapshot(endpoints))

    def __len__(self) -> int:
        return len(self.indexes)

    @overload
    def __getitem__(self, i: int) -> Endpoint: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[Endpoint]: ...
    def __getitem__(self, i: int | slice) -> Endpoint | Sequence[Endpoint]:
        if isinstance(i, slice):
            return [self.snapshot[j] for j in self.indexes[i].tolist()]
        return self.snapshot[int(self.indexes[i])]

    def __iter__(self) -> Iterator[Endpoint]:
        return map(self.snapshot.__getitem__, self.indexes.tolist())

    def column(self, key: Hashable, make: Callable[[EndpointSnapshot], Any]) -> Any:
        """The snapshot's column `key` (see `EndpointSnapshot.column`) at the candidates' indexes."""
        column = self.snapshot.column(key, make)
        return column if self.full else column[self.indexes]

    def keep(self, kept: Selection) -> Candidates:
        """The candidates that are also in `kept` (self when that is all of them)."""
        if kept.everything:
            return self
        if self.full:
            return Candidates(self.snapshot, kept.indexes)
        indexes = self.indexes[kept.mask[self.indexes]]
        return self if len(indexes) == len(self.indexes) else Candidates(self.snapshot, indexes)

    def positions(self) -> dict[str, int]:
        """address -> candidate index (the snapshot's own map when every endpoint is a candidate)."""
        found = self._positions
        if found is None:
            every: dict[str, int] = self.snapshot.column("positions", _positions)
            if self.full:
                found = every
            else:
                addresses = self.snapshot.column("addresses", _addresses)
                found = {addresses[i]: j for j, i in enumerate(self.indexes.tolist())}
            self._positions = found
        return found

    def addresses_at(self, chosen: list[int]) -> list[str]:
        """The addresses of the candidates at these indexes."""
        every: list[str] = self.snapshot.column("addresses", _addresses)
        at = chosen if self.full else self.indexes[chosen].tolist()
        return [every[i] for i in at]

    def addresses(self) -> list[str]:
        every: list[str] = self.snapshot.column("addresses", _addresses)
        return every if self.full else [every[i] for i in self.indexes.tolist()]

    def in_flight(self) -> FloatArray | None:
        """Each candidate's in-flight count (None when all are 0), read once per cycle, shared by scorers.

        With a live mapping (from the snapshot) only its entries are visited: it holds the busy
        endpoints, typically far fewer than the candidates. Otherwise `Endpoint.in_flight` is read.
        """
        if self._in_flight is not _UNSET:
            return self._in_flight
        mapping = self.snapshot.in_flight
        count = len(self.indexes)
        column: FloatArray | None
        if mapping is None:
            column = self.column("in_flight", lambda s: float_column(s, _in_flight))
        elif not mapping:
            column = None
        elif len(mapping) * 4 < count:
            column = np.zeros(count)
            index = self.positions()
            for address, n in mapping.items():
                i = index.get(address)
                if i is not None:
                    column[i] = n
        else:
            addresses = self.addresses()
            column = np.fromiter(map(mapping.get, addresses, repeat(0)), dtype=np.float64, count=count)
        if column is not None and not column.any():
            column = None
        self._in_flight = column
        return column

    def with_in_flight(self, base: FloatArray) -> FloatArray:
        """`base` plus each candidate's in-flight count (a new array only when some are in flight)."""
        in_flight = self.in_flight()
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
    # In place on one new array; never above 1 (v >= min), so only the floor needs clipping.
    scores: FloatArray = values - low
    scores *= 1.0 / span
    np.subtract(1.0, scores, out=scores)
    np.maximum(scores, 0.0, out=scores)
    return scores
