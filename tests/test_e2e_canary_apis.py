"""End to end on the local gateway: the seed's LoRA canary written as an InferenceModelRewrite, and an
InferenceObjective's priority reaching the picker's shedding."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from localgateway.run import LocalGateway
from tests.e2e_support import LORA_BODY, LORA_SAMPLE, ROOT, config_dump_weights, gateway_options, send_many

pytestmark = pytest.mark.e2e

REWRITE_SAMPLE = ROOT / "config/samples/rewrite-lora-canary.yaml"
REWRITE_ROUTE = "inference/default/lora-request-canary/rules/0/model/lora-request"
SEED_ROUTE = "inference/default/inferencemodel-sample"
OBJECTIVE_HEADER = "x-gateway-inference-objective"


def _seed_with_rewrite(directory: Path) -> Path:
    """The seed's LoRA canary with its InferenceModel replaced by the rewrite sample (and its objective)."""
    seed = [d for d in yaml.safe_load_all(LORA_SAMPLE.read_text()) if d and d["kind"] != "InferenceModel"]
    canary = [d for d in yaml.safe_load_all(REWRITE_SAMPLE.read_text()) if d]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "seed-lora-rewrite.yaml"
    path.write_text(yaml.safe_dump_all([*seed, *canary], sort_keys=False))
    return path


async def _weights(gw: LocalGateway, route: str) -> dict[str, int]:
    async with aiohttp.ClientSession() as session, session.get(gw.admin_url + "/config_dump") as response:
        dump: dict[str, Any] = await response.json()
    return config_dump_weights(dump, route)


def _served_only(gw: LocalGateway) -> None:
    assert gw.fleet is not None
    for server in gw.fleet.servers:
        asked = set(server.stats.requests_by_model)
        assert asked <= set(server.models()), f"{server.name} got {asked - set(server.models())}"


async def test_a_lora_canary_as_a_rewrite_splits_like_the_seed_inference_model(tmp_path: Path) -> None:
    async with LocalGateway(gateway_options([LORA_SAMPLE])) as gw:
        seed_weights = await _weights(gw, SEED_ROUTE)
        seed = await send_many(gw, LORA_BODY, 400, concurrency=16)
    async with LocalGateway(gateway_options([_seed_with_rewrite(tmp_path)])) as gw:
        rewrite_weights = await _weights(gw, REWRITE_ROUTE)
        rewrite = await send_many(gw, LORA_BODY, 400, concurrency=16)
        _served_only(gw)
    assert (
        rewrite_weights
        == seed_weights
        == {
            "inference/default/vllm-llama2-7b-pool/tweet-summary": 50,
            "inference/default/vllm-llama2-7b-pool/sql-lora": 50,
        }
    )
    assert rewrite.ok == seed.ok == 400, rewrite.errors[:5]
    assert set(rewrite.models) == set(seed.models) == {"tweet-summary", "sql-lora"}
    # 400 draws of a fair split: a standard deviation of 2.5 points; 10 points is four of them.
    assert abs(rewrite.share("tweet-summary") - 0.5) <= 0.10
    assert abs(seed.share("tweet-summary") - 0.5) <= 0.10


async def test_the_objective_header_makes_requests_sheddable(tmp_path: Path) -> None:
    async with LocalGateway(gateway_options([_seed_with_rewrite(tmp_path)])) as gw:
        assert gw.fleet is not None
        calm = await send_many(gw, LORA_BODY, 20, concurrency=4, headers={OBJECTIVE_HEADER: "batch"})
        assert calm.ok == 20, calm.errors[:5]  # not saturated: nothing is shed
        for server in gw.fleet.servers:
            server.set_overrides(kv_cache_usage=0.99)  # every pod full: the pool is saturated
        shed = await _until_shed(gw)
        assert shed.statuses == {429: 20}, shed.errors[:5]
        assert all("Sheddable request" in error for error in shed.errors)  # the picker shed them
        # Standard requests (no objective, or a header naming none) are never shed.
        plain = await send_many(gw, LORA_BODY, 20, concurrency=4)
        stranger = await send_many(gw, LORA_BODY, 20, concurrency=4, headers={OBJECTIVE_HEADER: "nobody"})
        assert plain.ok == stranger.ok == 20, (plain.errors + stranger.errors)[:5]


async def _until_shed(gw: LocalGateway) -> Any:
    """Batch requests once the picker has scraped the saturated metrics (it scrapes every 50 ms)."""
    for _ in range(200):
        results = await send_many(gw, LORA_BODY, 20, concurrency=4, headers={OBJECTIVE_HEADER: "batch"})
        if results.statuses[429] == 20:
            return results
        await asyncio.sleep(0.05)
    return results
