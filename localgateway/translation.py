"""Envoy Gateway's part, locally: manifests -> EG-shaped xDS -> extension hooks over gRPC -> ADS snapshot."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import grpc
import structlog
from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.config.route.v3.route_pb2 import RouteConfiguration

from api.contract import picker_service_host
from api.egextension.service_pb2_grpc import EnvoyGatewayExtensionStub
from api.model import InferencePool
from api.yamlio import load_documents
from extserver.eg.call_order import run_hooks_via
from extserver.eg.standin import build_eg_xds_by_gateway
from localgateway.ads import TYPE_CLUSTER, TYPE_LISTENER, TYPE_ROUTE, AdsServer
from localgateway.localize import HostMap, localize_clusters, localize_listeners, localize_mirrors
from localgateway.ports import free_port

log = structlog.get_logger("local-gateway")

MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def load_manifests(paths: Sequence[Path]) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    for path in paths:
        files = (
            sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml")) if path.is_dir() else [path]
        )
        for file in files:
            objects.extend(load_documents(file))
    return objects


def picker_hosts(pools: Iterable[InferencePool], local: tuple[str, int]) -> dict[str, tuple[str, int]]:
    """Every pool's picker Service ("host:port" as compiled) resolves to the one local picker."""
    return {f"{picker_service_host(p.picker.name, p.meta.namespace)}:{p.picker.port}": local for p in pools}


def publish_localized(
    ads: AdsServer,
    clusters: list[Cluster],
    listeners: list[Listener],
    routes: list[RouteConfiguration],
    hosts: HostMap,
    ports: Mapping[int, tuple[str, int]],
    mirror_ports: MutableMapping[str, int] | None = None,
) -> int:
    """Localize compiled xDS in place (Service names and listener ports to loopback) and publish it over
    ADS; returns the version published."""
    localize_clusters(clusters, hosts)
    localize_listeners(listeners, ports)
    localize_mirrors(listeners, clusters, {} if mirror_ports is None else mirror_ports, free_port)
    return ads.publish({TYPE_CLUSTER: clusters, TYPE_LISTENER: listeners, TYPE_ROUTE: routes})


class Translator:
    """Calls the extension server like Envoy Gateway does and publishes the result to Envoy over ADS."""

    def __init__(
        self,
        manifests: Sequence[Path],
        extserver_address: str,
        ads: AdsServer,
        hosts: HostMap,
        ports: Mapping[int, tuple[str, int]],
    ) -> None:
        self._manifests = list(manifests)
        self._ads = ads
        self._hosts = hosts
        self._ports = ports
        self._mirror_ports: dict[str, int] = {}
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ]
        self._channel = grpc.aio.insecure_channel(extserver_address, options=options)
        self._stub = EnvoyGatewayExtensionStub(self._channel)

    async def translate(self) -> int:
        """One translation of every Gateway; returns the ADS version published."""
        objects = load_manifests(self._manifests)
        listeners: list[Listener] = []
        routes: list[RouteConfiguration] = []
        clusters: list[Cluster] = []
        for gateway, xds in sorted(build_eg_xds_by_gateway(objects).items()):
            # wait_for_ready like EG's client: the extension server may still be starting.
            result = await run_hooks_via(
                xds,
                lambda r: self._stub.PostRouteModify(r, wait_for_ready=True),
                lambda r: self._stub.PostClusterModify(r, wait_for_ready=True),
                lambda r: self._stub.PostTranslateModify(r, wait_for_ready=True),
            )
            log.info(
                "translated", gateway=gateway, listeners=len(result.listeners), clusters=len(result.clusters)
            )
            listeners.extend(result.listeners)
            routes.extend(result.routes)
            clusters.extend(result.clusters)
        return publish_localized(
            self._ads, clusters, listeners, routes, self._hosts, self._ports, self._mirror_ports
        )

    async def close(self) -> None:
        await self._channel.close()
