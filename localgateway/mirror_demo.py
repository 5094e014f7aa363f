"""`./hack/demo.sh mirror`: production and shadow side by side (config/samples/mirror-into-pool.yaml)."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from api.model import InferencePool
from api.parse import owns, parse_object
from localgateway.translation import load_manifests

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "config/samples/mirror-into-pool.yaml"
GATEWAY = "default/mirror-gateway:8092"
PRODUCTION, SHADOW = "prod-pool", "shadow-pool"

Received = Mapping[str, collections.Counter[str]]  # pool name -> requests its pods got, by model


def pools(manifest: Path = SAMPLE) -> dict[str, InferencePool]:
    found = {}
    for obj in load_manifests([manifest]):
        if owns(obj) and obj.get("kind") == "InferencePool":
            pool = parse_object(obj)
            assert isinstance(pool, InferencePool)
            found[pool.meta.name] = pool
    return found


def mirror_percent(manifest: Path = SAMPLE) -> float:
    for obj in load_manifests([manifest]):
        if obj.get("kind") == "HTTPRoute":
            for rule in obj["spec"]["rules"]:
                for flt in rule.get("filters") or []:
                    if flt.get("type") == "RequestMirror":
                        return float(flt["requestMirror"].get("percent", 100))
    return 0.0


async def settled(
    read: Callable[[], Awaitable[Received]], quiet: float = 1.0, limit: float = 30.0
) -> Received:
    """The pods' counts once they stopped changing: copies finish after the answers."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    last = await read()
    since = loop.time()
    while loop.time() < deadline:
        await asyncio.sleep(0.25)
        now = await read()
        if now != last:
            last, since = now, loop.time()
        elif loop.time() - since >= quiet:
            break
    return last


def since(after: Received, before: Received) -> Received:
    """What the pods got between two reads (the demo's readiness probe is not one of its requests)."""
    return {pool: after[pool] - before.get(pool, collections.Counter()) for pool in after}


def report(answers: collections.Counter[str], received: Received, count: int) -> list[str]:
    """The side-by-side lines, then the summary line tests and users grep for."""
    production, shadow = (
        received.get(PRODUCTION, collections.Counter()),
        received.get(SHADOW, collections.Counter()),
    )
    copies = sum(shadow.values())

    def models(counter: collections.Counter[str]) -> str:
        return ", ".join(f"{m}={n}" for m, n in counter.most_common()) or "-"

    share = 100.0 * copies / max(1, count)
    return [
        f"  {'':10} {'pool':12} {'requests':>8}  models the pods were asked for",
        f"  {'production':10} {PRODUCTION:12} {sum(production.values()):>8}  {models(production)}",
        f"  {'shadow':10} {SHADOW:12} {copies:>8}  {models(shadow)}",
        f"client answers by model: {models(answers)} (every answer is production's)",
        f"mirror: production={sum(production.values())} shadow={copies} "
        f"({share:.1f}% of {count}; the HTTPRoute mirrors {mirror_percent():.0f}%)",
    ]
