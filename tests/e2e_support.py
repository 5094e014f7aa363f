"""Helpers for end-to-end tests: a local gateway on unique loopback addresses and a concurrent client."""

from __future__ import annotations

import asyncio
import collections
import json
import random
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from localgateway.run import LocalGateway, LocalGatewayOptions
from simulator import SERVER_HEADER
from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
LORA_SAMPLE = ROOT / "config/samples/seed-lora-canary.yaml"
BASE_SAMPLE = ROOT / "config/samples/seed-base-model-canary.yaml"
# The article's requests for each seed, short answers.
LORA_BODY = {
    "model": "lora-request",
    "prompt": "Write as if you were a critic: San Francisco",
    "max_tokens": 8,
}
QWQ_BODY = {"model": "qwq", "messages": [{"role": "user", "content": "你是谁?"}], "max_tokens": 8}
GATEWAY_PORT = 8081


def unique_ip_prefix() -> str:
    """127.a.b. so concurrent runs on one machine never share a simulated pod's address."""
    rng = random.Random()
    return f"127.{rng.randint(1, 254)}.{rng.randint(1, 254)}."


def copy_manifest(sample: Path, directory: Path, edit: Any = None) -> Path:
    """Copy a sample into `directory` (optionally editing its documents) so a test can change it."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / sample.name
    if edit is None:
        shutil.copy(sample, target)
    else:
        docs = [d for d in yaml.safe_load_all(sample.read_text()) if d]
        for doc in docs:
            edit(doc)
        target.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return target


def gateway_options(manifests: Sequence[Path], **overrides: Any) -> LocalGatewayOptions:
    values: dict[str, Any] = {
        "manifests": list(manifests),
        "listener_ports": {GATEWAY_PORT: free_port()},
        "ip_prefix": unique_ip_prefix(),
        "log_level": "warning",
    }
    values.update(overrides)
    return LocalGatewayOptions(**values)


@dataclass
class Results:
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    models: collections.Counter[str] = field(default_factory=collections.Counter)
    servers: collections.Counter[str] = field(default_factory=collections.Counter)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return self.statuses[200]

    def share(self, model: str) -> float:
        return self.models[model] / max(1, sum(self.models.values()))


async def send_many(
    gw: LocalGateway,
    body: Mapping[str, Any],
    count: int,
    *,
    path: str = "/v1/completions",
    concurrency: int = 16,
    session: aiohttp.ClientSession | None = None,
    headers: Mapping[str, str] | None = None,
) -> Results:
    results = Results()
    todo = iter(range(count))
    own = session is None
    session = session or aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
    try:

        async def worker() -> None:
            for _ in todo:
                try:
                    async with session.post(gw.url() + path, json=body, headers=headers) as response:
                        raw = await response.read()
                        results.statuses[response.status] += 1
                        if response.status == 200:
                            results.models[json.loads(raw)["model"]] += 1
                            results.servers[response.headers.get(SERVER_HEADER, "?")] += 1
                        else:
                            results.errors.append(f"{response.status} {raw[:200]!r}")
                except aiohttp.ClientError as exc:
                    results.statuses[0] += 1
                    results.errors.append(repr(exc))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        if own:
            await session.close()
    return results


def config_dump_weights(dump: Mapping[str, Any], route_name: str) -> dict[str, int]:
    """The weighted clusters of one route in Envoy's /config_dump: cluster name -> weight."""
    for config in dump.get("configs", []):
        for dynamic in config.get("dynamic_route_configs", []):
            for vhost in dynamic.get("route_config", {}).get("virtual_hosts", []):
                for route in vhost.get("routes", []):
                    if route.get("name") == route_name:
                        clusters = route["route"]["weighted_clusters"]["clusters"]
                        return {c["name"]: int(c.get("weight", 0)) for c in clusters}
    return {}
