#!/usr/bin/env python3
"""What mirroring costs production: p50 latency and errors with and without a mirror, in one run.

Starts the local gateway on config/samples/mirror-into-pool.yaml, with a second hostname whose
HTTPRoute rule has no mirror. Rounds alternate between the two hosts (the same production pool, the same
load), with the shadow pool healthy, answering 500, slowed down 20x, and finally stopped. Each state's
ratio is mirrored p50 / unmirrored p50, measured in the same rounds.

The last line: `mirror: healthy_p50_ratio=.. failing_p50_ratio=.. slow_p50_ratio=.. down_p50_ratio=..
production_errors=N`.
Usage: .venv/bin/python hack/bench/mirror.py [--requests N]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import yaml  # noqa: E402

from localgateway.ports import free_port  # noqa: E402
from localgateway.run import LocalGateway, LocalGatewayOptions  # noqa: E402

SAMPLE = ROOT / "config" / "samples" / "mirror-into-pool.yaml"
PORT = 8092
BODY = {"model": "chat", "prompt": "Write as if you were a critic: San Francisco", "max_tokens": 8}
HOSTS = {"mirrored": "mirrored.example", "plain": "plain.example"}


def manifest(directory: Path) -> Path:
    """The sample, its route bound to one hostname, plus the same rule without the mirror on another."""
    docs = [d for d in yaml.safe_load_all(SAMPLE.read_text()) if d]
    route = next(d for d in docs if d["kind"] == "HTTPRoute")
    route["spec"]["hostnames"] = [HOSTS["mirrored"]]
    plain = copy.deepcopy(route)
    plain["metadata"]["name"] = "chat-route-plain"
    plain["spec"]["hostnames"] = [HOSTS["plain"]]
    plain["spec"]["rules"][0].pop("filters")
    docs.append(plain)
    path = directory / "mirror-bench.yaml"
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


async def timed(session: aiohttp.ClientSession, url: str, host: str) -> tuple[float, int]:
    started = time.perf_counter()
    async with session.post(url, json=BODY, headers={"host": host}) as response:
        await response.read()
        return time.perf_counter() - started, response.status


async def measure(gw: LocalGateway, requests: int, concurrency: int = 4) -> dict[str, dict[str, Any]]:
    """Both hosts, interleaved in rounds of `concurrency` requests each."""
    url = gw.url() + "/v1/completions"
    out: dict[str, dict[str, Any]] = {k: {"latency": [], "errors": 0} for k in HOSTS}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        for _ in range(max(1, requests // concurrency)):
            for kind, host in HOSTS.items():
                for latency, status in await asyncio.gather(
                    *(timed(session, url, host) for _ in range(concurrency))
                ):
                    out[kind]["latency"].append(latency)
                    out[kind]["errors"] += status != 200
    return out


async def run(requests: int, concurrency: int) -> int:
    with tempfile.TemporaryDirectory(prefix="mirror-bench-") as work:
        options = LocalGatewayOptions(
            manifests=[manifest(Path(work))], listener_ports={PORT: free_port()}, log_level="warning"
        )
        async with LocalGateway(options) as gw:
            assert gw.fleet is not None
            shadow_addresses = {f"{p.ip}:{p.port}" for p in gw.pods if p.deployment == "shadow-vllm"}
            shadow = [s for s in gw.fleet.servers if s.address in shadow_addresses]
            await measure(gw, 40)  # warm-up: connections, the picker's first metrics
            ratios: dict[str, float] = {}
            errors = 0
            states: list[tuple[str, dict[str, Any] | None]] = [
                ("healthy", {"clear": True}),
                ("failing", {"fail": True}),
                ("slow", {"fail": False, "slowdown": 20}),
                ("down", None),
            ]
            for state, control in states:
                for server in shadow:
                    if control is None:
                        await server.stop()
                    else:
                        server.apply_control(control)
                result = await measure(gw, requests, concurrency)
                mirrored = statistics.median(result["mirrored"]["latency"])
                plain = statistics.median(result["plain"]["latency"])
                ratios[state] = mirrored / plain
                errors += result["mirrored"]["errors"] + result["plain"]["errors"]
                print(
                    f"{state:8s} p50 mirrored={mirrored * 1000:.1f} ms plain={plain * 1000:.1f} ms "
                    f"ratio={ratios[state]:.3f} errors={result['mirrored']['errors']}",
                    flush=True,
                )
    summary = " ".join(f"{state}_p50_ratio={ratio:.3f}" for state, ratio in ratios.items())
    print(f"mirror: {summary} production_errors={errors}")
    return 0 if errors == 0 else 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="per host and shadow state")
    parser.add_argument("--concurrency", type=int, default=1, help="requests in flight per round and host")
    args = parser.parse_args(argv)
    return asyncio.run(run(args.requests, args.concurrency))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
