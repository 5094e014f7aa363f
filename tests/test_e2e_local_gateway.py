"""End to end: both seed scenarios through the local gateway (real Envoy over ADS, the extension server
over real gRPC, the picker, simulated vLLM pods on their own loopback addresses)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from localgateway.run import LocalGateway
from tests.e2e_support import (
    BASE_SAMPLE,
    LORA_BODY,
    LORA_SAMPLE,
    QWQ_BODY,
    config_dump_weights,
    copy_manifest,
    gateway_options,
    send_many,
)

pytestmark = pytest.mark.e2e

LORA_ROUTE = "inference/default/inferencemodel-sample"


def _served_only(gw: LocalGateway) -> None:
    """Every request a pod received was for a model that pod serves."""
    assert gw.fleet is not None
    for server in gw.fleet.servers:
        asked = set(server.stats.requests_by_model)
        assert asked <= set(server.models()), f"{server.name} got {asked - set(server.models())}"


def _set_failure_mode(mode: str) -> Any:
    def edit(doc: dict[str, Any]) -> None:
        if doc.get("kind") == "InferencePool":
            doc["spec"]["extensionRef"]["failureMode"] = mode

    return edit


async def test_lora_canary_splits_between_adapters() -> None:
    async with LocalGateway(gateway_options([LORA_SAMPLE])) as gw:
        results = await send_many(gw, LORA_BODY, 2000, concurrency=32)
        assert results.ok == 2000, results.errors[:5]
        assert set(results.models) == {"tweet-summary", "sql-lora"}
        assert abs(results.share("tweet-summary") - 0.5) <= 0.05
        _served_only(gw)
        assert len(results.servers) == 3  # the picker spreads over the pool


async def test_base_model_canary_never_sends_a_model_to_a_pod_without_it() -> None:
    async with LocalGateway(gateway_options([BASE_SAMPLE])) as gw:
        results = await send_many(gw, QWQ_BODY, 2000, path="/v1/chat/completions", concurrency=32)
        assert results.ok == 2000, results.errors[:5]
        assert abs(results.share("qwq-32b") - 0.5) <= 0.05
        assert abs(results.share("deepseek-r1") - 0.5) <= 0.05
        _served_only(gw)
        for server, count in results.servers.items():
            assert count > 0, server


async def test_large_prompt_and_streamed_answer_pass_through() -> None:
    async with LocalGateway(gateway_options([LORA_SAMPLE])) as gw, aiohttp.ClientSession() as session:
        prompt = "x" * (1024 * 1024)
        body = {"model": "lora-request", "prompt": prompt, "max_tokens": 4}
        async with session.post(gw.url() + "/v1/completions", json=body) as response:
            answer = await response.json()
            assert response.status == 200, answer
        assert answer["model"] in ("tweet-summary", "sql-lora")
        assert answer["usage"]["prompt_tokens"] >= len(prompt) // 8
        stream_body = {
            "model": "lora-request",
            "messages": [{"role": "user", "content": "hello"}],
            "max_tokens": 32,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        arrivals: list[tuple[float, str]] = []
        async with session.post(gw.url() + "/v1/chat/completions", json=stream_body) as response:
            assert response.status == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            async for line in response.content:
                text = line.decode().strip()
                if text.startswith("data:"):
                    arrivals.append((time.monotonic(), text[5:].strip()))
        assert arrivals[-1][1] == "[DONE]"
        chunks = [json.loads(data) for _, data in arrivals[:-1]]
        assert chunks[-1]["usage"]["completion_tokens"] == 32
        assert {c["model"] for c in chunks} <= {"tweet-summary", "sql-lora"}
        content_times = [t for (t, _), c in zip(arrivals, chunks, strict=False) if c.get("choices")]
        assert len(content_times) > 2
        assert content_times[0] < content_times[-1]  # tokens stream: the first arrives before the last


async def test_weight_change_takes_effect_within_two_seconds(tmp_path: Path) -> None:
    manifest = copy_manifest(LORA_SAMPLE, tmp_path / "manifests")
    async with LocalGateway(gateway_options([manifest.parent])) as gw, aiohttp.ClientSession() as session:
        docs = [d for d in yaml.safe_load_all(manifest.read_text()) if d]
        for doc in docs:
            if doc.get("kind") == "InferenceModel":
                doc["spec"]["targetModels"][0]["weight"] = 90
                doc["spec"]["targetModels"][1]["weight"] = 10
        edited_at = time.monotonic()
        manifest.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        weights: dict[str, int] = {}
        while time.monotonic() - edited_at < 2.0:
            async with session.get(gw.admin_url + "/config_dump") as response:
                weights = config_dump_weights(await response.json(), LORA_ROUTE)
            if sorted(weights.values()) == [10, 90]:
                break
            await asyncio.sleep(0.05)
        assert weights == {
            "inference/default/vllm-llama2-7b-pool/tweet-summary": 90,
            "inference/default/vllm-llama2-7b-pool/sql-lora": 10,
        }
        results = await send_many(gw, LORA_BODY, 1000, concurrency=32, session=session)
        assert results.ok == 1000
        assert abs(results.share("tweet-summary") - 0.9) <= 0.05


async def test_fail_open_keeps_the_split_without_the_picker(tmp_path: Path) -> None:
    manifest = copy_manifest(LORA_SAMPLE, tmp_path, _set_failure_mode("FailOpen"))
    async with LocalGateway(gateway_options([manifest])) as gw:
        gw.stop_picker()
        results = await send_many(gw, LORA_BODY, 600, concurrency=16)
        assert results.ok == 600, results.errors[:5]
        assert set(results.models) == {"tweet-summary", "sql-lora"}  # the Lua fallback rewrote `model`
        assert abs(results.share("tweet-summary") - 0.5) <= 0.08
        _served_only(gw)
        gw.start_picker()
        await gw.wait_picker_ready()
        results = await send_many(gw, LORA_BODY, 100, concurrency=4)
        assert results.ok == 100
        async with aiohttp.ClientSession() as session, session.get(gw.picker_metrics_url) as response:
            metrics = await response.text()
        picked = [line for line in metrics.splitlines() if line.startswith("inference_model_request_total{")]
        assert sum(float(line.rsplit(" ", 1)[1]) for line in picked) >= 100  # the picker routes again


async def test_fail_close_answers_5xx_without_the_picker() -> None:
    async with LocalGateway(gateway_options([BASE_SAMPLE])) as gw:
        gw.stop_picker()
        results = await send_many(gw, QWQ_BODY, 50, path="/v1/chat/completions", concurrency=4)
        assert results.ok == 0
        assert all(500 <= status < 600 for status in results.statuses), results.statuses
        gw.start_picker()
        await gw.wait_picker_ready()
        results = await send_many(gw, QWQ_BODY, 50, path="/v1/chat/completions", concurrency=4)
        assert results.ok == 50, results.errors[:5]


async def test_a_killed_pod_loses_only_its_in_flight_requests() -> None:
    concurrency = 16
    async with LocalGateway(gateway_options([LORA_SAMPLE])) as gw:
        assert gw.fleet is not None
        victim = gw.fleet.servers[0]
        run = asyncio.create_task(
            send_many(gw, {**LORA_BODY, "max_tokens": 64}, 1500, concurrency=concurrency)
        )
        while sum(victim.stats.requests_by_model.values()) < 50 and not run.done():
            await asyncio.sleep(0.01)
        await victim.set_down(True)
        results = await run
        lost = 1500 - results.ok
        assert lost <= concurrency, (lost, results.statuses, results.errors[:5])
        before = dict(results.servers)
        after = await send_many(gw, LORA_BODY, 200, concurrency=8)
        assert after.ok == 200, after.errors[:5]
        assert victim.name not in after.servers or after.servers[victim.name] == 0, (before, after.servers)


LOAD_AWARE_MANIFESTS = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: chat-pool, namespace: default}
spec:
  replicas: 4
  selector: {matchLabels: {app: chat-pool}}
  template:
    metadata: {labels: {app: chat-pool}}
    spec:
      containers:
      - name: vllm
        command: [sh, -c, "vllm serve /models/chat --port 8000 --served-model-name chat --max-num-seqs 4"]
        ports: [{containerPort: 8000}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: inference-gateway, namespace: default}
spec:
  gatewayClassName: inference-gateway
  listeners: [{name: llm-gw, protocol: HTTP, port: 8081}]
---
apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: InferencePool
metadata:
  name: chat-pool
  namespace: default
  annotations:
    inference.networking.x-k8s.io/attach-to: |
      name: inference-gateway
      port: 8081
spec:
  targetPortNumber: 8000
  selector: {app: chat-pool}
  extensionRef: {name: inference-gateway-ext-proc, failureMode: FailOpen}
---
apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: InferenceModel
metadata: {name: chat, namespace: default}
spec:
  modelName: chat
  poolRef: {name: chat-pool}
"""


async def test_load_aware_routing_avoids_a_slow_pod(tmp_path: Path) -> None:
    manifest = tmp_path / "chat.yaml"
    manifest.write_text(LOAD_AWARE_MANIFESTS)
    body = {"model": "chat", "prompt": "hello " * 50, "max_tokens": 40}
    async with LocalGateway(gateway_options([manifest], time_scale=0.05)) as gw:
        assert gw.fleet is not None
        slow = gw.fleet.servers[0]
        slow.set_slowdown(10.0)
        with_picker = await send_many(gw, body, 1200, concurrency=24)
        assert with_picker.ok == 1200, with_picker.errors[:5]
        picker_share = with_picker.servers[slow.name] / 1200
        gw.stop_picker()
        fallback = await send_many(gw, body, 1200, concurrency=24)
        assert fallback.ok == 1200, fallback.errors[:5]
        fallback_share = fallback.servers[slow.name] / 1200
        # A quarter is the slow pod's fair share; the picker sends it well under half of that (5-6% here).
        # Envoy's least_request fallback avoids it about as well (5-7% in the same runs), so comparing the
        # two was a coin toss under load; the fallback run checks that traffic survives the picker's loss.
        assert picker_share <= 0.10, (picker_share, dict(with_picker.servers))
        assert fallback_share < 0.25, (fallback_share, dict(fallback.servers))


async def test_a_client_destination_header_cannot_choose_the_pod() -> None:
    """The client's x-gateway-destination-endpoint is stripped before the picker; the picker's own wins."""
    async with LocalGateway(gateway_options([LORA_SAMPLE])) as gw, aiohttp.ClientSession() as session:
        assert gw.fleet is not None
        target, busy = gw.pods[0], gw.fleet.servers[0]
        busy.set_overrides(waiting=50, running=200, kv_cache_usage=0.95)  # the picker avoids this pod
        await asyncio.sleep(0.3)  # a few scrapes
        headers = {"x-gateway-destination-endpoint": target.address}
        served: dict[str, int] = {}
        for _ in range(60):
            async with session.post(
                gw.url() + "/v1/completions", json=LORA_BODY, headers=headers
            ) as response:
                assert response.status == 200
                name = response.headers["x-sim-server"]
                served[name] = served.get(name, 0) + 1
        assert served.get(target.name, 0) == 0, served
