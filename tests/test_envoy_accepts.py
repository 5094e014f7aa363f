"""Real Envoy 1.40 loads the compiled xDS dynamically (CDS/LDS/RDS files, as EG delivers it over xDS)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.core.v3.base_pb2 import DataSource
from envoy.config.endpoint.v3.endpoint_components_pb2 import Endpoint, LbEndpoint, LocalityLbEndpoints
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.config.route.v3.route_pb2 import RouteConfiguration
from envoy.extensions.filters.http.lua.v3.lua_pb2 import Lua
from envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2 import (
    HttpConnectionManager,
    HttpFilter,
)
from envoy.service.discovery.v3.discovery_pb2 import DiscoveryResponse
from google.protobuf.json_format import MessageToJson

from api.contract import HEADER_DESTINATION_ENDPOINT, METADATA_NAMESPACE, Role
from extserver.compile import metadata, naming
from localgateway.envoy import EnvoyProcess
from tests.compile_cases import run_case
from tests.ports import free_port

# Cases with one Gateway each (two Gateways on one port cannot share one Envoy: that is EG's per-IR split).
CASES = [
    "seed-lora-canary",
    "seed-base-model-canary",
    "backendref-x-k8s-v1alpha1",
    "backendref-x-k8s-v1alpha2",
    "backendref-ga-v1",
    "backendref-root-prefix",
    "privileged-port",
    "conflicts",
    "sticky-canary",
    "backendref-sticky-canary",
    "rewrite-objectives",
]
STARTUP_SECONDS = 60.0


def _write_resources(path: Path, messages: Sequence[Any], type_url: str) -> None:
    response = DiscoveryResponse(version_info="1", type_url=type_url)
    for message in messages:
        response.resources.add().Pack(message, deterministic=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(MessageToJson(response))
    tmp.rename(path)  # Envoy watches for moves into place


def _serve_from_files(
    directory: Path,
    clusters: Sequence[Cluster],
    listeners: Sequence[Listener],
    routes: Sequence[RouteConfiguration],
) -> dict[str, int]:
    """Rewrite EG's ADS sources to files (test plumbing only; our own resources are loaded as compiled)."""
    ports: dict[str, int] = {}
    loaded_listeners = []
    for listener in listeners:
        copy = Listener()
        copy.CopyFrom(listener)
        copy.address.socket_address.address = "127.0.0.1"
        copy.address.socket_address.port_value = ports.setdefault(copy.name, free_port())
        chains = [
            *copy.filter_chains,
            *([copy.default_filter_chain] if copy.HasField("default_filter_chain") else []),
        ]
        for chain in chains:
            for network_filter in chain.filters:
                hcm = HttpConnectionManager()
                if not network_filter.typed_config.Unpack(hcm) or not hcm.HasField("rds"):
                    continue
                index = [rc.name for rc in routes].index(hcm.rds.route_config_name)
                hcm.rds.config_source.ClearField("ads")
                hcm.rds.config_source.path_config_source.path = str(directory / f"rds-{index}.json")
                network_filter.typed_config.Pack(hcm)
        loaded_listeners.append(copy)
    loaded_clusters = []
    for cluster in clusters:
        copy = Cluster()
        copy.CopyFrom(cluster)
        if copy.eds_cluster_config.eds_config.HasField("ads"):
            # EG's own EDS comes over ADS; an empty static cluster stands in for it here.
            copy.ClearField("eds_cluster_config")
            copy.type = Cluster.STATIC
            copy.load_assignment.cluster_name = copy.name
        loaded_clusters.append(copy)
    for index, rc in enumerate(routes):
        _write_resources(
            directory / f"rds-{index}.json",
            [rc],
            "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        )
    _write_resources(
        directory / "cds.json", loaded_clusters, "type.googleapis.com/envoy.config.cluster.v3.Cluster"
    )
    _write_resources(
        directory / "lds.json", loaded_listeners, "type.googleapis.com/envoy.config.listener.v3.Listener"
    )
    return ports


def _start_envoy(directory: Path) -> EnvoyProcess:
    """Envoy reading CDS and LDS from files in `directory`: dynamically, as Envoy Gateway delivers xDS."""
    bootstrap = {
        "node": {"id": "test-node", "cluster": "test-cluster"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "dynamic_resources": {
            "cds_config": {
                "path_config_source": {"path": str(directory / "cds.json")},
                "resource_api_version": "V3",
            },
            "lds_config": {
                "path_config_source": {"path": str(directory / "lds.json")},
                "resource_api_version": "V3",
            },
        },
    }
    envoy = EnvoyProcess(bootstrap, concurrency=1)
    envoy.start(timeout=STARTUP_SECONDS)
    return envoy


@pytest.fixture
def envoy_runner() -> Iterator[list[EnvoyProcess]]:
    started: list[EnvoyProcess] = []
    yield started
    for envoy in started:
        envoy.stop()


def _wait_until_settled(envoy: EnvoyProcess, listeners: set[str], clusters: set[str]) -> dict[str, Any]:
    """Until every listener and cluster is active (EDS clusters warm until the picker answers)."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        dump = envoy.config_dump()
        active_clusters, warming, active_listeners = set(), set(), set()
        for config in dump["configs"]:
            for item in config.get("dynamic_active_clusters", []):
                active_clusters.add(item["cluster"]["name"])
            for item in config.get("dynamic_warming_clusters", []):
                warming.add(item["cluster"]["name"])
            for item in config.get("dynamic_listeners", []):
                if "active_state" in item:
                    active_listeners.add(item["name"])
        if clusters <= active_clusters and listeners <= active_listeners and not warming:
            return dump
        if not envoy.running or time.monotonic() > deadline:
            raise AssertionError(
                f"not settled: clusters missing {sorted(clusters - active_clusters)}, "
                f"warming {sorted(warming)}, "
                f"listeners missing {sorted(listeners - active_listeners)}\n{envoy.log_tail(60)}"
            )
        time.sleep(0.2)


@pytest.mark.parametrize("case", CASES)
def test_envoy_loads_compiled_xds(case: str, tmp_path: Path, envoy_runner: list[EnvoyProcess]) -> None:
    result = run_case(case)
    (gateway,) = result.gateways.values()
    _serve_from_files(tmp_path, gateway.clusters, gateway.listeners, gateway.routes)
    envoy = _start_envoy(tmp_path)
    envoy_runner.append(envoy)
    dump = _wait_until_settled(
        envoy, {lis.name for lis in gateway.listeners}, {c.name for c in gateway.clusters}
    )

    route_configs = {
        item["route_config"]["name"]
        for config in dump["configs"]
        for item in config.get("dynamic_route_configs", [])
    }
    assert {rc.name for rc in gateway.routes} <= route_configs
    stats = envoy.stats()
    assert stats["listener_manager.lds.update_rejected"] == 0
    assert stats["cluster_manager.cds.update_rejected"] == 0
    assert stats["listener_manager.lds.update_success"] >= 1
    assert stats["cluster_manager.cds.update_success"] >= 1
    rejected = {name: value for name, value in stats.items() if name.endswith("update_rejected") and value}
    assert not rejected, rejected
    # Our metadata survives into config_dump, so it explains itself.
    text = json.dumps(dump)
    assert METADATA_NAMESPACE in text
    # The usage filter and the access log back to the picker are loaded, not dropped.
    assert naming.USAGE_FILTER in text
    assert naming.ACCESS_LOG_PREFIX in text
    if "sticky" in case:  # the hashed split and the pins are Envoy's own, visible in config_dump
        assert '"use_hash_policy": true' in text
        assert '"header_name": "x-' in text
        assert "/pin/0" in text


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response({"headers": dict(request.headers), "body": json.loads(body or b"null")})


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _echo)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    yield port
    await runner.cleanup()


def _point_targets_at(clusters: Sequence[Cluster], port: int) -> list[Cluster]:
    """Test plumbing: target clusters get a static echo endpoint instead of the (absent) picker's EDS."""
    out = []
    for cluster in clusters:
        copy = Cluster()
        copy.CopyFrom(cluster)
        if metadata.role(copy.metadata) == Role.TARGET:
            copy.ClearField("eds_cluster_config")
            copy.type = Cluster.STATIC
            copy.load_assignment.cluster_name = copy.name
            endpoint = Endpoint()
            endpoint.address.socket_address.address = "127.0.0.1"
            endpoint.address.socket_address.port_value = port
            copy.load_assignment.endpoints.append(
                LocalityLbEndpoints(lb_endpoints=[LbEndpoint(endpoint=endpoint)])
            )
        out.append(copy)
    return out


async def test_client_destination_header_is_stripped_and_fail_open_keeps_the_split(
    tmp_path: Path, envoy_runner: list[EnvoyProcess], echo_port: int
) -> None:
    """Picker down (FailOpen): a client's x-gateway-destination-endpoint never reaches the upstream or the
    load balancer, and the Lua fallback rewrites `model` to the weighted cluster's target."""
    gateway = run_case("backendref-root-prefix").gateways["default/gw"]
    clusters = _point_targets_at(gateway.clusters, echo_port)
    ports = _serve_from_files(tmp_path, clusters, gateway.listeners, gateway.routes)
    envoy = await asyncio.to_thread(_start_envoy, tmp_path)
    envoy_runner.append(envoy)
    await asyncio.to_thread(_wait_until_settled, envoy, {lis.name for lis in gateway.listeners}, set())
    url = f"http://127.0.0.1:{ports['default/gw/http']}"
    seen: set[str] = set()
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/v1/models") as answer:
            assert answer.status == 200
            listing = await answer.json(content_type=None)
            assert [m["id"] for m in listing["data"]] == ["lora-request"]
        for content_type in (
            "application/json",
            "application/json; charset=utf-8",
            "application/x-www-form-urlencoded",
            "text/plain; charset=utf-8",
            None,
        ):
            for _ in range(6):
                headers = {HEADER_DESTINATION_ENDPOINT: "10.9.9.9:8000"}
                if content_type:
                    headers["content-type"] = content_type
                payload = json.dumps({"model": "lora-request", "prompt": "hi"})
                skip = () if content_type else ("Content-Type",)
                async with session.post(
                    f"{url}/v1/completions", data=payload.encode(), headers=headers, skip_auto_headers=skip
                ) as answer:
                    text = await answer.text()
                    assert answer.status == 200, (content_type, text, envoy.log_tail(30))
                    echoed = json.loads(text)
                lowered = {k.lower() for k in echoed["headers"]}
                assert HEADER_DESTINATION_ENDPOINT not in lowered
                assert echoed["body"]["prompt"] == "hi"
                seen.add(echoed["body"]["model"])
    # 30 requests split 50/50: both targets show up (chance of missing one: 2 in a billion).
    assert seen == {"tweet-summary", "sql-lora"}


@dataclass
class EchoServer:
    """An upstream model-server stand-in that says which one answered."""

    name: str
    port: int
    runner: web.AppRunner

    async def kill(self) -> None:
        await self.runner.cleanup()


async def _start_echo(name: str) -> EchoServer:
    async def answer(request: web.Request) -> web.Response:
        body = await request.read()
        echoed = {"server": name, "headers": dict(request.headers), "body": json.loads(body or b"null")}
        return web.json_response(echoed)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return EchoServer(name, port, runner)


@pytest.fixture
async def echo_servers() -> AsyncIterator[list[EchoServer]]:
    servers = [await _start_echo(name) for name in ("a", "b", "c")]
    yield servers
    for server in servers:
        await server.kill()


def _point_pool_clusters_at(clusters: Sequence[Cluster], ports: Sequence[int]) -> list[Cluster]:
    """Test plumbing: every EDS cluster of the pool gets static endpoints instead of the picker's EDS."""
    out = []
    for cluster in clusters:
        copy = Cluster()
        copy.CopyFrom(cluster)
        if metadata.role(copy.metadata) in (Role.TARGET, Role.CATCH_ALL, Role.BACKEND_REF):
            copy.ClearField("eds_cluster_config")
            copy.type = Cluster.STATIC
            copy.load_assignment.cluster_name = copy.name
            group = copy.load_assignment.endpoints.add()
            for port in ports:
                endpoint = Endpoint()
                endpoint.address.socket_address.address = "127.0.0.1"
                endpoint.address.socket_address.port_value = port
                group.lb_endpoints.append(LbEndpoint(endpoint=endpoint))
        out.append(copy)
    return out


def _set_destination_before_router(listeners: Sequence[Listener], destination: str) -> list[Listener]:
    """Test plumbing standing in for the picker: a Lua filter just before the router sets the header."""
    code = (
        "function envoy_on_request(h) h:headers():replace("
        f"{json.dumps(HEADER_DESTINATION_ENDPOINT)}, {json.dumps(destination)}) end"
    )
    out = []
    for listener in listeners:
        copy = Listener()
        copy.CopyFrom(listener)
        chains = [
            *copy.filter_chains,
            *([copy.default_filter_chain] if copy.HasField("default_filter_chain") else []),
        ]
        for chain in chains:
            for network_filter in chain.filters:
                hcm = HttpConnectionManager()
                if not network_filter.typed_config.Unpack(hcm):
                    continue
                lua = HttpFilter(name="envoy.filters.http.lua/test-destination")
                lua.typed_config.Pack(Lua(default_source_code=DataSource(inline_string=code)))
                filters = list(hcm.http_filters)
                filters.insert(len(filters) - 1, lua)  # the router stays last
                del hcm.http_filters[:]
                hcm.http_filters.extend(filters)
                network_filter.typed_config.Pack(hcm)
        out.append(copy)
    return out


async def _completions(session: aiohttp.ClientSession, url: str, count: int) -> list[str]:
    """`count` completions; every one must succeed. Returns which server answered each."""
    servers = []
    for index in range(count):
        payload = {"model": "lora-request", "prompt": f"hi {index}"}
        async with session.post(f"{url}/v1/completions", json=payload) as answer:
            text = await answer.text()
            assert answer.status == 200, (index, answer.status, text)
            servers.append(json.loads(text)["server"])
    return servers


def _cluster_stats(envoy: EnvoyProcess, suffix: str) -> int:
    return sum(
        v for k, v in envoy.stats().items() if k.startswith("cluster.inference/") and k.endswith(suffix)
    )


async def test_dead_pod_loses_no_request_on_the_fallback_path(
    tmp_path: Path, envoy_runner: list[EnvoyProcess], echo_servers: list[EchoServer]
) -> None:
    """No destination header (picker down, FailOpen): a killed pod's requests are retried on another pod
    (connect failure before any response byte), and outlier detection ejects it."""
    a, b, _ = echo_servers
    gateway = run_case("backendref-root-prefix").gateways["default/gw"]
    clusters = _point_pool_clusters_at(gateway.clusters, [a.port, b.port])
    ports = _serve_from_files(tmp_path, clusters, gateway.listeners, gateway.routes)
    envoy = await asyncio.to_thread(_start_envoy, tmp_path)
    envoy_runner.append(envoy)
    await asyncio.to_thread(_wait_until_settled, envoy, {lis.name for lis in gateway.listeners}, set())
    url = f"http://127.0.0.1:{ports['default/gw/http']}"
    async with aiohttp.ClientSession() as session:
        assert set(await _completions(session, url, 20)) == {"a", "b"}  # both pods serve
        await a.kill()
        assert set(await _completions(session, url, 30)) == {"b"}  # every request answered
    assert _cluster_stats(envoy, ".upstream_rq_retry") >= 1
    assert (
        _cluster_stats(envoy, ".outlier_detection.ejections_enforced_consecutive_local_origin_failure") >= 1
    )


async def test_dead_picked_pod_falls_through_to_the_next_listed_endpoint(
    tmp_path: Path, envoy_runner: list[EnvoyProcess], echo_servers: list[EchoServer]
) -> None:
    """The picker's list names a dead pod first: the retry goes to the next listed endpoint (c), never
    to a pod outside the list (b), and the request succeeds. Outlier detection is off here, so every
    request really tries the dead pod first and is retried (with it, the dead pod is soon skipped)."""
    a, b, c = echo_servers
    gateway = run_case("backendref-root-prefix").gateways["default/gw"]
    clusters = _point_pool_clusters_at(gateway.clusters, [a.port, b.port, c.port])
    for cluster in clusters:
        cluster.ClearField("outlier_detection")
    listeners = _set_destination_before_router(gateway.listeners, f"127.0.0.1:{a.port},127.0.0.1:{c.port}")
    ports = _serve_from_files(tmp_path, clusters, listeners, gateway.routes)
    envoy = await asyncio.to_thread(_start_envoy, tmp_path)
    envoy_runner.append(envoy)
    await asyncio.to_thread(_wait_until_settled, envoy, {lis.name for lis in gateway.listeners}, set())
    url = f"http://127.0.0.1:{ports['default/gw/http']}"
    async with aiohttp.ClientSession() as session:
        assert set(await _completions(session, url, 5)) == {"a"}  # the primary while it lives
        await a.kill()
        # Were the retry the least_request fallback, b would answer about half of these.
        assert set(await _completions(session, url, 20)) == {"c"}
    assert _cluster_stats(envoy, ".upstream_rq_retry") >= 20
