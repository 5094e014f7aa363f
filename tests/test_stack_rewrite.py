"""Real stack: an InferenceModelRewrite applied with kubectl is refused beside the older seed
InferenceModel of the same model, then serves the seed's LoRA split once that model is gone."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.e2e_support import LORA_BODY, LORA_SAMPLE, ROOT, config_dump_weights, send_many
from tests.stack_support import GatewayUrl, RealStack, eventually

pytestmark = pytest.mark.stack

GATEWAY = "default/inference-gateway:8081"
REWRITE_SAMPLE = ROOT / "config/samples/rewrite-lora-canary.yaml"
REWRITE = ("inferencemodelrewrites.llm-d.ai", "lora-request-canary")
OBJECTIVE = ("inferenceobjectives.llm-d.ai", "batch")
REWRITE_ROUTE = "inference/default/lora-request-canary/rules/0/model/lora-request"


def _accepted(stack: RealStack, resource: tuple[str, str]) -> dict[str, Any] | None:
    obj = stack.get(resource[0], resource[1], "-n", "default")
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == "Accepted"), None)


def _serving(stack: RealStack) -> str:
    url = stack.gateway_url(GATEWAY)
    every = ("--for=condition=Available", "deployment", "--all", "-n", "default", "--timeout=120s")
    stack.kubectl("wait", *every)

    def answers() -> bool:
        results = asyncio.run(send_many(GatewayUrl(url), LORA_BODY, 1))  # type: ignore[arg-type]
        return results.ok == 1

    eventually(answers, 120, f"{GATEWAY} answering lora-request", interval=0.5)
    return url


def test_a_rewrite_applied_by_kubectl_splits_like_the_seed_and_reports_its_condition(
    real_stack: RealStack,
) -> None:
    stack = real_stack
    stack.kubectl("apply", "-f", str(LORA_SAMPLE))
    url = _serving(stack)
    try:
        stack.kubectl("apply", "-f", str(REWRITE_SAMPLE))

        def refused() -> dict[str, Any] | None:
            condition = _accepted(stack, REWRITE)
            return condition if condition and condition["reason"] == "ModelNameInUse" else None

        condition = eventually(refused, 30, "Accepted=False/ModelNameInUse on the rewrite")
        assert condition["status"] == "False"
        assert "older InferenceModel default/inferencemodel-sample" in condition["message"]

        stack.kubectl("delete", "inferencemodel", "inferencemodel-sample", "-n", "default", "--wait=true")

        def accepted() -> bool:
            condition = _accepted(stack, REWRITE)
            return bool(condition and condition["status"] == "True" and condition["reason"] == "Accepted")

        eventually(accepted, 30, "Accepted=True on the rewrite once the InferenceModel is gone")
        objective = _accepted(stack, OBJECTIVE)
        assert objective is not None and objective["status"] == "True"

        def weights() -> dict[str, int]:
            dump = json.loads(stack.envoy_admin("inference-gateway", "/config_dump"))
            return config_dump_weights(dump, REWRITE_ROUTE)

        assert eventually(weights, 30, "the rewrite's route in Envoy") == {
            "inference/default/vllm-llama2-7b-pool/tweet-summary": 50,
            "inference/default/vllm-llama2-7b-pool/sql-lora": 50,
        }
        results = asyncio.run(send_many(GatewayUrl(url), LORA_BODY, 400, concurrency=16))  # type: ignore[arg-type]
        assert results.ok == 400, results.errors[:5]
        assert set(results.models) == {"tweet-summary", "sql-lora"}
        assert abs(results.share("tweet-summary") - 0.5) <= 0.10  # four standard deviations at n=400
    finally:
        stack.kubectl("delete", "-f", str(REWRITE_SAMPLE), "--ignore-not-found", "--wait=true", check=False)
        stack.kubectl("apply", "-f", str(LORA_SAMPLE))
