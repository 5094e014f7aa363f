"""Pools whose picker is not ours, through real Envoy Gateway: GIE's test EPP (lwepp) routes the seed's
LoRA split, a FailOpen pool whose picker never ran still serves, a pool without a picker, a missing
picker Service, and a 70/30 HTTPRoute split over two pools (tests/data/stack/any-epp.yaml)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e_support import LORA_BODY, Results, send_many
from tests.stack_support import GatewayUrl, RealStack, eventually, status_conditions

pytestmark = pytest.mark.stack

MANIFEST = Path(__file__).parent / "data" / "stack" / "any-epp.yaml"
GATEWAY = "any-epp/any-epp:8096"
NS = "any-epp"


@pytest.fixture(scope="module")
def gateway(real_stack: RealStack) -> Iterator[GatewayUrl]:
    real_stack.kubectl("apply", "-f", str(MANIFEST))
    url = GatewayUrl(real_stack.gateway_url(GATEWAY))
    eventually(lambda: _send(url, "gie", 4).ok == 4, 180, "lwepp's pool serving", interval=1)
    yield url
    real_stack.kubectl("delete", "-f", str(MANIFEST), "--wait=false")


BASE_BODY = {"model": "llama2", "prompt": "Write as if you were a critic: San Francisco", "max_tokens": 8}


def _send(url: GatewayUrl, case: str, count: int, body: dict[str, Any] = LORA_BODY) -> Results:
    headers = {"x-case": case}
    return asyncio.run(send_many(url, body, count, concurrency=16, headers=headers))  # type: ignore[arg-type]


def _pod_ips(stack: RealStack, app: str) -> set[str]:
    pods = stack.get("pods", "-n", NS, "-l", f"app={app}")["items"]
    return {f"{p['status']['podIP']}:8000" for p in pods if p["status"].get("podIP")}


def test_gie_test_epp_serves_the_lora_split(real_stack: RealStack, gateway: GatewayUrl) -> None:
    results = _send(gateway, "gie", 600)
    assert results.ok == 600, results.errors[:5]
    assert set(results.models) == {"tweet-summary", "sql-lora"}  # the split stays, lwepp picks the pod
    assert abs(results.share("tweet-summary") - 0.5) <= 0.08
    assert set(results.servers) == _pod_ips(real_stack, "lora-vllm")  # lwepp's round robin: both pods


def test_the_gateway_goes_where_the_epp_says_and_reports_it(
    real_stack: RealStack, gateway: GatewayUrl
) -> None:
    chosen = sorted(_pod_ips(real_stack, "lora-vllm"))[0]

    async def one() -> tuple[int, str, str]:
        headers = {"x-case": "gie", "test-epp-endpoint-selection": chosen}
        url = gateway.url() + "/v1/completions"
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, json=LORA_BODY, headers=headers) as r,
        ):
            await r.read()
            served = r.headers.get("x-conformance-test-served-endpoint", "")  # lwepp echoes what it got
            assert "x-inference-gateway-served-upstream" not in r.headers  # internal: never to the client
            return r.status, r.headers.get("x-sim-server", ""), served

    for _ in range(10):
        status, server, served = asyncio.run(one())
        assert (status, server) == (200, chosen)
        assert served == chosen  # envoy.lb x-gateway-destination-endpoint-served reached the EPP


@pytest.mark.parametrize("case", ["open", "open-ours"])
def test_fail_open_with_the_picker_down_from_the_start(
    real_stack: RealStack, gateway: GatewayUrl, case: str
) -> None:
    """Any EPP ("open": GIE's protocol) and ours ("open-ours": per-target EDS that never came)."""
    # 600 draws: the binomial spread of a 50/50 split is 2 points, so +-8 is 4 sigma (200 draws made
    # +-12 a 3.4-sigma band, and a fresh-clone run once drew 62.5%; 1,000 draws gave 49.2% and 50.1%).
    results = _send(gateway, case, 600)
    assert results.ok == 600, results.errors[:5]
    assert set(results.models) == {"tweet-summary", "sql-lora"}  # the Lua fallback rewrote `model`
    assert abs(results.share("tweet-summary") - 0.5) <= 0.08
    assert set(results.servers) == _pod_ips(real_stack, "lora-vllm")


def test_fail_open_when_the_pools_own_picker_goes_away(real_stack: RealStack, gateway: GatewayUrl) -> None:
    """What GIE's EppUnAvailableFailOpen means to check (it takes away another pool's picker)."""
    chosen = sorted(_pod_ips(real_stack, "lora-vllm"))[0]
    steered = {"x-case": "open-gie", "test-epp-endpoint-selection": chosen}
    before = asyncio.run(send_many(gateway, BASE_BODY, 10, headers=steered))  # type: ignore[arg-type]
    assert before.ok == 10 and set(before.servers) == {chosen}, before.errors[:3]  # lwepp routes
    selector = '{"spec": {"selector": {"app": "open-epp-unavailable"}}}'
    real_stack.kubectl("-n", NS, "patch", "service", "open-epp", "-p", selector)
    try:
        errors: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            results = asyncio.run(send_many(gateway, BASE_BODY, 20, headers=steered))  # type: ignore[arg-type]
            errors += results.errors
            if len(results.servers) > 1:  # the header no longer steers: Envoy balances alone
                break
        else:
            raise AssertionError("the picker's choice still steers after 60 s")
        assert errors == []  # not one request failed while the picker went away
    finally:
        real_stack.kubectl(
            "-n", NS, "patch", "service", "open-epp", "-p", '{"spec": {"selector": {"app": "open-epp"}}}'
        )


def test_a_pool_without_a_picker_is_balanced_by_envoy(real_stack: RealStack, gateway: GatewayUrl) -> None:
    results = _send(gateway, "plain", 50, BASE_BODY)  # no InferenceModel there: the base model
    assert results.ok == 50, results.errors[:5]
    assert set(results.servers) == _pod_ips(real_stack, "plain-vllm")
    pool = real_stack.get("inferencepools.inference.networking.k8s.io", "-n", NS, "plain-pool")
    assert {(c["type"], c["status"]) for c in status_conditions(pool)} >= {("Accepted", "True")}


def test_a_missing_picker_service_is_invalid_and_fails(real_stack: RealStack, gateway: GatewayUrl) -> None:
    def invalid() -> dict[str, Any] | None:
        pool = real_stack.get("inferencepools.inference.networking.k8s.io", "-n", NS, "missing-pool")
        found = [c for c in status_conditions(pool) if c["type"] == "ResolvedRefs"]
        return found[0] if found and found[0]["status"] == "False" else None

    condition = eventually(invalid, 60, "ResolvedRefs=False")
    assert condition["reason"] == "InvalidExtensionRef"
    assert "no-such-service" in condition["message"]
    results = _send(gateway, "missing", 10)
    assert results.ok == 0 and all(500 <= s < 600 for s in results.statuses), results.statuses


def test_a_70_30_split_over_two_pools(real_stack: RealStack, gateway: GatewayUrl) -> None:
    results = _send(gateway, "split", 2000, BASE_BODY)
    assert results.ok == 2000, results.errors[:5]
    first = sum(n for server, n in results.servers.items() if server in _pod_ips(real_stack, "lora-vllm"))
    second = sum(n for server, n in results.servers.items() if server in _pod_ips(real_stack, "plain-vllm"))
    assert first + second == 2000
    assert abs(first / 2000 - 0.7) <= 0.05, (first, second)


def test_a_rule_mixing_a_pool_and_a_service_is_refused_clearly(
    real_stack: RealStack, gateway: GatewayUrl
) -> None:
    def refused() -> dict[str, Any] | None:
        pool = real_stack.get("inferencepools.inference.networking.k8s.io", "-n", NS, "mixed-pool")
        found = [c for c in status_conditions(pool) if c["type"] == "ResolvedRefs"]
        return found[0] if found and found[0]["status"] == "False" else None

    condition = eventually(refused, 60, "ResolvedRefs=False on the mixed rule's pool")
    assert condition["reason"] == "MixedBackendRefs" and "any-epp/cases rule 6" in condition["message"]
    results = _send(gateway, "mixed", 10, BASE_BODY)
    assert results.statuses == {500: 10}
    assert all("mixes InferencePools" in error for error in results.errors)
