"""Analysis windows from the picker's cumulative `/measurements`: per-replica deltas, merge, TargetWindow.

Pure functions on the JSON documents (docs/rollout.md, "Windows"); polling lives in rollout/poll.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

from rollout.judgement import TargetWindow
from rollout.stats import Histogram

SCHEMA = "inference-gateway.measurements/v1"
KINDS = ("streaming", "non_streaming")
LATENCIES = ("ttft_seconds", "tpot_seconds")
SHED_CODE = "InferencePoolResourceExhausted"  # the picker's 429: the pool is full
# Codes the picker answers with a 5xx for a resolved target (no ready endpoint, its own fault).
SERVER_ERROR_CODES = frozenset({"ServiceUnavailable", "Internal"})

TargetKey = tuple[str, str, str]  # (pool, model, target)
Bounds = Mapping[str, tuple[float, ...]]


class MeasurementsError(ValueError):
    """A document that is not the picker's measurements, or two that cannot be compared or merged."""


@dataclass(frozen=True)
class Series:
    """One latency histogram's window: per-bucket counts (the last above the top bound) and the sum."""

    counts: tuple[int, ...]
    sum: float = 0.0

    @property
    def count(self) -> int:
        return sum(self.counts)

    def __add__(self, other: Series) -> Series:
        if len(other.counts) != len(self.counts):
            raise MeasurementsError("latency series with different buckets cannot be merged")
        return Series(
            tuple(a + b for a, b in zip(self.counts, other.counts, strict=True)), self.sum + other.sum
        )

    def __sub__(self, other: Series) -> Series:
        return Series(
            tuple(a - b for a, b in zip(self.counts, other.counts, strict=True)), self.sum - other.sum
        )


@dataclass(frozen=True)
class TargetDelta:
    """What one target served in a window, as the picker counts it (counts, classes, histograms)."""

    routed: int = 0
    rejected: Mapping[str, int] = field(default_factory=dict)  # GIE error code -> requests
    requests: int = 0  # outcomes from the access log: the sum of `responses`
    responses: Mapping[str, int] = field(default_factory=dict)  # status class -> requests
    ttft: Mapping[str, Series] = field(default_factory=dict)  # "streaming" / "non_streaming"
    tpot: Mapping[str, Series] = field(default_factory=dict)

    def __add__(self, other: TargetDelta) -> TargetDelta:
        return TargetDelta(
            self.routed + other.routed,
            _add_counts(self.rejected, other.rejected),
            self.requests + other.requests,
            _add_counts(self.responses, other.responses),
            _add_series(self.ttft, other.ttft),
            _add_series(self.tpot, other.tpot),
        )

    def __sub__(self, other: TargetDelta) -> TargetDelta:
        return TargetDelta(
            self.routed - other.routed,
            _sub_counts(self.rejected, other.rejected),
            self.requests - other.requests,
            _sub_counts(self.responses, other.responses),
            {k: s - other.ttft[k] if k in other.ttft else s for k, s in self.ttft.items()},
            {k: s - other.tpot[k] if k in other.tpot else s for k, s in self.tpot.items()},
        )

    def numbers(self) -> list[int]:
        """Every count, for the check that nothing went down; the order only matters between equal keys."""
        values = [self.routed, self.requests, *self.rejected.values(), *self.responses.values()]
        for series in (*self.ttft.values(), *self.tpot.values()):
            values.extend(series.counts)
        return values


@dataclass(frozen=True)
class ReplicaWindow:
    """One replica's share of a window: its deltas and whether it restarted within it."""

    replica: str
    since: float  # the replica's clock: the previous poll's `now`, or its start after a restart
    until: float
    restarted: bool
    bounds: Bounds
    targets: Mapping[TargetKey, TargetDelta]


@dataclass(frozen=True)
class Window:
    """The merged window over the replicas that answered, with what is known to be missing from it."""

    targets: Mapping[TargetKey, TargetDelta]
    bounds: Bounds
    replicas: tuple[str, ...] = ()
    restarted: tuple[str, ...] = ()
    missing: Mapping[str, str] = field(default_factory=dict)  # replica URL -> why it is not counted

    @property
    def complete(self) -> bool:
        return not self.missing

    def target(self, pool: str, model: str, target: str) -> TargetDelta:
        """The target's delta; an empty one if no replica saw it in this window."""
        return self.targets.get((pool, model, target), TargetDelta())


def _add_counts(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    return {k: a.get(k, 0) + b.get(k, 0) for k in (*a, *(k for k in b if k not in a))}


def _add_series(a: Mapping[str, Series], b: Mapping[str, Series]) -> dict[str, Series]:
    out = dict(a)
    for kind, series in b.items():
        out[kind] = out[kind] + series if kind in out else series
    return out


def _sub_counts(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    return {k: a.get(k, 0) - b.get(k, 0) for k in (*a, *(k for k in b if k not in a))}


def parse(doc: Mapping[str, Any]) -> tuple[Bounds, dict[TargetKey, TargetDelta]]:
    """A `/measurements` document's bucket bounds and per-target cumulative counts."""
    if doc.get("schema") != SCHEMA:
        raise MeasurementsError(f"not a measurements document (schema {doc.get('schema')!r}, want {SCHEMA})")
    try:
        bounds = {name: tuple(float(b) for b in doc["bounds"][name]) for name in LATENCIES}
        targets: dict[TargetKey, TargetDelta] = {}
        for t in doc["targets"]:
            key = (str(t["pool"]), str(t["model"]), str(t["target"]))
            ttft, tpot = (
                {kind: _series(t[name][kind], bounds[name]) for kind in KINDS} for name in LATENCIES
            )
            targets[key] = TargetDelta(
                int(t["routed"]),
                {str(k): int(v) for k, v in t["rejected"].items()},
                int(t["requests"]),
                {str(k): int(v) for k, v in t["responses"].items()},
                ttft,
                tpot,
            )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise MeasurementsError(f"malformed measurements document: {exc!r}") from exc
    return bounds, targets


def _series(raw: Mapping[str, Any], bounds: Sequence[float]) -> Series:
    counts = tuple(int(c) for c in raw["counts"])
    if len(counts) != len(bounds) + 1:
        raise MeasurementsError(f"{len(counts)} bucket counts for {len(bounds)} bounds (want bounds + 1)")
    return Series(counts, float(raw["sum"]))


def _restarted(
    prev: Mapping[str, Any],
    cur: Mapping[str, Any],
    prev_targets: Mapping[TargetKey, TargetDelta],
    cur_targets: Mapping[TargetKey, TargetDelta],
    prev_bounds: Bounds,
    cur_bounds: Bounds,
) -> str | None:
    """Why the current poll is not a continuation of the previous one, or None if it is."""
    if prev.get("started_at") != cur.get("started_at") or prev.get("replica") != cur.get("replica"):
        return "a new process (replica or started_at changed)"
    if prev_bounds != cur_bounds:
        return "the bucket bounds changed"
    for key, before in prev_targets.items():
        after = cur_targets.get(key)
        if after is None:
            return f"target {'/'.join(key)} is gone"
        delta = after - before
        if any(v < 0 for v in delta.numbers()):
            return f"a count of {'/'.join(key)} went down"
    return None


def replica_delta(previous: Mapping[str, Any] | None, current: Mapping[str, Any]) -> ReplicaWindow:
    """One replica's window between two polls; after a restart (or with no previous poll), the current
    poll alone: everything it counted since it started."""
    bounds, targets = parse(current)
    until = float(current["now"])
    restarted = previous is None
    if previous is not None:
        prev_bounds, prev_targets = parse(previous)
        restarted = _restarted(previous, current, prev_targets, targets, prev_bounds, bounds) is not None
        if not restarted:
            deltas = {key: t - prev_targets[key] if key in prev_targets else t for key, t in targets.items()}
            since = float(previous["now"])
            return ReplicaWindow(str(current["replica"]), since, until, False, bounds, _nonzero(deltas))
    since = float(current["started_at"])
    return ReplicaWindow(str(current["replica"]), since, until, restarted, bounds, _nonzero(targets))


def _nonzero(targets: Mapping[TargetKey, TargetDelta]) -> dict[TargetKey, TargetDelta]:
    # A target nobody asked for in the window is left out, as if no replica had seen it.
    return {key: t for key, t in targets.items() if any(t.numbers())}


def merge(windows: Iterable[ReplicaWindow], missing: Mapping[str, str] | None = None) -> Window:
    """The sum over replicas, count by count and bucket by bucket; `missing` names the replicas that did
    not answer (the window is then incomplete)."""
    targets: dict[TargetKey, TargetDelta] = {}
    bounds: Bounds | None = None
    replicas: list[str] = []
    restarted: list[str] = []
    for w in windows:
        if bounds is None:
            bounds = w.bounds
        elif w.bounds != bounds:
            raise MeasurementsError(
                f"replica {w.replica} has other bucket bounds: its histograms cannot merge"
            )
        replicas.append(w.replica)
        if w.restarted:
            restarted.append(w.replica)
        for key, delta in w.targets.items():
            targets[key] = targets[key] + delta if key in targets else delta
    return Window(targets, bounds or {}, tuple(replicas), tuple(restarted), dict(missing or {}))


def histogram(series: Series | None, bounds: Sequence[float]) -> Histogram:
    """A `Histogram` (cumulative, with the +Inf bucket) from a series' per-bucket counts."""
    edges = (*bounds, float("inf"))
    counts = series.counts if series is not None else (0,) * len(edges)
    return Histogram(edges, tuple(accumulate(counts)))


def target_window(
    delta: TargetDelta, bounds: Bounds, tpot_kind: str = "streaming", load: float | None = None
) -> TargetWindow:
    """The judgement's input for one target: streaming TTFT (a non-streaming "TTFT" is the whole
    generation), TPOT of `tpot_kind`, errors, timeouts and shed requests."""
    rejected = delta.rejected
    shed = rejected.get(SHED_CODE, 0)
    picker_errors = sum(n for code, n in rejected.items() if code in SERVER_ERROR_CODES)
    # Answered by the picker itself, the rejections never reach the access log: they add to `requests`.
    requests = delta.requests + sum(rejected.values())
    responses = delta.responses
    return TargetWindow(
        ttft=histogram(delta.ttft.get("streaming"), bounds["ttft_seconds"]),
        tpot=histogram(delta.tpot.get(tpot_kind), bounds["tpot_seconds"]),
        requests=requests,
        # A reset (the answer broke off) is the target's failure like a 5xx; the judgement sums both.
        errors_5xx=responses.get("5xx", 0) + responses.get("reset", 0) + picker_errors,
        timeouts=responses.get("timeout", 0),
        shed=shed,
        load=load,
    )


def target_windows(window: Window, tpot_kind: str = "streaming") -> dict[TargetKey, TargetWindow]:
    """Every target's TargetWindow of a merged window."""
    return {key: target_window(delta, window.bounds, tpot_kind) for key, delta in window.targets.items()}
