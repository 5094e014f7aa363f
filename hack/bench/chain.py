#!/usr/bin/env python3
"""Where the picker's path overhead goes: the compiled filter chain with and without ext_proc.

Starts the local gateway (simulated fleet + extension server + picker + Envoy over ADS) for the
routing benchmark's shared_prefix workload, takes the listener and clusters Envoy Gateway's part
compiled (from Envoy's config_dump) and runs them in three more Envoys that differ only in ext_proc:
(a) none, (b) a trivial grpc.aio servicer (its own process) answering every request like the picker
does, with a fixed destination, (c) the real picker. Each logs `DS_RX_END -> US_TX_BEG` (last request
byte in, first byte upstream: everything the filter chain adds) to a file. Sequential streaming
requests, interleaved over the variants, 50 ms apart (an idle fleet, as the routing benchmark's
overhead probe).

The last line: `chain: none_p50_ms=.. trivial_p50_ms=.. picker_p50_ms=.. picker_minus_trivial_ms=..`.
Usage: .venv/bin/python hack/bench/chain.py [--requests N]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import random
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
# This file's own directory must not shadow the `picker` package (run as a script it comes first).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from hack.bench.loadgen import percentile  # noqa: E402
from hack.bench.workloads import WORKLOADS, FleetSettings  # noqa: E402
from localgateway.envoy import EnvoyProcess  # noqa: E402
from localgateway.ports import free_port  # noqa: E402
from localgateway.processes import ManagedProcess  # noqa: E402

EXT_PROC_FILTER = "envoy.filters.http.ext_proc"
CHAIN_FORMAT = "%COMMON_DURATION(DS_RX_END:US_TX_BEG:us)% %RESPONSE_CODE%\n"
VARIANTS = ("none", "trivial", "picker")


# --- the trivial servicer (variant b), run in its own process -------------------------------------


async def serve_trivial(port: int, destination: str) -> None:
    """Answers each body message as the picker does (destination + mark), deciding nothing."""
    import grpc
    from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
    from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc

    from picker.handlers.extproc import mutations

    mark = mutations.RoutedMark("default/bench-pool", "llama-3-8b", "llama-3-8b", destination)

    class Trivial(ep_grpc.ExternalProcessorServicer):
        async def Process(self, request_iterator: Any, context: Any) -> None:  # type: ignore[override]
            while True:
                request = await context.read()
                if not isinstance(request, ep.ProcessingRequest):
                    return
                await context.write(mutations.routed_body_response(destination, None, mark))

    server = grpc.aio.server()
    ep_grpc.add_ExternalProcessorServicer_to_server(Trivial(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


# --- the variants' bootstraps, from the gateway's config_dump --------------------------------------


def _without_type(message: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in message.items() if k != "@type"}


def variant_bootstrap(
    dump: dict[str, Any], variant: str, listener_port: int, log_path: Path, trivial_port: int
) -> dict[str, Any]:
    """The compiled inference listener and every cluster as static resources, ext_proc per variant."""
    configs = {c["@type"].rsplit(".", 1)[-1]: c for c in dump["configs"]}
    boot = configs["BootstrapConfigDump"]["bootstrap"]
    clusters = [_without_type(c["cluster"]) for c in configs["ClustersConfigDump"]["dynamic_active_clusters"]]
    routes = {
        r["route_config"]["name"]: _without_type(r["route_config"])
        for r in configs["RoutesConfigDump"]["dynamic_route_configs"]
    }
    listener = next(
        _without_type(copy.deepcopy(entry["active_state"]["listener"]))
        for entry in configs["ListenersConfigDump"]["dynamic_listeners"]
        if "default_filter_chain" in entry["active_state"]["listener"]
    )
    listener["name"] = f"chain-{variant}"
    listener["address"] = {"socket_address": {"address": "127.0.0.1", "port_value": listener_port}}
    hcm = listener["default_filter_chain"]["filters"][0]["typed_config"]
    hcm["route_config"] = routes[hcm.pop("rds")["route_config_name"]]
    hcm["access_log"] = [
        {
            "name": "chain",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": str(log_path),
                "log_format": {"text_format_source": {"inline_string": CHAIN_FORMAT}},
            },
        }
    ]
    if variant == "none":
        hcm["http_filters"] = [f for f in hcm["http_filters"] if not f["name"].startswith(EXT_PROC_FILTER)]
    if variant == "trivial":
        for cluster in clusters:
            if cluster["name"].endswith("/picker"):
                cluster["type"] = "STATIC"
                for key in ("dns_lookup_family", "health_checks"):
                    cluster.pop(key, None)
                address = {"socket_address": {"address": "127.0.0.1", "port_value": trivial_port}}
                cluster["load_assignment"] = {
                    "cluster_name": cluster["name"],
                    "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}],
                }
    return {
        "node": {"id": f"chain-{variant}", "cluster": "chain"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {"listeners": [listener], "clusters": clusters},
        "layered_runtime": boot.get("layered_runtime", {}),
    }


# --- measuring ---------------------------------------------------------------------------------------


async def send_sequential(urls: dict[str, str], bodies: list[dict[str, Any]], gap_s: float) -> dict[str, int]:
    """Each body to every variant in turn (interleaved, so drift hits all alike); non-200s per variant."""
    failures = dict.fromkeys(urls, 0)
    async with aiohttp.ClientSession() as session:
        for body in bodies:
            for name, url in urls.items():
                async with session.post(url + "/v1/completions", json=body) as response:
                    await response.read()
                    if response.status != 200:
                        failures[name] += 1
                await asyncio.sleep(gap_s)
    return failures


def chain_ms(log_path: Path, skip: int) -> list[float]:
    values = []
    for line in log_path.read_text().splitlines():
        duration, _, status = line.partition(" ")
        if duration.isdigit() and status.strip() == "200":
            values.append(int(duration) / 1000.0)
    return values[skip:]


async def run(requests: int, gap_s: float) -> int:
    from hack.bench.routing import local_gateway

    workload = WORKLOADS["shared_prefix"](8)  # type: ignore[call-arg]
    with tempfile.TemporaryDirectory(prefix="bench-chain-") as tmp:
        work = Path(tmp)
        gateway = local_gateway(workload, FleetSettings(), work)
        envoys: list[EnvoyProcess] = []
        try:
            await gateway.start()
            assert gateway.envoy is not None
            dump = gateway.envoy.config_dump()
            destination = str(gateway.pods[0].address)
            trivial_port = free_port()
            trivial = ManagedProcess(
                "trivial",
                [sys.executable, __file__, "--trivial-server", str(trivial_port), destination],
                work / "trivial.log",
            )
            with trivial:
                urls: dict[str, str] = {}
                logs: dict[str, Path] = {}
                for variant in VARIANTS:
                    port = free_port()
                    logs[variant] = work / f"chain-{variant}.log"
                    envoy = EnvoyProcess(
                        variant_bootstrap(dump, variant, port, logs[variant], trivial_port), log_level="error"
                    )
                    envoy.start()
                    envoys.append(envoy)
                    urls[variant] = f"http://127.0.0.1:{port}"
                rng = random.Random(7)
                bodies = [workload.sample(rng).body(direct=False) for _ in range(requests + 5)]
                for body in bodies:
                    body["max_tokens"] = 1
                await asyncio.sleep(1.0)  # first scrapes and EDS in every copy
                failures = await send_sequential(urls, bodies, gap_s)
                await asyncio.sleep(1.5)  # file access logs are flushed every second
                for envoy in envoys:
                    envoy.stop()
                envoys.clear()
        finally:
            for envoy in envoys:
                envoy.stop()
            await gateway.stop()
        results = {v: chain_ms(logs[v], skip=5) for v in VARIANTS}
    print(f"{'variant':<10} {'p50 ms':>8} {'p90 ms':>8} {'requests':>9} {'failed':>7}")
    for variant in VARIANTS:
        values = results[variant]
        if not values:
            print(f"{variant:<10} no successful request (failed {failures[variant]})")
            return 1
        print(
            f"{variant:<10} {statistics.median(values):>8.3f} {percentile(values, 90):>8.3f} "
            f"{len(values):>9} {failures[variant]:>7}"
        )
    p50 = {v: statistics.median(results[v]) for v in VARIANTS}
    print(
        f"chain: none_p50_ms={p50['none']:.3f} trivial_p50_ms={p50['trivial']:.3f} "
        f"picker_p50_ms={p50['picker']:.3f} picker_minus_trivial_ms={p50['picker'] - p50['trivial']:.3f}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=60, help="requests per variant")
    parser.add_argument("--gap-ms", type=float, default=50.0, help="pause after each request")
    parser.add_argument("--trivial-server", nargs=2, metavar=("PORT", "DESTINATION"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.trivial_server:
        import uvloop

        uvloop.run(serve_trivial(int(args.trivial_server[0]), args.trivial_server[1]))
        return 0
    return asyncio.run(run(args.requests, args.gap_ms / 1000.0))


if __name__ == "__main__":
    sys.exit(main())
