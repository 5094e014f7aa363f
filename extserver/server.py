"""The grpc.aio server for EG's `envoygateway.extension.EnvoyGatewayExtension` service, plus gRPC health."""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc

from api import contract
from api.egextension import service_pb2, service_pb2_grpc
from extserver import hooks
from extserver.eg import facts as eg
from extserver.hooks import HookContext

log = structlog.get_logger(__name__)

SERVICE_NAME = service_pb2.DESCRIPTOR.services_by_name["EnvoyGatewayExtension"].full_name

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")
_ReqIn = TypeVar("_ReqIn", contravariant=True)
_RespOut = TypeVar("_RespOut", covariant=True)


@dataclass(frozen=True)
class ServeOptions:
    host: str = "0.0.0.0"
    port: int = contract.EXTSERVER_PORT
    # EG's client defaults to 4 MiB; raise both this and EG's `maxMessageSize` together.
    max_message_bytes: int = eg.DEFAULT_MAX_MESSAGE_BYTES
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_ca: Path | None = None  # set: mTLS, EG must present a client certificate signed by it


_Context = grpc.aio.ServicerContext[Any, Any]


class _Rpc(Protocol[_ReqIn, _RespOut]):
    """An RPC method as an instance exposes it (bound, so the servicer is not a parameter)."""

    def __call__(self, request: _ReqIn, context: _Context) -> Awaitable[_RespOut]: ...


def _guarded(hook: str, handler: Callable[[_Req, HookContext], Awaitable[_Resp]]) -> _Rpc[_Req, _Resp]:
    """An RPC method running a hook that compiles, with the servicer's context, under `_guard`."""

    async def rpc(servicer: ExtensionServicer, request: _Req, context: _Context) -> _Resp:
        return await _guard(hook, handler(request, servicer.ctx), context)

    # Stored on the class, the function binds to each instance: instances see the `_Rpc` form.
    return cast(_Rpc[_Req, _Resp], rpc)


def _unchanged(handler: Callable[[_Req], Awaitable[_Resp]]) -> _Rpc[_Req, _Resp]:
    """An RPC method answering "unchanged": it cannot fail, so it needs no guard."""

    async def rpc(servicer: ExtensionServicer, request: _Req, context: _Context) -> _Resp:
        return await handler(request)

    return cast(_Rpc[_Req, _Resp], rpc)


class ExtensionServicer(service_pb2_grpc.EnvoyGatewayExtensionServicer):
    """Dispatches each RPC to its hook; a failure answers INTERNAL (EG then keeps its last config)."""

    def __init__(self, ctx: HookContext) -> None:
        self.ctx = ctx

    PostRouteModify = _guarded("Route", hooks.post_route_modify)
    PostClusterModify = _guarded("Cluster", hooks.post_cluster_modify)
    PostTranslateModify = _guarded("Translation", hooks.post_translate_modify)
    PostVirtualHostModify = _unchanged(hooks.post_virtual_host_modify)
    PostHTTPListenerModify = _unchanged(hooks.post_http_listener_modify)
    PostEndpointsModify = _unchanged(hooks.post_endpoints_modify)


async def _guard(hook: str, call: Awaitable[_Resp], context: _Context) -> _Resp:
    try:
        return await call
    except Exception as exc:
        # With failOpen false EG then keeps Envoy on its last good snapshot: better than wrong config.
        log.exception("hook failed", hook=hook, error=str(exc))
        await context.abort(grpc.StatusCode.INTERNAL, f"{hook} hook failed: {type(exc).__name__}: {exc}")
        raise  # abort raises; this keeps the type checker sure the function never falls through


def _credentials(options: ServeOptions) -> grpc.ServerCredentials | None:
    if options.tls_cert is None and options.tls_key is None:
        if options.client_ca is not None:
            raise ValueError("--client-ca needs --tls-cert and --tls-key")
        return None
    if options.tls_cert is None or options.tls_key is None:
        raise ValueError("--tls-cert and --tls-key go together")
    pair = (options.tls_key.read_bytes(), options.tls_cert.read_bytes())
    client_ca = options.client_ca.read_bytes() if options.client_ca is not None else None
    return grpc.ssl_server_credentials(
        [pair], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


# grpcio-health-checking ships its asyncio servicer without type stubs.
_health_aio: Any = importlib.import_module("grpc_health.v1._async")


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: Any

    async def stop(self, grace: float | None = 1.0) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


async def start_server(ctx: HookContext, options: ServeOptions) -> RunningServer:
    """Start serving (port 0 picks a free port; the bound port is in the result)."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", options.max_message_bytes),
            ("grpc.max_send_message_length", options.max_message_bytes),
        ]
    )
    service_pb2_grpc.add_EnvoyGatewayExtensionServicer_to_server(ExtensionServicer(ctx), server)
    health = _health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    address = f"{options.host}:{options.port}"
    credentials = _credentials(options)
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    if port == 0:
        raise OSError(f"cannot bind {address}")
    await server.start()
    for service in ("", SERVICE_NAME):
        await health.set(service, health_pb2.HealthCheckResponse.SERVING)
    log.info(
        "extension server listening",
        address=f"{options.host}:{port}",
        tls=credentials is not None,
        mtls=options.client_ca is not None,
        max_message_bytes=options.max_message_bytes,
    )
    return RunningServer(server, port, health)
