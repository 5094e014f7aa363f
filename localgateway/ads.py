"""A small state-of-the-world ADS server: Envoy gets LDS, RDS, CDS and EDS from it, as from Envoy Gateway."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field

import grpc
import structlog
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from picker.handlers.xds import CHANGED, StreamRequests

log = structlog.get_logger("local-gateway.ads")

TYPE_LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
TYPE_ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
TYPE_CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
TYPE_ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
# Push order on a change: clusters before their endpoints, listeners before their routes (Envoy's advice).
PUSH_ORDER = (TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER, TYPE_ROUTE)
WILDCARD_TYPES = frozenset({TYPE_LISTENER, TYPE_CLUSTER})


@dataclass
class _Subscription:
    names: frozenset[str] = frozenset()
    sent_version: int = -1
    sent_names: frozenset[str] | None = None
    nonce: int = 0


@dataclass
class Snapshot:
    """Every resource by type URL and name, with one version for the whole set."""

    version: int = 0
    resources: dict[str, dict[str, any_pb2.Any]] = field(default_factory=dict)


def resource_name(message: Message) -> str:
    if hasattr(message, "cluster_name"):  # ClusterLoadAssignment
        return str(message.cluster_name)
    return str(message.name)  # type: ignore[attr-defined]


class AdsServer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    """Serves one snapshot to every connected Envoy; `publish` replaces it and pushes the change."""

    def __init__(self) -> None:
        self._snapshot = Snapshot()
        self._changed = asyncio.Event()
        self.nacks: list[str] = []
        self.acked_version = 0
        self._acked = asyncio.Event()

    @property
    def version(self) -> int:
        return self._snapshot.version

    def publish(self, by_type: Mapping[str, Iterable[Message]]) -> int:
        resources: dict[str, dict[str, any_pb2.Any]] = {}
        for type_url, messages in by_type.items():
            packed: dict[str, any_pb2.Any] = {}
            for message in messages:
                any_msg = any_pb2.Any()
                any_msg.Pack(message)
                packed[resource_name(message)] = any_msg
            resources[type_url] = packed
        self._snapshot = Snapshot(self._snapshot.version + 1, resources)
        self._changed.set()
        self._changed = asyncio.Event()
        return self._snapshot.version

    async def wait_acked(self, version: int, timeout: float) -> bool:
        """True once an Envoy acknowledged a response of `version` (or newer) for every type it asked."""
        async with asyncio.timeout(timeout):
            while self.acked_version < version:
                await self._acked.wait()
        return True

    def _response(self, type_url: str, sub: _Subscription) -> discovery_pb2.DiscoveryResponse:
        available = self._snapshot.resources.get(type_url, {})
        if type_url in WILDCARD_TYPES and not sub.names:
            chosen = [available[name] for name in sorted(available)]
        else:
            chosen = [available[name] for name in sorted(sub.names) if name in available]
        sub.nonce += 1
        sub.sent_version = self._snapshot.version
        sub.sent_names = sub.names
        return discovery_pb2.DiscoveryResponse(
            version_info=str(self._snapshot.version),
            type_url=type_url,
            nonce=str(sub.nonce),
            resources=chosen,
        )

    async def StreamAggregatedResources(
        self, request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest], context: object
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        subs: dict[str, _Subscription] = {}
        async with StreamRequests(request_iterator) as requests:
            while True:
                request = await requests.next(self._changed.wait)
                if request is None:
                    return
                if request is not CHANGED:
                    sub = subs.setdefault(request.type_url, _Subscription())
                    if request.HasField("error_detail"):
                        self.nacks.append(request.error_detail.message)
                        log.warning("nack", type_url=request.type_url, error=request.error_detail.message)
                    elif request.response_nonce == str(sub.nonce) and request.version_info:
                        self._note_ack(subs)
                    sub.names = frozenset(request.resource_names)
                    # A NACK is not answered again until something changes (the snapshot or the names).
                    stale = sub.sent_version != self._snapshot.version and not request.HasField(
                        "error_detail"
                    )
                    if stale or sub.sent_names != sub.names:
                        yield self._response(request.type_url, sub)
                for type_url in PUSH_ORDER:
                    sub_for_type = subs.get(type_url)
                    if sub_for_type is not None and sub_for_type.sent_version != self._snapshot.version:
                        yield self._response(type_url, sub_for_type)

    def _note_ack(self, subs: Mapping[str, _Subscription]) -> None:
        if all(s.sent_version == self._snapshot.version for s in subs.values()):
            self.acked_version = max(self.acked_version, self._snapshot.version)
            self._acked.set()
            self._acked = asyncio.Event()


async def serve_ads(ads: AdsServer, port: int, host: str = "127.0.0.1") -> grpc.aio.Server:
    """A started gRPC server answering Envoy's ADS stream from `ads` on host:port."""
    server = grpc.aio.server()
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(ads, server)
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    return server
