#!/usr/bin/env python3
"""Benchmark PostTranslateModify over real gRPC: 1, 100 and 1,000 InferenceModels over 10 and 100 pools.

The input is what EG would send for one Gateway: its listeners (10 HTTP listeners plus the ready listener),
route configs and clusters built by extserver.eg.standin from HTTPRoutes (one per pool, as custom backends,
plus 50 plain Service routes), after the Route and Cluster hooks ran. Target: under 100 ms at 1,000 models,
linear growth (EG calls hooks with no deadline; a slow hook stalls every Gateway's translation).

Cold: the compile cache is emptied before the call (the first translation after the server started);
1 chg: one InferenceModel's weights changed since the last call (only its pool is rebuilt); warm: the same
call again (pools and models unchanged, the usual case: EG re-translates on any Gateway API change);
floor: the same call answered with a prebuilt response (gRPC + serialization + client parsing only).

    .venv/bin/python hack/bench/extserver.py [--repeat N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from api.egextension import service_pb2_grpc
from api.egextension.service_pb2 import PostTranslateModifyRequest, PostTranslateModifyResponse
from api.sources.store import ObjectStore
from extserver.compile import CompileCache, CompileOptions
from extserver.eg.call_order import run_hooks_before_translation, translate_request
from extserver.eg.standin import build_eg_xds
from extserver.hooks import HookContext, StaticSnapshotSource
from extserver.server import ServeOptions, start_server

LISTENERS = 10
SERVICE_ROUTES = 50
GROUP = "inference.networking.x-k8s.io"


def manifests(pools: int, models: int) -> list[dict[str, Any]]:
    """One Gateway, HTTPRoutes to each pool and to Services, pools, and models spread over the pools."""
    ns = "bench"
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "gw", "namespace": ns},
            "spec": {
                "gatewayClassName": "eg",
                "listeners": [
                    {"name": f"http-{i}", "protocol": "HTTP", "port": 8000 + i} for i in range(LISTENERS)
                ],
            },
        }
    ]
    for i in range(pools):
        objects.append(_route(ns, f"pool-route-{i}", i % LISTENERS, f"pool-{i}.example.com",
                              {"group": GROUP, "kind": "InferencePool", "name": f"pool-{i}"}))  # fmt: skip
        objects.append(
            {
                "apiVersion": f"{GROUP}/v1alpha2",
                "kind": "InferencePool",
                "metadata": {
                    "name": f"pool-{i}",
                    "namespace": ns,
                    "creationTimestamp": "2026-01-01T00:00:00Z",
                },
                "spec": {
                    "selector": {"app": f"pool-{i}"},
                    "targetPortNumber": 8000,
                    "extensionRef": {"name": "picker", "portNumber": 9002},
                },
            }
        )
    for i in range(SERVICE_ROUTES):
        objects.append(_route(ns, f"svc-route-{i}", i % LISTENERS, f"svc-{i}.example.com",
                              {"kind": "Service", "name": f"svc-{i}", "port": 80}))  # fmt: skip
    for i in range(models):
        objects.append(
            {
                "apiVersion": f"{GROUP}/v1alpha2",
                "kind": "InferenceModel",
                "metadata": {
                    "name": f"model-{i}",
                    "namespace": ns,
                    "creationTimestamp": "2026-01-01T00:00:00Z",
                },
                "spec": {
                    "modelName": f"model-{i}",
                    "poolRef": {"name": f"pool-{i % pools}"},
                    "targetModels": [
                        {"name": f"model-{i}-a", "weight": 90},
                        {"name": f"model-{i}-b", "weight": 10},
                    ],
                },
            }
        )
    return objects


def _route(ns: str, name: str, listener: int, host: str, backend: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "parentRefs": [{"name": "gw", "sectionName": f"http-{listener}"}],
            "hostnames": [host],
            "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}], "backendRefs": [backend]}
            ],
        },
    }


async def measure(pools: int, models: int, repeat: int) -> dict[str, Any]:
    objects = manifests(pools, models)
    store = ObjectStore()
    store.apply(upserts=[o for o in objects if o["apiVersion"].startswith(GROUP)])
    ctx = HookContext(StaticSnapshotSource(store.snapshot()), CompileOptions())
    xds = build_eg_xds(objects)
    await run_hooks_before_translation(xds, ctx)
    request = translate_request(xds)
    limit = 256 << 20
    server = await start_server(ctx, ServeOptions(host="127.0.0.1", port=0, max_message_bytes=limit))
    options = [("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)]
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=options) as channel:
            stub = service_pb2_grpc.EnvoyGatewayExtensionStub(channel)
            answer = await stub.PostTranslateModify(request)  # warm-up
            cold, changed, warm = [], [], []
            for attempt in range(repeat):
                # Cold: nothing cached (the first translation after the server started).
                ctx.cache = CompileCache()
                started = time.perf_counter()
                answer = await stub.PostTranslateModify(request)
                cold.append(time.perf_counter() - started)
                # One model changed (a canary weight moved): only its pool is rebuilt.
                store.apply(upserts=[_with_weight(objects, "model-0", 1 + attempt % 98)])
                ctx.source = StaticSnapshotSource(store.snapshot())
                started = time.perf_counter()
                answer = await stub.PostTranslateModify(request)
                changed.append(time.perf_counter() - started)
                # Warm: pools and models unchanged since the last call (EG re-translates on any change).
                started = time.perf_counter()
                answer = await stub.PostTranslateModify(request)
                warm.append(time.perf_counter() - started)
    finally:
        await server.stop(None)
    floor = await _transport_floor(request, answer, repeat)
    return {
        "pools": pools,
        "models": models,
        "clusters_in": len(request.clusters),
        "listeners": len(request.listeners),
        "request_kib": request.ByteSize() // 1024,
        "clusters_out": len(answer.clusters),
        "response_kib": answer.ByteSize() // 1024,
        "ms": statistics.median(cold) * 1000,
        "changed_ms": statistics.median(changed) * 1000,
        "warm_ms": statistics.median(warm) * 1000,
        "floor_ms": floor * 1000,
    }


class _FixedAnswer(service_pb2_grpc.EnvoyGatewayExtensionServicer):
    def __init__(self, answer: PostTranslateModifyResponse) -> None:
        self.answer = answer

    async def PostTranslateModify(self, request: Any, context: Any) -> PostTranslateModifyResponse:
        return self.answer


async def _transport_floor(
    request: PostTranslateModifyRequest, answer: PostTranslateModifyResponse, repeat: int
) -> float:
    """Median time of the same call answered with a prebuilt response: what gRPC, serialization and the
    client's parsing cost in Python for messages this size, whatever the hook does."""
    limit = 256 << 20
    options = [("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)]
    server = grpc.aio.server(options=options)
    service_pb2_grpc.add_EnvoyGatewayExtensionServicer_to_server(_FixedAnswer(answer), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
            stub = service_pb2_grpc.EnvoyGatewayExtensionStub(channel)
            await stub.PostTranslateModify(request)
            times = []
            for _ in range(repeat):
                started = time.perf_counter()
                await stub.PostTranslateModify(request)
                times.append(time.perf_counter() - started)
    finally:
        await server.stop(None)
    return statistics.median(times)


def _with_weight(objects: list[dict[str, Any]], name: str, weight: int) -> dict[str, Any]:
    """A copy of InferenceModel `name` with its first target at `weight` (the second gets the rest)."""
    (model,) = [o for o in objects if o["kind"] == "InferenceModel" and o["metadata"]["name"] == name]
    spec = dict(model["spec"])
    first, second = spec["targetModels"]
    spec["targetModels"] = [{**first, "weight": weight}, {**second, "weight": 100 - weight}]
    return {**model, "spec": spec}


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # quiet: errors only
    rows = []
    header = f"{'pools':>5} {'models':>6} {'clusters in':>11} {'listeners':>9} {'req KiB':>8} "
    print(
        header + f"{'clusters out':>12} {'resp KiB':>8} {'cold ms':>8} {'1 chg ms':>8} {'warm ms':>8} "
        f"{'floor ms':>8}"
    )
    for pools in (10, 100):
        for models in (1, 100, 1000):
            row = await measure(pools, models, args.repeat)
            rows.append(row)
            print(
                f"{row['pools']:>5} {row['models']:>6} {row['clusters_in']:>11} {row['listeners']:>9} "
                f"{row['request_kib']:>8} {row['clusters_out']:>12} {row['response_kib']:>8} "
                f"{row['ms']:>8.1f} {row['changed_ms']:>8.1f} {row['warm_ms']:>8.1f} {row['floor_ms']:>8.1f}"
            )
    by = {(r["pools"], r["models"]): r["ms"] for r in rows}
    warm = {(r["pools"], r["models"]): r["warm_ms"] for r in rows}
    changed = {(r["pools"], r["models"]): r["changed_ms"] for r in rows}
    floor = {(r["pools"], r["models"]): r["floor_ms"] for r in rows}
    growth = {p: by[(p, 1000)] / by[(p, 100)] for p in (10, 100)}
    verdict = ", ".join(
        f"{label} {'OK' if max(table[(p, 1000)] for p in (10, 100)) < 100 else 'OVER'}"
        for label, table in (("cold", by), ("one changed", changed), ("warm", warm))
    )
    print(
        f"summary: PostTranslateModify at 1,000 models, cold: {by[(10, 1000)]:.1f} ms (10 pools), "
        f"{by[(100, 1000)]:.1f} ms (100 pools); one model changed: {changed[(10, 1000)]:.1f} / "
        f"{changed[(100, 1000)]:.1f} ms; warm: {warm[(10, 1000)]:.1f} / {warm[(100, 1000)]:.1f} ms; "
        f"gRPC floor for that response size: {floor[(10, 1000)]:.1f} / {floor[(100, 1000)]:.1f} ms; "
        f"100->1,000 models growth x{growth[10]:.1f} / x{growth[100]:.1f} (linear would be <= x10); "
        f"target 100 ms: {verdict}"
    )
    print(
        f"extserver: translate_1000_models_10_pools_ms={by[(10, 1000)]:.1f} "
        f"translate_1000_models_100_pools_ms={by[(100, 1000)]:.1f} "
        f"changed_1000_models_10_pools_ms={changed[(10, 1000)]:.1f} "
        f"warm_1000_models_10_pools_ms={warm[(10, 1000)]:.1f} growth_100_to_1000={growth[10]:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
