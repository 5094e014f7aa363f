"""Test plumbing for the picker behind real Envoy: fake vLLM-shaped upstreams and Envoy on compiled xDS.

Envoy's config is what the extension server compiles (`compile_translation` after EG's hooks, on the
EG stand-in's xDS for a Gateway with one HTTPRoute to the pools), localized and served over ADS the way
the local gateway does it (localgateway/translation.py): no second, hand-written copy of the shape.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import orjson
from aiohttp import web
from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.config.route.v3.route_pb2 import RouteConfiguration

from api.contract import HEADER_DESTINATION_ENDPOINT, MetadataKey, Role
from extserver.compile import CompileOptions, compile_translation, metadata
from extserver.eg.facts import container_port
from extserver.eg.standin import build_eg_xds_by_gateway
from localgateway.ads import AdsServer, serve_ads
from localgateway.envoy import EnvoyProcess, ads_bootstrap
from localgateway.translation import picker_hosts, publish_localized
from tests.compile_cases import OPTIONS, apply_hooks, compile_inputs
from tests.ports import free_port


@dataclass
class FakeModelServer:
    """A vLLM-shaped upstream: /v1/models, /metrics (settable load), completions that echo what arrived."""

    host: str
    base: str = "tiny"
    adapters: tuple[str, ...] = ()
    waiting: int = 0
    kv: float = 0.0
    received: list[dict[str, Any]] = field(default_factory=list)
    runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_post("/v1/completions", self._complete)
        app.router.add_post("/v1/chat/completions", self._complete)
        return app

    async def start(self, port: int) -> None:
        self.runner = web.AppRunner(self.app(), access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, self.host, port).start()
        self.port = port

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def _models(self, _: web.Request) -> web.Response:
        data = [{"id": self.base, "object": "model", "parent": None}]
        data += [{"id": a, "object": "model", "parent": self.base} for a in self.adapters]
        return web.json_response({"object": "list", "data": data})

    async def _metrics(self, _: web.Request) -> web.Response:
        labels = f'engine="0",model_name="{self.base}"'
        text = (
            f"vllm:num_requests_running{{{labels}}} 0.0\n"
            f"vllm:num_requests_waiting{{{labels}}} {float(self.waiting)}\n"
            f"vllm:kv_cache_usage_perc{{{labels}}} {self.kv}\n"
            f'vllm:lora_requests_info{{max_lora="4",running_lora_adapters="",waiting_lora_adapters=""}} '
            f"{time.time()}\n"
        )
        return web.Response(text=text, content_type="text/plain")

    async def _complete(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = orjson.loads(raw)
        seen = {
            "served_by": self.address,
            "model": body.get("model"),
            "destination": request.headers.get(HEADER_DESTINATION_ENDPOINT, ""),
            "content_length": request.headers.get("content-length"),
            "body_length": len(raw),
        }
        self.received.append(seen)
        if isinstance(body.get("x_test_status"), int):  # a test asks for a model-server error
            error = {"message": "test error", "type": "InternalServerError", "param": None, "code": 500}
            return web.json_response({"error": error}, status=body["x_test_status"])
        usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        if body.get("stream"):
            response = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await response.prepare(request)
            chunk = {"object": "text_completion", "model": body.get("model"), "choices": [{"text": "hi"}]}
            await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
            hold = body.get("x_test_hold_s")
            if isinstance(hold, int | float):  # a test keeps the stream open after the first token
                await asyncio.sleep(hold)
            await response.write(b"data: " + orjson.dumps({**chunk, "choices": [], "usage": usage}) + b"\n\n")
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
            return response
        return web.json_response(
            {"object": "text_completion", "model": body.get("model"), **seen, "usage": usage}
        )


# --- Envoy on compiled xDS ---------------------------------------------------------------------

GATEWAY = "gw"
GATEWAY_PORT = 8081
ROUTE = "pools"


def gateway_objects(
    namespace: str, pools: Sequence[str], pool_header: str = "x-test-pool"
) -> list[dict[str, Any]]:
    """A Gateway and one HTTPRoute to the pools: requests go to the pool named by header `pool_header`,
    others to the first pool (EG orders the header rules first)."""
    backend = {"group": "inference.networking.x-k8s.io", "kind": "InferencePool"}
    rules: list[dict[str, Any]] = [
        {
            "matches": [
                {
                    "path": {"type": "PathPrefix", "value": "/"},
                    "headers": [{"name": pool_header, "value": pool}],
                }
            ],
            "backendRefs": [{**backend, "name": pool}],
        }
        for pool in pools[1:]
    ]
    rules.append(
        {
            "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
            "backendRefs": [{**backend, "name": pools[0]}],
        }
    )
    controller = "gateway.envoyproxy.io/gatewayclass-controller"
    return [
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GatewayClass",
            "metadata": {"name": "eg"},
            "spec": {"controllerName": controller},
        },
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": GATEWAY, "namespace": namespace},
            "spec": {
                "gatewayClassName": "eg",
                "listeners": [{"name": "http", "protocol": "HTTP", "port": GATEWAY_PORT}],
            },
        },
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": ROUTE, "namespace": namespace},
            "spec": {"parentRefs": [{"name": GATEWAY}], "rules": rules},
        },
    ]


@dataclass
class CompiledXds:
    clusters: list[Cluster]
    listeners: list[Listener]
    routes: list[RouteConfiguration]

    def catch_all_cluster(self, pool: str) -> str:
        """The cluster of the HTTPRoute rule to `pool` (EG's, patched by the Cluster hook)."""
        return next(
            c.name
            for c in self.clusters
            if metadata.role(c.metadata) == Role.BACKEND_REF
            and metadata.string_field(c.metadata, MetadataKey.POOL_NAME) == pool
        )


def compile_xds(objects: Sequence[Mapping[str, Any]], options: CompileOptions = OPTIONS) -> CompiledXds:
    """EG's xDS for every Gateway after EG's hooks and the Translation hook's compile, as EG would send it."""
    inputs, invalid = compile_inputs(objects)
    assert not invalid, invalid
    out = CompiledXds([], [], [])
    for eg in build_eg_xds_by_gateway(objects).values():
        apply_hooks(eg, inputs, options)
        compiled = compile_translation(eg.clusters, eg.listeners, eg.routes, inputs, options)
        assert not compiled.problems, compiled.problems
        out.clusters.extend(compiled.clusters)
        out.listeners.extend(compiled.listeners)
        out.routes.extend(compiled.routes)
    return out


@dataclass
class CompiledEnvoy:
    """Envoy fed the compiled xDS over ADS, as the local gateway runs it."""

    envoy: EnvoyProcess
    ads_server: grpc.aio.Server
    xds: CompiledXds

    async def stop(self) -> None:
        await asyncio.to_thread(self.envoy.stop)
        await self.ads_server.stop(grace=0)


async def start_compiled_envoy(
    objects: Sequence[Mapping[str, Any]],
    *,
    listener_port: int,
    admin_port: int,
    picker_port: int,
    log_path: Path,
    options: CompileOptions = OPTIONS,
) -> CompiledEnvoy:
    """Compile `objects`, point every picker Service at `picker_port` and the Gateway listener at
    127.0.0.1:`listener_port` (EG's other listeners at free ports), and start Envoy on it."""
    xds = compile_xds(objects, options)
    inputs, _ = compile_inputs(objects)
    hosts = picker_hosts(inputs.pools, ("127.0.0.1", picker_port))
    ports = {container_port(GATEWAY_PORT): ("127.0.0.1", listener_port)}
    for listener in xds.listeners:
        port = listener.address.socket_address.port_value
        ports.setdefault(port, ("127.0.0.1", free_port()))
    ads = AdsServer()
    version = publish_localized(ads, xds.clusters, xds.listeners, xds.routes, hosts, ports)
    ads_port = free_port()
    server = await serve_ads(ads, ads_port)
    envoy = EnvoyProcess(ads_bootstrap(ads_port, node_id="picker-test", admin_port=admin_port), concurrency=1)
    envoy.log_path = log_path
    try:
        await asyncio.to_thread(envoy.start)
        await ads.wait_acked(version, timeout=30)
        await _wait_listening(envoy, listener_port)
    except BaseException:
        await asyncio.to_thread(envoy.stop)
        await server.stop(grace=0)
        raise
    return CompiledEnvoy(envoy, server, xds)


async def _wait_listening(envoy: EnvoyProcess, port: int, timeout: float = 30.0) -> None:
    """Until Envoy accepts connections on the Gateway listener (it warms listeners after the ACK)."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                if not envoy.running:
                    raise RuntimeError(f"envoy exited:\n{envoy.log_tail()}") from None
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return
