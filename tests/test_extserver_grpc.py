"""The extension server over real gRPC, with the requests EG would send (eg-reference, seed samples)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from envoy.config.listener.v3.listener_pb2 import Listener
from grpc_health.v1 import health_pb2, health_pb2_grpc

from api import contract
from api.egextension import service_pb2, service_pb2_grpc
from api.sources.store import ObjectStore, Snapshot
from api.yamlio import load_documents
from extserver.compile import CompileOptions, naming
from extserver.eg import facts as eg_facts
from extserver.eg.call_order import cluster_request, route_request, translate_request
from extserver.eg.resources import ClusterHookCall, EgXds, RouteHookCall, parse_config_dump
from extserver.eg.standin import build_eg_xds
from extserver.hooks import HookContext, StaticSnapshotSource
from extserver.server import SERVICE_NAME, RunningServer, ServeOptions, start_server

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "config" / "samples"
EG_REFERENCE = ROOT / "tests" / "fixtures" / "eg-reference"
MAX_BODY = 4 * 1024 * 1024

# A pool attached to the eg-reference Gateway `default/eg` port 80 (listener default/eg/http -> 10080).
REFERENCE_POOL = """
apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: InferencePool
metadata:
  name: ref-pool
  namespace: default
  annotations:
    inference.networking.x-k8s.io/attach-to: |
      name: eg
      port: 80
spec:
  selector: {app: vllm}
  targetPortNumber: 8000
  extensionRef: {name: inference-gateway-ext-proc}
---
apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: InferenceModel
metadata: {name: chat, namespace: default}
spec:
  modelName: chat
  poolRef: {name: ref-pool}
  targetModels: [{name: chat-a, weight: 90}, {name: chat-b, weight: 10}]
"""

BACKEND_REF = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: ai}
spec:
  gatewayClassName: eg
  listeners: [{name: http, protocol: HTTP, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: llm, namespace: ai}
spec:
  parentRefs: [{name: gw}]
  rules:
  - backendRefs: [{group: inference.networking.x-k8s.io, kind: InferencePool, name: pool}]
---
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferencePool
metadata: {name: pool, namespace: ai}
spec:
  selector: {app: vllm}
  targetPortNumber: 8000
  extensionRef: {name: picker, portNumber: 9002}
---
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceModel
metadata: {name: canary, namespace: ai}
spec:
  modelName: canary
  poolRef: {name: pool}
  targetModels: [{name: base-a, weight: 50}, {name: base-b, weight: 50}]
"""


def _snapshot(objects: Sequence[dict[str, Any]]) -> Snapshot:
    store = ObjectStore()
    store.apply(upserts=[o for o in objects if str(o.get("apiVersion", "")).startswith("inference.")])
    return store.snapshot()


async def _serve(objects: Sequence[dict[str, Any]], **options: Any) -> RunningServer:
    ctx = HookContext(StaticSnapshotSource(_snapshot(objects)), CompileOptions(max_body_bytes=MAX_BODY))
    return await start_server(ctx, ServeOptions(host="127.0.0.1", port=0, **options))


@pytest.fixture
async def backend_ref() -> AsyncIterator[tuple[service_pb2_grpc.EnvoyGatewayExtensionAsyncStub, EgXds]]:
    objects = list(yaml.safe_load_all(BACKEND_REF))
    server = await _serve(objects)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield service_pb2_grpc.EnvoyGatewayExtensionStub(channel), build_eg_xds(objects)
    finally:
        await server.stop(None)


def _ours(metadata: Any) -> dict[str, Any]:
    from google.protobuf import json_format

    if contract.METADATA_NAMESPACE not in metadata.filter_metadata:
        return {}
    value: dict[str, Any] = json_format.MessageToDict(metadata.filter_metadata[contract.METADATA_NAMESPACE])
    return value


async def test_health_reports_serving() -> None:
    server = await _serve([])
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            health = health_pb2_grpc.HealthStub(ch)
            for service in ("", SERVICE_NAME):
                answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
                assert answer.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await server.stop(None)


async def test_route_and_cluster_hooks_mark_the_pool_and_are_idempotent(backend_ref: Any) -> None:
    stub, xds = backend_ref
    calls = xds.hook_calls
    route_call = next(c for c in calls if isinstance(c, RouteHookCall))
    cluster_call = next(c for c in calls if isinstance(c, ClusterHookCall))

    route_answer = await stub.PostRouteModify(route_request(xds, route_call))
    assert route_answer.HasField("route")
    assert route_answer.route.name == route_call.route_name
    assert _ours(route_answer.route.metadata).get(contract.MetadataKey.POOL_NAME) == "pool"

    cluster_answer = await stub.PostClusterModify(cluster_request(xds, cluster_call))
    assert cluster_answer.HasField("cluster")
    assert cluster_answer.cluster.name == "httproute/ai/llm/rule/0"
    assert _ours(cluster_answer.cluster.metadata).get(contract.MetadataKey.POOL_NAME) == "pool"

    # EG may hand back what it got before: a second pass changes nothing.
    again = route_request(xds, route_call)
    again.route.CopyFrom(route_answer.route)
    second = await stub.PostRouteModify(again)
    assert not second.HasField("route") or second.route == route_answer.route
    again_cluster = cluster_request(xds, cluster_call)
    again_cluster.cluster.CopyFrom(cluster_answer.cluster)
    second_cluster = await stub.PostClusterModify(again_cluster)
    assert not second_cluster.HasField("cluster") or second_cluster.cluster == cluster_answer.cluster


async def test_unused_hooks_answer_unchanged(backend_ref: Any) -> None:
    stub, xds = backend_ref
    listener = await stub.PostHTTPListenerModify(
        service_pb2.PostHTTPListenerModifyRequest(listener=xds.listeners[0])
    )
    assert not listener.HasField("listener")
    vhost = await stub.PostVirtualHostModify(
        service_pb2.PostVirtualHostModifyRequest(virtual_host=xds.routes[0].virtual_hosts[0])
    )
    assert not vhost.HasField("virtual_host")
    endpoints = await stub.PostEndpointsModify(service_pb2.PostEndpointsModifyRequest())
    assert not endpoints.HasField("load_assignment")


async def _translate_twice(
    stub: service_pb2_grpc.EnvoyGatewayExtensionAsyncStub, request: service_pb2.PostTranslateModifyRequest
) -> service_pb2.PostTranslateModifyResponse:
    first = await stub.PostTranslateModify(request)
    again = service_pb2.PostTranslateModifyRequest(
        clusters=first.clusters, listeners=first.listeners, routes=first.routes
    )
    second = await stub.PostTranslateModify(again)
    assert list(second.clusters) == list(first.clusters)
    assert list(second.listeners) == list(first.listeners)
    assert list(second.routes) == list(first.routes)
    return first


async def test_translation_of_eg_reference_with_attached_pool() -> None:
    dump = yaml.safe_load((EG_REFERENCE / "out-from-gateway-api-to-xds.all.yaml").read_text())
    reference = parse_config_dump(dump["xds"]["default/eg"])
    objects = list(yaml.safe_load_all(REFERENCE_POOL))
    server = await _serve(objects)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = service_pb2_grpc.EnvoyGatewayExtensionStub(channel)
            answer = await _translate_twice(stub, translate_request(reference))
    finally:
        await server.stop(None)

    clusters = {c.name for c in answer.clusters}
    # EG's own clusters survive (the reply replaces EG's whole list).
    assert {c.name for c in reference.clusters} <= clusters
    for target in ("chat-a", "chat-b"):
        assert naming.target_cluster("default", "ref-pool", target) in clusters
    assert naming.picker_cluster("default", "ref-pool") in clusters
    listeners = {lis.name: lis for lis in answer.listeners}
    assert set(listeners) == {lis.name for lis in reference.listeners}
    assert listeners["default/eg/http"].per_connection_buffer_limit_bytes.value == MAX_BODY
    # Another listener of the same Gateway is not touched.
    assert listeners["default/eg/grpc"].per_connection_buffer_limit_bytes.value == 32768
    routes = {r.name: r for r in answer.routes}
    route_names = {route.name for vh in routes["default/eg/http"].virtual_hosts for route in vh.routes}
    assert any(name.endswith(naming.model_route("default", "chat")) for name in route_names)
    assert list(routes["default/eg/grpc"].virtual_hosts) == list(
        next(r for r in reference.routes if r.name == "default/eg/grpc").virtual_hosts
    )


@pytest.mark.parametrize(
    ("sample", "pool", "targets"),
    [
        ("seed-lora-canary.yaml", "vllm-llama2-7b-pool", ("tweet-summary", "sql-lora")),
        ("seed-base-model-canary.yaml", "reasoning-pool", ("qwq-32b", "deepseek-r1")),
    ],
)
async def test_translation_of_seed_samples(sample: str, pool: str, targets: tuple[str, ...]) -> None:
    objects = load_documents(SAMPLES / sample)
    server = await _serve(objects)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = service_pb2_grpc.EnvoyGatewayExtensionStub(channel)
            answer = await _translate_twice(stub, translate_request(build_eg_xds(objects)))
    finally:
        await server.stop(None)
    clusters = {c.name for c in answer.clusters}
    for target in targets:
        assert naming.target_cluster("default", pool, target) in clusters
    listener = next(lis for lis in answer.listeners if lis.name == "default/inference-gateway/llm-gw")
    assert listener.per_connection_buffer_limit_bytes.value == MAX_BODY


class _BrokenSource:
    async def fresh_snapshot(self) -> Snapshot:
        raise RuntimeError("store unavailable")


async def test_hook_failure_is_an_internal_error_not_an_empty_answer() -> None:
    ctx = HookContext(_BrokenSource())
    server = await start_server(ctx, ServeOptions(host="127.0.0.1", port=0))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = service_pb2_grpc.EnvoyGatewayExtensionStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await stub.PostTranslateModify(service_pb2.PostTranslateModifyRequest())
    finally:
        await server.stop(None)
    assert failure.value.code() == grpc.StatusCode.INTERNAL
    assert "store unavailable" in (failure.value.details() or "")


def _big_listener(size: int) -> Listener:
    listener = Listener(name="big")
    listener.metadata.filter_metadata["pad"].update({"x": "a" * size})
    return listener


async def test_message_size_limit_is_configurable() -> None:
    request = service_pb2.PostHTTPListenerModifyRequest(listener=_big_listener(5 * 1024 * 1024))
    channel_options = [
        ("grpc.max_send_message_length", 16 << 20),
        ("grpc.max_receive_message_length", 16 << 20),
    ]
    for limit, ok in ((eg_facts.DEFAULT_MAX_MESSAGE_BYTES, False), (8 << 20, True)):
        server = await _serve([], max_message_bytes=limit)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=channel_options) as ch:
                stub = service_pb2_grpc.EnvoyGatewayExtensionStub(ch)
                if ok:
                    await stub.PostHTTPListenerModify(request)
                else:
                    with pytest.raises(grpc.aio.AioRpcError) as failure:
                        await stub.PostHTTPListenerModify(request)
                    assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        finally:
            await server.stop(None)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server cert for localhost and a client cert, all from openssl."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
             "-days", "1", "-subj", "/CN=test-ca", cwd=d)  # fmt: skip
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=d)  # fmt: skip
        (d / f"{name}.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.crt", "-days", "1", "-extfile", f"{name}.ext", cwd=d)  # fmt: skip
    return d


async def _health_over_tls(port: int, creds: grpc.ChannelCredentials) -> int:
    async with grpc.aio.secure_channel(f"localhost:{port}", creds) as ch:
        answer = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
        return int(answer.status)


async def test_tls_and_mtls(certs: Path) -> None:
    ca = (certs / "ca.crt").read_bytes()
    client_key, client_crt = (certs / "client.key").read_bytes(), (certs / "client.crt").read_bytes()
    tls = {"tls_cert": certs / "server.crt", "tls_key": certs / "server.key"}

    server = await _serve([], **tls)
    try:
        assert await _health_over_tls(server.port, grpc.ssl_channel_credentials(ca)) == 1
    finally:
        await server.stop(None)

    server = await _serve([], client_ca=certs / "ca.crt", **tls)
    try:
        with pytest.raises(grpc.aio.AioRpcError):
            await _health_over_tls(server.port, grpc.ssl_channel_credentials(ca))
        mutual = grpc.ssl_channel_credentials(ca, private_key=client_key, certificate_chain=client_crt)
        assert await _health_over_tls(server.port, mutual) == 1
    finally:
        await server.stop(None)


@pytest.mark.parametrize(
    ("sample", "target"),
    [
        ("seed-lora-canary.yaml", naming.target_cluster("default", "vllm-llama2-7b-pool", "tweet-summary")),
        ("seed-base-model-canary.yaml", naming.target_cluster("default", "reasoning-pool", "qwq-32b")),
    ],
)
def test_translate_command_accepts_the_seed_samples(sample: str, target: str) -> None:
    """The seeds share object names, so each is translated on its own (as they are applied)."""
    command = [sys.executable, "-m", "extserver", "translate", "-f", str(SAMPLES / sample)]
    result = subprocess.run(
        command, cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    (doc,) = list(yaml.safe_load_all(result.stdout))
    assert doc["gateway"] == "default/inference-gateway"
    assert target in {c["name"] for c in doc["clusters"]}
