"""Mirroring into an InferencePool through real Envoy Gateway (config/samples/mirror-into-pool.yaml,
applied with kubectl): EG v1.9 refuses InferencePools as RequestMirror backends with a 500 for the rule,
which the Route hook undoes; the copies reach the shadow pool's candidate through its own picker."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e_support import Results, send_many
from tests.stack_support import GatewayUrl, RealStack, eventually, status_conditions

pytestmark = pytest.mark.stack

SAMPLE = Path(__file__).resolve().parent.parent / "config" / "samples" / "mirror-into-pool.yaml"
GATEWAY = "default/mirror-gateway:8092"
BODY = {"model": "chat", "prompt": "Write as if you were a critic: San Francisco", "max_tokens": 4}


def _send(url: GatewayUrl, count: int) -> Results:
    return asyncio.run(send_many(url, BODY, count, concurrency=16))  # type: ignore[arg-type]


def _received(stack: RealStack, app: str) -> dict[str, int]:
    total: dict[str, int] = {}
    for pod in stack.get("pods", "-n", "default", "-l", f"app={app}")["items"]:
        ip = pod.get("status", {}).get("podIP")
        if ip:
            stats = json.loads(stack.in_node(f"http://{ip}:8000/sim/stats"))
            for model, count in stats["requests_by_model"].items():
                total[model] = total.get(model, 0) + count
    return total


@pytest.fixture(scope="module")
def gateway(real_stack: RealStack) -> Iterator[GatewayUrl]:
    real_stack.kubectl("apply", "-f", str(SAMPLE))
    real_stack.kubectl(
        "wait",
        "--for=condition=Available",
        "deployment/prod-vllm",
        "deployment/shadow-vllm",
        "--timeout=180s",
    )
    url = GatewayUrl(real_stack.gateway_url(GATEWAY))
    eventually(lambda: _send(url, 2).ok == 2, 180, "the mirrored route answering", interval=1)

    def copies_arrive() -> bool:
        _send(url, 4)
        return sum(_received(real_stack, "shadow-vllm").values()) > 0

    eventually(copies_arrive, 120, "copies reaching the shadow pool", interval=1)
    yield url
    real_stack.kubectl("delete", "-f", str(SAMPLE), "--wait=false")


def test_copies_reach_the_shadow_candidate_and_answers_stay_production(
    real_stack: RealStack, gateway: GatewayUrl
) -> None:
    before_shadow = sum(_received(real_stack, "shadow-vllm").values())
    count = 1000  # the binomial spread of a 50% mirror is then 1.6 points: +-5 is a 3-sigma band
    results = _send(gateway, count)
    assert results.ok == count, results.errors[:3]
    assert dict(results.models) == {"llama-3-8b": count}

    def settled() -> int | None:
        first = sum(_received(real_stack, "shadow-vllm").values())
        asyncio.run(asyncio.sleep(1.0))
        second = sum(_received(real_stack, "shadow-vllm").values())
        return second if first == second else None

    copies = eventually(settled, 60, "copies finishing", interval=0.2) - before_shadow
    assert 0.45 * count <= copies <= 0.55 * count, copies
    assert set(_received(real_stack, "shadow-vllm")) == {"llama-3-8b-candidate"}


def test_the_shadow_pool_gets_the_gateway_as_parent(real_stack: RealStack, gateway: GatewayUrl) -> None:
    def accepted() -> bool:
        pool = real_stack.get("inferencepool.inference.networking.k8s.io/shadow-pool", "-n", "default")
        parents = pool.get("status", {}).get("parents", [])
        return any(
            p["parentRef"]["name"] == "mirror-gateway"
            and any(c["type"] == "Accepted" and c["status"] == "True" for c in p.get("conditions", []))
            for p in parents
        )

    eventually(accepted, 60, "shadow-pool Accepted for mirror-gateway", interval=0.5)


def test_a_missing_shadow_pool_is_a_condition_and_production_keeps_serving(
    real_stack: RealStack, gateway: GatewayUrl
) -> None:
    patch = [
        {"op": "replace", "path": "/spec/rules/0/filters/0/requestMirror/backendRef/name", "value": "gone"}
    ]
    real_stack.kubectl(
        "patch", "httproute/chat-route", "-n", "default", "--type=json", "-p", json.dumps(patch)
    )
    try:

        def refused() -> dict[str, str] | None:
            pool = real_stack.get("inferencepool.inference.networking.k8s.io/prod-pool", "-n", "default")
            for condition in status_conditions(pool):
                if condition["type"] == "ResolvedRefs" and condition["reason"] == "MirrorPoolNotFound":
                    return condition  # type: ignore[no-any-return]
            return None

        condition = eventually(refused, 60, "prod-pool ResolvedRefs=False MirrorPoolNotFound", interval=0.5)
        assert condition["status"] == "False" and "default/gone" in condition["message"]
        results = _send(gateway, 40)
        assert results.ok == 40 and dict(results.models) == {"llama-3-8b": 40}, results.errors[:3]
    finally:
        patch[0]["value"] = "shadow-pool"
        real_stack.kubectl(
            "patch", "httproute/chat-route", "-n", "default", "--type=json", "-p", json.dumps(patch)
        )


SHADOW_SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "shadow-svc", "namespace": "default"},
    "spec": {"selector": {"app": "shadow-vllm"}, "ports": [{"port": 8000, "targetPort": 8000}]},
}


def test_a_service_mirror_gets_the_clients_request(real_stack: RealStack, gateway: GatewayUrl) -> None:
    """Through EG's own cluster for the Service, still by way of the mirror listener: the copy carries the
    client's `model`, not the target production's picker rewrote it to."""
    real_stack.kubectl("apply", "-f", "-", stdin=json.dumps(SHADOW_SERVICE))
    ref = {"name": "shadow-svc", "port": 8000}
    patch = [{"op": "replace", "path": "/spec/rules/0/filters/0/requestMirror/backendRef", "value": ref}]
    real_stack.kubectl(
        "patch", "httproute/chat-route", "-n", "default", "--type=json", "-p", json.dumps(patch)
    )
    try:

        def client_models_arrive() -> bool:
            _send(gateway, 8)
            return _received(real_stack, "shadow-vllm").get("chat", 0) > 0

        eventually(client_models_arrive, 90, "copies with the client's model at the Service", interval=1)
        results = _send(gateway, 40)
        assert results.ok == 40 and dict(results.models) == {"llama-3-8b": 40}, results.errors[:3]
    finally:
        shadow = {"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": "shadow-pool"}
        patch[0]["value"] = shadow
        real_stack.kubectl(
            "patch", "httproute/chat-route", "-n", "default", "--type=json", "-p", json.dumps(patch)
        )
        real_stack.kubectl("delete", "service/shadow-svc", "-n", "default", "--wait=false")
