"""End to end: analysis windows polled from the real picker's /measurements, judged per target, with one
target's pods degraded (3x TTFT) in the second window."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import Counter
from typing import Any

import aiohttp
import pytest

from localgateway.run import LocalGateway
from rollout.judgement import Metric, Result, judge
from rollout.poll import MEASUREMENTS_PATH, WindowTracker, poll
from tests.e2e_support import BASE_SAMPLE, gateway_options

pytestmark = pytest.mark.e2e

POOL, MODEL = "default/reasoning-pool", "qwq"
DEGRADED, HEALTHY = "deepseek-r1", "qwq-32b"  # the two targets of model "qwq", each on its own pods
PER_WINDOW = 140  # a 50/50 split: about 70 per target, over the judgement's minimum of 50
_ids = itertools.count()


async def _send(gw: LocalGateway, session: aiohttp.ClientSession) -> str:
    """One streaming completion with usage (a unique prompt); returns the target that answered."""
    body: dict[str, Any] = {
        "model": MODEL,
        "prompt": f"request {next(_ids)}: tell me a story",
        "max_tokens": 4,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with session.post(gw.url() + "/v1/completions", json=body) as response:
        assert response.status == 200, await response.text()
        events = [
            line.decode().strip()[5:].strip() async for line in response.content if line.startswith(b"data:")
        ]
    assert events[-1] == "[DONE]"
    return str(json.loads(events[0])["model"])


async def _window_traffic(gw: LocalGateway, session: aiohttp.ClientSession) -> Counter[str]:
    served: Counter[str] = Counter()
    todo = iter(range(PER_WINDOW))

    async def worker() -> None:
        for _ in todo:
            served[await _send(gw, session)] += 1

    # Two at a time: the 2-pod target must not queue more than the 5-pod one (the judgement compares
    # like with like, docs/rollout.md "Load").
    await asyncio.gather(*(worker() for _ in range(2)))
    return served


async def _flushed(url: str, session: aiohttp.ClientSession, total: int) -> None:
    """Until the picker has every answered request from the access log (flushed every 0.1 s)."""
    deadline = time.monotonic() + 15
    while True:
        (polled,) = await poll([url], session)
        assert polled.doc is not None, polled.error
        seen = sum(t["requests"] for t in polled.doc["targets"])
        if seen >= total or time.monotonic() > deadline:
            assert seen == total
            return
        await asyncio.sleep(0.1)


async def test_tracker_windows_from_the_real_picker_and_a_degraded_target_fails() -> None:
    options = gateway_options([BASE_SAMPLE], time_scale=1.0)  # real-time latencies: above the noise
    async with LocalGateway(options) as gw, aiohttp.ClientSession() as session:
        assert gw.fleet is not None
        url = gw.picker_metrics_url.removesuffix("/metrics") + MEASUREMENTS_PATH
        tracker = WindowTracker([url])
        assert (await tracker.advance(session)).baseline

        # Window 1: both targets healthy.
        served = await _window_traffic(gw, session)
        await _flushed(url, session, PER_WINDOW)
        window = await tracker.advance(session)
        assert window.complete
        for target in (DEGRADED, HEALTHY):
            assert window.target(POOL, MODEL, target).requests == served[target]
            assert window.window.target(POOL, MODEL, target).ttft["streaming"].count == served[target]
        healthy = judge(window.target(POOL, MODEL, HEALTHY), window.target(POOL, MODEL, DEGRADED))
        assert healthy.result is not Result.FAIL, healthy.reason

        # Window 2: the candidate's pods answer with 3x TTFT.
        for server in gw.fleet.servers:
            if DEGRADED in server.models():
                control = {"degrade": {"model": DEGRADED, "ttft": 3}}
                async with session.post(server.url + "/sim/control", json=control) as answer:
                    assert answer.status == 200, await answer.text()
        served = await _window_traffic(gw, session)
        await _flushed(url, session, 2 * PER_WINDOW)
        window = await tracker.advance(session)
        assert window.complete
        for target in (DEGRADED, HEALTHY):
            assert window.target(POOL, MODEL, target).requests == served[target]
        verdict = judge(window.target(POOL, MODEL, HEALTHY), window.target(POOL, MODEL, DEGRADED))
        assert verdict.result is Result.FAIL, verdict.reason
        failed = {m.metric for m in verdict.metrics if m.result is Result.FAIL}
        assert Metric.TTFT_P90 in failed, verdict.reason
