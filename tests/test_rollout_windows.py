"""Analysis windows from polls of the picker's /measurements: deltas, restarts, merge, TargetWindow, judge."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from picker.handlers.accesslog import Outcome, Timings
from picker.metrics import PickerMetrics
from rollout.discovery import endpoint_slice_urls
from rollout.judgement import Result, judge
from rollout.poll import WindowTracker, poll
from rollout.stats import Histogram
from rollout.windows import (
    MeasurementsError,
    ReplicaWindow,
    merge,
    replica_delta,
    target_window,
    target_windows,
)

POOL, MODEL, STABLE, CANARY = "default/pool", "m", "stable", "canary"
S, C = (POOL, MODEL, STABLE), (POOL, MODEL, CANARY)
_ids = itertools.count()


class Replica:
    """One picker replica's real measurement series, fed outcomes as its access log would be."""

    def __init__(self, name: str, started_at: float = 1000.0) -> None:
        self.metrics = PickerMetrics()
        self.metrics.measurements.replica = name
        self.metrics.measurements.started_at = started_at

    def serve(
        self,
        target: str,
        ttft: float = 0.1,
        status: int | None = 200,
        flags: frozenset[str] = frozenset(),
        stream: bool = True,
    ) -> None:
        self.metrics.requests.labels(MODEL, target, POOL).inc()
        timings = Timings(first_chunk=ttft, last_upstream_tx=0.001, last_upstream_rx=ttft + 0.07)
        outcome = Outcome(
            str(next(_ids)), POOL, MODEL, target, "10.0.0.1:8000", status, 5, 8, stream, flags, timings
        )
        self.metrics.measurements.record(outcome)

    def shed(self, target: str) -> None:
        self.metrics.errors.labels(MODEL, target, POOL, "InferencePoolResourceExhausted").inc()

    def doc(self, now: float) -> dict[str, Any]:
        doc: dict[str, Any] = orjson.loads(self.metrics.measurements_json())
        doc["now"] = now
        return doc


def test_delta_of_two_polls_is_what_was_served_between_them() -> None:
    r = Replica("p-1")
    for _ in range(5):
        r.serve(STABLE, 0.1)
    r.shed(STABLE)
    first = r.doc(1010.0)
    for _ in range(3):
        r.serve(STABLE, 0.2)
    r.serve(STABLE, status=503)
    r.serve(STABLE, status=504, flags=frozenset({"UT"}))
    r.serve(STABLE, 0.1, stream=False)
    r.serve(CANARY, 0.3)
    r.shed(STABLE)
    r.shed(STABLE)

    w = replica_delta(first, r.doc(1020.0))
    assert (w.replica, w.since, w.until, w.restarted) == ("p-1", 1010.0, 1020.0, False)
    s, c = w.targets[S], w.targets[C]
    assert (s.routed, s.requests, s.rejected) == (6, 6, {"InferencePoolResourceExhausted": 2})
    assert (s.responses["2xx"], s.responses["5xx"], s.responses["timeout"]) == (4, 1, 1)
    assert (s.ttft["streaming"].count, s.ttft["non_streaming"].count) == (3, 1)
    assert s.ttft["streaming"].sum == pytest.approx(0.6)
    assert (c.routed, c.requests, c.ttft["streaming"].count) == (1, 1, 1)

    tw = target_window(s, w.bounds)
    # Streaming TTFT only; the shed requests (never in the access log) count as requests.
    assert (tw.requests, tw.errors_5xx, tw.timeouts, tw.shed) == (8, 1, 1, 2)
    assert isinstance(tw.ttft, Histogram) and isinstance(tw.tpot, Histogram)
    assert tw.ttft.total == 3 and tw.tpot.total == 3


def test_a_quiet_target_is_left_out_of_the_window() -> None:
    r = Replica("p-1")
    r.serve(STABLE)
    first = r.doc(1.0)
    r.serve(CANARY)
    assert set(replica_delta(first, r.doc(2.0)).targets) == {C}


def test_a_restart_takes_the_new_poll_alone() -> None:
    old = Replica("p-1", started_at=1000.0)
    for _ in range(10):
        old.serve(STABLE)
    before = old.doc(1010.0)
    new = Replica("p-1", started_at=1015.0)  # the same pod name, a new process
    for _ in range(2):
        new.serve(STABLE)
    w = replica_delta(before, new.doc(1020.0))
    assert w.restarted and w.since == 1015.0
    assert w.targets[S].requests == 2


def test_a_count_going_down_is_a_restart_even_with_the_same_start() -> None:
    old = Replica("p-1", started_at=1000.0)
    for _ in range(10):
        old.serve(STABLE)
    before = old.doc(1010.0)
    new = Replica("p-1", started_at=1000.0)  # a clock that lies: the counts still tell
    for _ in range(3):
        new.serve(STABLE)
    w = replica_delta(before, new.doc(1020.0))
    assert w.restarted and w.targets[S].requests == 3


def test_no_previous_poll_is_the_whole_history() -> None:
    r = Replica("p-2", started_at=1005.0)
    r.serve(CANARY)
    w = replica_delta(None, r.doc(1020.0))
    assert w.restarted and w.since == 1005.0 and w.targets[C].requests == 1


def test_merge_sums_replicas_one_appearing_and_one_gone() -> None:
    a, b = Replica("p-a"), Replica("p-b")
    for _ in range(4):
        a.serve(STABLE, 0.1)
        b.serve(STABLE, 0.2)
    a0, b0 = a.doc(10.0), b.doc(10.0)
    # Window 1: a and b both counted.
    a.serve(STABLE, 0.1)
    b.serve(CANARY, 0.2)
    w1 = merge([replica_delta(a0, a.doc(20.0)), replica_delta(b0, b.doc(20.0))])
    assert w1.replicas == ("p-a", "p-b") and w1.complete
    assert (w1.target(*S).requests, w1.target(*C).requests) == (1, 1)
    # Window 2: b is scaled away (its last delta is lost), c appears: all it counted is in the window.
    a1 = a.doc(20.0)
    c = Replica("p-c", started_at=25.0)
    a.serve(STABLE, 0.1)
    c.serve(STABLE, 0.3)
    c.serve(CANARY, 0.3)
    w2 = merge([replica_delta(a1, a.doc(30.0)), replica_delta(None, c.doc(30.0))])
    assert w2.replicas == ("p-a", "p-c") and w2.restarted == ("p-c",)
    s = w2.target(*S)
    assert s.requests == 2 and s.ttft["streaming"].count == 2
    assert s.ttft["streaming"].sum == pytest.approx(0.4)
    windows = target_windows(w2)
    ttft = windows[S].ttft
    assert isinstance(ttft, Histogram) and ttft.total == 2 and windows[C].requests == 1


def test_merge_refuses_different_bounds_and_marks_missing_replicas() -> None:
    r = Replica("p-a")
    r.serve(STABLE)
    w = replica_delta(None, r.doc(1.0))
    other = ReplicaWindow("p-b", 0.0, 1.0, False, {"ttft_seconds": (1.0,), "tpot_seconds": (1.0,)}, {})
    with pytest.raises(MeasurementsError, match="p-b"):
        merge([w, other])
    partial = merge([w], missing={"http://10.0.0.9:9090/measurements": "timed out"})
    assert not partial.complete and partial.target(*S).requests == 1


def test_not_a_measurements_document_is_an_error() -> None:
    with pytest.raises(MeasurementsError, match="schema"):
        replica_delta(None, {"schema": "x"})


def _window_pair(rng: np.random.Generator, n: int, canary_factor: float) -> tuple[Any, Any]:
    """Two replicas, a 3:1 split between stable and canary, lognormal TTFT."""
    replicas = [Replica("p-a"), Replica("p-b")]
    first = [r.doc(0.0) for r in replicas]
    for i in range(4 * n):
        target, factor = (CANARY, canary_factor) if i % 4 == 0 else (STABLE, 1.0)
        replicas[i % 3 % 2].serve(target, float(rng.lognormal(np.log(0.2), 0.5)) * factor)
    window = merge(replica_delta(f, r.doc(60.0)) for f, r in zip(first, replicas, strict=True))
    windows = target_windows(window)
    return windows[S], windows[C]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_judge_fails_a_canary_with_3x_ttft_and_passes_equal_ones(seed: int) -> None:
    rng = np.random.default_rng(seed)
    stable, canary = _window_pair(rng, 400, 3.0)
    assert canary.requests == 400 and stable.requests == 1200
    verdict = judge(stable, canary)
    assert verdict.result is Result.FAIL and verdict.clear_failure
    stable, canary = _window_pair(rng, 400, 1.0)
    assert judge(stable, canary).result is Result.PASS


def test_too_few_samples_are_inconclusive() -> None:
    stable, canary = _window_pair(np.random.default_rng(4), 10, 1.0)
    assert judge(stable, canary).result is Result.INCONCLUSIVE


class Fleet:
    """Replicas behind real HTTP endpoints (aiohttp test servers); a replica can be made to fail."""

    def __init__(self) -> None:
        self.replicas: dict[str, Replica] = {}
        self.failing: set[str] = set()
        self.now = 0.0

    def app(self) -> web.Application:
        async def measurements(request: web.Request) -> web.Response:
            name = request.match_info["name"]
            if name in self.failing:
                return web.Response(status=503)
            return web.json_response(self.replicas[name].doc(self.now))

        app = web.Application()
        app.router.add_get("/{name}/measurements", measurements)
        return app


async def test_tracker_windows_with_replicas_failing_appearing_and_going() -> None:
    fleet = Fleet()
    fleet.replicas = {"a": Replica("p-a", 0.0), "b": Replica("p-b", 0.0)}
    server = TestServer(fleet.app())
    await server.start_server()
    urls = [str(server.make_url(f"/{n}/measurements")) for n in ("a", "b", "c")]
    listed = urls[:2]

    async def discover() -> list[str]:
        return listed

    clock = iter(float(t) for t in range(10, 100, 10))
    tracker = WindowTracker(discover, clock=lambda: next(clock))
    try:
        fleet.replicas["a"].serve(STABLE)  # before the baseline: never counted
        first = await tracker.advance()
        assert first.baseline and not first.complete and first.targets == {}

        fleet.replicas["a"].serve(STABLE)
        fleet.replicas["b"].serve(CANARY)
        w = await tracker.advance()
        assert w.complete and (w.target(*S).requests, w.target(*C).requests) == (1, 1)
        assert set(w.replicas.values()) == {"p-a", "p-b"}

        # b fails: reported, the window is incomplete, a's share still counted.
        fleet.failing.add("b")
        fleet.replicas["a"].serve(STABLE)
        fleet.replicas["b"].serve(CANARY)
        w = await tracker.advance()
        assert not w.complete and "HTTP 503" in w.window.missing[urls[1]]
        assert w.target(*S).requests == 1

        # b answers again but has no baseline (its canary request fell between): still incomplete.
        fleet.failing.clear()
        w = await tracker.advance()
        assert not w.complete and "unknown" in w.window.missing[urls[1]]
        assert w.target(*C).requests == 0

        # c starts within the window (after the previous call at 40): all it counted is in it; b is gone.
        fleet.replicas["c"] = Replica("p-c", 45.0)
        fleet.replicas["c"].serve(CANARY)
        fleet.replicas["b"].serve(CANARY)
        listed[:] = [urls[0], urls[2]]
        w = await tracker.advance()
        assert w.complete and w.window.restarted == ("p-c",)
        assert (w.target(*S).requests, w.target(*C).requests) == (0, 1)
    finally:
        await server.close()


async def test_poll_reports_an_unreachable_replica() -> None:
    (polled,) = await poll(["http://127.0.0.1:9/measurements"], timeout=1.0)
    assert polled.doc is None and polled.error


def test_endpoint_slices_give_the_serving_replicas_urls() -> None:
    slices = {
        "items": [
            {
                "ports": [{"name": "metrics", "port": 9090}, {"name": "grpc", "port": 9002}],
                "endpoints": [
                    {"addresses": ["10.0.0.2"], "conditions": {"ready": True}},
                    {"addresses": ["10.0.0.1"]},
                    {"addresses": ["10.0.0.3"], "conditions": {"ready": False, "serving": True}},
                    {"addresses": ["10.0.0.4"], "conditions": {"ready": False}},
                ],
            },
            {"ports": [{"name": "metrics", "port": 9090}], "endpoints": [{"addresses": ["fd00::5"]}]},
        ]
    }
    assert endpoint_slice_urls(slices, "metrics") == [
        "http://10.0.0.1:9090/measurements",
        "http://10.0.0.2:9090/measurements",
        "http://10.0.0.3:9090/measurements",
        "http://[fd00::5]:9090/measurements",
    ]
    assert endpoint_slice_urls(slices, "other") == []
    assert endpoint_slice_urls(slices, 9191)[0] == "http://10.0.0.1:9191/measurements"
