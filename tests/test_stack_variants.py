"""Envoy Gateway variants on the real stack: its XDSNameSchemeV2 runtime flag (a stack of its own, since
the flag is EG's config), merged Gateways and an HTTPS listener with HTTP/3 (both user manifests)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e_support import LORA_BODY, LORA_SAMPLE, config_dump_weights, send_many
from tests.stack_support import GatewayUrl, RealStack, eventually, status_conditions

pytestmark = pytest.mark.stack

GATEWAY = "default/inference-gateway:8081"


def _listeners(dump: dict[str, Any]) -> list[str]:
    return [
        item["active_state"]["listener"]["name"]
        for config in dump["configs"]
        if config["@type"].endswith("ListenersConfigDump")
        for item in config.get("dynamic_listeners", [])
    ]


def _accepted(stack: RealStack, plural: str, name: str) -> bool:
    pool = stack.get(plural, "-n", "default", name)
    return any(c["type"] == "Accepted" and c["status"] == "True" for c in status_conditions(pool))


@pytest.fixture(scope="module")
def v2_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealStack]:
    stack = RealStack(tmp_path_factory.mktemp("stack-v2"), runtime_flags=("XDSNameSchemeV2",)).up()
    try:
        yield stack
    finally:
        stack.down()


def test_the_seed_works_with_eg_naming_listeners_by_port(v2_stack: RealStack, tmp_path: Path) -> None:
    v2_stack.kubectl("apply", "-f", str(LORA_SAMPLE))
    url = v2_stack.gateway_url(GATEWAY)

    def serving() -> bool:
        results = asyncio.run(send_many(GatewayUrl(url), LORA_BODY, 20))  # type: ignore[arg-type]
        return results.ok == 20 and set(results.models) == {"tweet-summary", "sql-lora"}

    eventually(serving, 120, "the seed served with XDSNameSchemeV2", interval=0.5)
    dump = json.loads(v2_stack.envoy_admin("inference-gateway", "/config_dump"))
    assert "tcp-8081" in _listeners(dump)  # the flag is on: EG names the listener by its port
    assert eventually(
        lambda: _accepted(v2_stack, "inferencepools.inference.networking.x-k8s.io", "vllm-llama2-7b-pool"),
        30,
        "Accepted=True",
    )
    docs = [d for d in yaml.safe_load_all(LORA_SAMPLE.read_text()) if d]
    (model,) = [d for d in docs if d["kind"] == "InferenceModel"]
    model["spec"]["targetModels"][0]["weight"] = 80
    model["spec"]["targetModels"][1]["weight"] = 20
    (tmp_path / "model.yaml").write_text(yaml.safe_dump(model))
    v2_stack.kubectl("apply", "-f", str(tmp_path / "model.yaml"))

    def weights() -> bool:
        got = config_dump_weights(
            json.loads(v2_stack.envoy_admin("inference-gateway", "/config_dump")),
            "inference/default/inferencemodel-sample",
        )
        return sorted(got.values()) == [20, 80]

    eventually(weights, 2.0, "the new weights in Envoy", interval=0.05)


DATA = Path(__file__).parent / "data" / "stack"


def _complete(url: str, model: str, context: Any = None) -> str:
    import urllib.request

    request = urllib.request.Request(
        f"{url}/v1/completions",
        data=json.dumps({"model": model, "prompt": "hello", "max_tokens": 2}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5, context=context) as answer:
        return str(json.loads(answer.read())["model"])


def test_merged_gateways_each_serve_their_pool_and_leave_the_seed_alone(real_stack: RealStack) -> None:
    real_stack.kubectl("apply", "-f", str(LORA_SAMPLE))
    real_stack.kubectl("apply", "-f", str(DATA / "merged-gateways.yaml"))
    url_a = real_stack.gateway_url("default/merged-a:8083")
    url_b = real_stack.gateway_url("default/merged-b:8084")
    eventually(lambda: _complete(url_a, "merged-a-lora") in {"tweet-summary", "sql-lora"}, 90, "merged-a")
    eventually(lambda: _complete(url_b, "merged-b-lora") == "sql-lora", 90, "merged-b")
    pods = real_stack.get(
        "pods", "-n", "envoy-gateway-system", "-l", "gateway.envoyproxy.io/owning-gatewayclass"
    )
    assert len(pods["items"]) == 1  # one Envoy for both Gateways: they really are merged
    plural = "inferencepools.inference.networking.x-k8s.io"
    for pool in ("merged-pool-a", "merged-pool-b"):
        eventually(lambda pool=pool: _accepted(real_stack, plural, pool), 30, f"{pool} Accepted=True")
    results = asyncio.run(send_many(GatewayUrl(real_stack.gateway_url(GATEWAY)), LORA_BODY, 50))  # type: ignore[arg-type]
    assert results.ok == 50 and set(results.models) == {"tweet-summary", "sql-lora"}


def test_an_https_listener_with_http3_is_served_whole_by_its_pool(
    real_stack: RealStack, tmp_path: Path
) -> None:
    import ssl

    from hack.stack.pki import Authority

    real_stack.kubectl("apply", "-f", str(LORA_SAMPLE))
    ca = Authority(tmp_path / "pki")
    cert, key = ca.issue("h3", "h3.example.com", dns_names=("localhost",), ips=("127.0.0.1",), server=True)
    secret = real_stack.kubectl(
        "create",
        "secret",
        "tls",
        "h3-cert",
        f"--cert={cert}",
        f"--key={key}",
        "--dry-run=client",
        "-o",
        "yaml",
    ).stdout
    real_stack.kubectl("apply", "-f", "-", stdin=secret)
    real_stack.kubectl("apply", "-f", str(DATA / "https-http3.yaml"))
    url = real_stack.gateway_url("default/h3:8443").replace("http://", "https://")
    context = ssl.create_default_context(cafile=str(ca.cert_path))
    # The chain is still checked against our CA; the name is not: the stack's load balancer gives the
    # Gateway a loopback address of its own, known only once the Gateway exists.
    context.check_hostname = False
    eventually(
        lambda: _complete(url, "h3-lora", context) in {"tweet-summary", "sql-lora"}, 90, "h3 over HTTPS"
    )
    dump = json.loads(real_stack.envoy_admin("h3", "/config_dump"))
    listeners = {
        item["active_state"]["listener"]["name"]: item["active_state"]["listener"]
        for config in dump["configs"]
        if config["@type"].endswith("ListenersConfigDump")
        for item in config.get("dynamic_listeners", [])
    }
    quic = listeners["default/h3/https-quic"]
    assert quic["address"]["socket_address"]["protocol"] == "UDP"
    assert "envoy.filters.http.ext_proc/inference/default/h3-pool" in json.dumps(quic)  # HTTP/3 is served too
    plural = "inferencepools.inference.networking.x-k8s.io"
    eventually(lambda: _accepted(real_stack, plural, "h3-pool"), 30, "h3-pool Accepted=True")
