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

from tests.e2e_support import LORA_SAMPLE, config_dump_weights, send_many
from tests.stack_support import RealStack, eventually

pytestmark = pytest.mark.stack

LORA_BODY = {
    "model": "lora-request",
    "prompt": "Write as if you were a critic: San Francisco",
    "max_tokens": 8,
}
GATEWAY = "default/inference-gateway:8081"


class _Url:
    def __init__(self, url: str) -> None:
        self._url = url

    def url(self) -> str:
        return self._url


def _listeners(dump: dict[str, Any]) -> list[str]:
    return [
        item["active_state"]["listener"]["name"]
        for config in dump["configs"]
        if config["@type"].endswith("ListenersConfigDump")
        for item in config.get("dynamic_listeners", [])
    ]


def _accepted(stack: RealStack, plural: str, name: str) -> bool:
    pool = stack.get(plural, "-n", "default", name)
    status = pool.get("status") or {}
    parents = status.get("parents") or status.get("parent") or []
    return any(
        c["type"] == "Accepted" and c["status"] == "True" for p in parents for c in p.get("conditions", [])
    )


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
        results = asyncio.run(send_many(_Url(url), LORA_BODY, 20))  # type: ignore[arg-type]
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
