"""End to end on the local gateway: sticky canaries (one key, one target; a weight change moves keys one
way only) and header-pinned canaries, measured over 2,000 distinct keys."""

from __future__ import annotations

import asyncio
import collections
import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from api.canary import ANNOTATION_CANARY_PINS, ANNOTATION_STICKY_KEY
from localgateway.run import LocalGateway
from simulator import SERVER_HEADER
from tests.e2e_support import LORA_SAMPLE, config_dump_weights, copy_manifest, gateway_options, send_many

pytestmark = pytest.mark.e2e

ROUTE = "inference/default/inferencemodel-sample"
STABLE, CANARY = "tweet-summary", "sql-lora"
POOL = "inference/default/vllm-llama2-7b-pool"
BODY = {"model": "lora-request", "prompt": "Write as if you were a critic: San Francisco", "max_tokens": 1}
KEYS = 2000
TOLERANCE = 0.03  # the bound on the aggregate split over 2,000 keys


def _canary_model(canary_weight: int, annotations: Mapping[str, str]) -> Callable[[dict[str, Any]], None]:
    """Edit the LoRA sample: stable/canary weights and our annotations on its InferenceModel."""

    def edit(doc: dict[str, Any]) -> None:
        if doc.get("kind") != "InferenceModel":
            return
        doc["metadata"].setdefault("annotations", {}).update(annotations)
        doc["spec"]["targetModels"] = [
            {"name": STABLE, "weight": 100 - canary_weight},
            {"name": CANARY, "weight": canary_weight},
        ]

    return edit


async def _send_keyed(
    gw: LocalGateway,
    session: aiohttp.ClientSession,
    requests: Sequence[tuple[str, Mapping[str, str]]],
    concurrency: int = 32,
    servers: collections.Counter[str] | None = None,
) -> dict[str, set[str]]:
    """Send one request per (key, headers); key -> every target model that answered it (and, into
    `servers`, how many answers each simulated pod gave)."""
    answered: dict[str, set[str]] = collections.defaultdict(set)
    errors: list[str] = []
    todo = iter(requests)

    async def worker() -> None:
        for key, headers in todo:
            async with session.post(gw.url() + "/v1/completions", json=BODY, headers=headers) as response:
                raw = await response.read()
                if response.status != 200:
                    errors.append(f"{response.status} {raw[:200]!r}")
                    continue
                answered[key].add(json.loads(raw)["model"])
                if servers is not None:
                    servers[response.headers.get(SERVER_HEADER, "?")] += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    assert not errors, errors[:5]
    return answered


def _keys(count: int) -> list[str]:
    return [uuid.uuid4().hex for _ in range(count)]


def _one_target_each(answered: Mapping[str, set[str]]) -> dict[str, str]:
    split = {key: targets for key, targets in answered.items() if len(targets) != 1}
    assert not split, f"{len(split)} keys got more than one target, e.g. {list(split.items())[:3]}"
    return {key: next(iter(targets)) for key, targets in answered.items()}


def _share(assigned: Mapping[str, str], target: str) -> float:
    return sum(1 for t in assigned.values() if t == target) / len(assigned)


async def _wait_for_weights(
    gw: LocalGateway, session: aiohttp.ClientSession, expected: Mapping[str, int], timeout: float = 20.0
) -> None:
    deadline = time.monotonic() + timeout
    weights: dict[str, int] = {}
    while time.monotonic() < deadline:
        async with session.get(gw.admin_url + "/config_dump") as response:
            weights = config_dump_weights(await response.json(), ROUTE)
        if weights == expected:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"config_dump weights {weights}, expected {expected}")


async def test_one_key_one_target_and_the_split_follows_the_weights(tmp_path: Path) -> None:
    edit = _canary_model(10, {ANNOTATION_STICKY_KEY: "header:x-session-id"})
    manifest = copy_manifest(LORA_SAMPLE, tmp_path, edit)
    async with LocalGateway(gateway_options([manifest])) as gw, aiohttp.ClientSession() as session:
        await _wait_for_weights(gw, session, {f"{POOL}/{CANARY}": 1000, f"{POOL}/{STABLE}": 9000})
        keys = _keys(KEYS)
        # Every key once, then a quarter of them twice more: a repeat must land where the first did.
        repeated = [*keys, *keys[: KEYS // 4], *keys[: KEYS // 4]]
        servers: collections.Counter[str] = collections.Counter()
        answered = await _send_keyed(
            gw, session, [(k, {"x-session-id": k}) for k in repeated], servers=servers
        )
        assigned = _one_target_each(answered)
        assert len(assigned) == KEYS
        # The hash picks the target only: the picker still spreads requests over the pool's pods.
        assert gw.fleet is not None and set(servers) == {s.name for s in gw.fleet.servers}, servers
        assert abs(_share(assigned, CANARY) - 0.10) <= TOLERANCE, _share(assigned, CANARY)
        # Without the key, Envoy draws at random: the same request reaches both targets, at the weights.
        unkeyed = await send_many(gw, BODY, 600, concurrency=32, session=session)
        assert unkeyed.ok == 600, unkeyed.errors[:5]
        assert set(unkeyed.models) == {STABLE, CANARY}
        assert abs(unkeyed.share(CANARY) - 0.10) <= 0.05, unkeyed.models


async def test_a_weight_change_moves_only_the_keys_it_must(tmp_path: Path) -> None:
    edit = _canary_model(10, {ANNOTATION_STICKY_KEY: "header:x-session-id"})
    manifest = copy_manifest(LORA_SAMPLE, tmp_path / "manifests", edit)
    async with LocalGateway(gateway_options([manifest.parent])) as gw, aiohttp.ClientSession() as session:
        await _wait_for_weights(gw, session, {f"{POOL}/{CANARY}": 1000, f"{POOL}/{STABLE}": 9000})
        keys = _keys(KEYS)
        requests = [(k, {"x-session-id": k}) for k in keys]
        before = _one_target_each(await _send_keyed(gw, session, requests))

        docs = [d for d in yaml.safe_load_all(manifest.read_text()) if d]
        for doc in docs:
            _canary_model(20, {})(doc)
        manifest.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        await _wait_for_weights(gw, session, {f"{POOL}/{CANARY}": 2000, f"{POOL}/{STABLE}": 8000})

        after = _one_target_each(await _send_keyed(gw, session, requests))
        moves = collections.Counter((before[k], after[k]) for k in keys if before[k] != after[k])
        assert set(moves) <= {(STABLE, CANARY)}, moves  # none back from the canary
        assert abs(sum(moves.values()) / KEYS - 0.10) <= TOLERANCE, moves
        assert abs(_share(after, CANARY) - 0.20) <= TOLERANCE, _share(after, CANARY)


async def test_pinned_requests_reach_the_pinned_target_and_the_rest_follow_the_split(tmp_path: Path) -> None:
    pins = "- {header: x-canary, value: always, target: sql-lora}\n"
    annotations = {ANNOTATION_STICKY_KEY: "cookie:session", ANNOTATION_CANARY_PINS: pins}
    manifest = copy_manifest(LORA_SAMPLE, tmp_path, _canary_model(10, annotations))
    async with LocalGateway(gateway_options([manifest])) as gw, aiohttp.ClientSession() as session:
        await _wait_for_weights(gw, session, {f"{POOL}/{CANARY}": 1000, f"{POOL}/{STABLE}": 9000})
        keys = _keys(KEYS)
        pinned = set(keys[:300])
        requests = [
            (k, {"cookie": f"session={k}", **({"x-canary": "always"} if k in pinned else {})}) for k in keys
        ]
        assigned = _one_target_each(await _send_keyed(gw, session, requests))
        assert {assigned[k] for k in pinned} == {CANARY}
        others = {k: t for k, t in assigned.items() if k not in pinned}
        assert abs(_share(others, CANARY) - 0.10) <= TOLERANCE, _share(others, CANARY)
        # Another value of the pin header is no pin: those requests follow the sticky split.
        near_misses = [(k, {"cookie": f"session={k}", "x-canary": "never"}) for k in keys[300:600]]
        again = _one_target_each(await _send_keyed(gw, session, near_misses))
        assert all(again[k] == assigned[k] for k in again)
