"""End to end: per-target TTFT and TPOT measured by the gateway itself (Envoy's access log to the picker),
on /metrics and the picker's JSON, for the base-model canary with one target's pods slowed down."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import Counter
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from localgateway.run import LocalGateway
from picker.metrics import MEASUREMENTS_PATH
from tests.e2e_support import BASE_SAMPLE, gateway_options

pytestmark = pytest.mark.e2e

SLOW, FAST = "deepseek-r1", "qwq-32b"  # the two targets of model "qwq", each on its own pods
SLOWDOWN = 8.0
PER_KIND = 30  # requests sent streaming and as many not
KINDS = {True: "streaming", False: "non_streaming"}


async def _send(gw: LocalGateway, session: aiohttp.ClientSession, n: int, stream: bool) -> str:
    """One completion (a unique prompt: no prefix-cache hit); returns the target that answered."""
    body: dict[str, Any] = {"model": "qwq", "prompt": f"request {n}: tell me a story", "max_tokens": 8}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    async with session.post(gw.url() + "/v1/completions", json=body) as response:
        assert response.status == 200, await response.text()
        if not stream:
            return str((await response.json())["model"])
        events = [
            line.decode().strip()[5:].strip() async for line in response.content if line.startswith(b"data:")
        ]
    assert events[-1] == "[DONE]"
    return str(json.loads(events[0])["model"])


def _metric_counts(text: str) -> dict[tuple[str, str, str], tuple[float, float]]:
    """(histogram, target, streaming) -> (count, sum) from the exposition."""
    found: dict[tuple[str, str, str], list[float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name not in (
            "inference_model_request_ttft_seconds",
            "inference_model_request_tpot_seconds",
        ):
            continue
        for sample in family.samples:
            if sample.name.endswith(("_count", "_sum")):
                key = (family.name, sample.labels["target_model_name"], sample.labels["streaming"])
                values = found.setdefault(key, [0.0, 0.0])
                values[0 if sample.name.endswith("_count") else 1] = sample.value
    return {key: (values[0], values[1]) for key, values in found.items()}


async def _wait_for_counts(
    gw: LocalGateway, session: aiohttp.ClientSession, expected: Counter[tuple[str, str]]
) -> dict[str, Any]:
    """The JSON once every answered request is in it (the access log is flushed every 0.1 s)."""
    url = gw.picker_metrics_url.removesuffix("/metrics") + MEASUREMENTS_PATH
    deadline = time.monotonic() + 15
    while True:
        async with session.get(url) as response:
            doc: dict[str, Any] = await response.json()
        got = Counter(
            {
                (t["target"], kind): t["ttft_seconds"][kind]["count"]
                for t in doc["targets"]
                for kind in KINDS.values()
                if t["ttft_seconds"][kind]["count"]
            }
        )
        if got == expected or time.monotonic() > deadline:
            assert got == expected
            return doc
        await asyncio.sleep(0.1)


async def test_ttft_and_tpot_per_target_and_a_slowed_target_measures_slower() -> None:
    options = gateway_options([BASE_SAMPLE], time_scale=1.0)  # real-time latencies: above the noise
    async with LocalGateway(options) as gw, aiohttp.ClientSession() as session:
        assert gw.fleet is not None
        slowed = [s for s in gw.fleet.servers if SLOW in s.models()]
        assert slowed and len(slowed) < len(gw.fleet.servers)
        for server in slowed:
            async with session.post(server.url + "/sim/control", json={"slowdown": SLOWDOWN}) as answer:
                assert answer.status == 200

        served: Counter[tuple[str, str]] = Counter()
        todo = iter(itertools.product(range(PER_KIND), (True, False)))

        async def worker() -> None:
            for n, stream in todo:
                served[(await _send(gw, session, n, stream), KINDS[stream])] += 1

        await asyncio.gather(*(worker() for _ in range(4)))
        assert {target for target, _ in served} == {SLOW, FAST}
        doc = await _wait_for_counts(gw, session, served)

        by_target = {t["target"]: t for t in doc["targets"]}
        for target in (SLOW, FAST):
            entry = by_target[target]
            answered = served[(target, "streaming")] + served[(target, "non_streaming")]
            assert (entry["pool"], entry["model"]) == ("default/reasoning-pool", "qwq")
            assert entry["requests"] == entry["responses"]["2xx"] == answered
            # Every stream carried usage (8 tokens), so TPOT was measured for each request of each kind.
            for kind in KINDS.values():
                assert entry["tpot_seconds"][kind]["count"] == served[(target, kind)]
                assert sum(entry["ttft_seconds"][kind]["counts"]) == served[(target, kind)]

        # The same counts on /metrics, per target and streaming label.
        async with session.get(gw.picker_metrics_url) as response:
            exposed = _metric_counts(await response.text())
        for (target, kind), count in served.items():
            streaming = "true" if kind == "streaming" else "false"
            for name in ("inference_model_request_ttft_seconds", "inference_model_request_tpot_seconds"):
                assert exposed[(name, target, streaming)][0] == count

        def mean(target: str, name: str, kind: str) -> float:
            series = by_target[target][name][kind]
            return float(series["sum"]) / series["count"]

        # The slowed pods' target is slower on every measure (ratios only: no absolute timing).
        for name, kind in (("ttft_seconds", "streaming"), ("ttft_seconds", "non_streaming")):
            assert mean(SLOW, name, kind) > 2 * mean(FAST, name, kind), (name, kind)
        assert mean(SLOW, "tpot_seconds", "streaming") > 2 * mean(FAST, "tpot_seconds", "streaming")
