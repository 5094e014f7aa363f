"""Cluster DNS for the stack: `<service>.<namespace>.svc.cluster.local` answers with its ready endpoints.

There is no kube-proxy, so a ClusterIP would lead nowhere; each Service name resolves the way a headless
Service does, to the addresses of its ready EndpointSlice endpoints. Names outside cluster.local get
NXDOMAIN: nothing is forwarded off the machine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, cast

import structlog
from dnslib import QTYPE, RCODE, RR, A, DNSRecord
from kubernetes.client import ApiClient

from api.sources.kubeapi import KubeApiError, request_json, resource_path

log = structlog.get_logger(__name__)

DOMAIN = "cluster.local"
TTL = 2
CACHE_SECONDS = 1.0


def ready_addresses(slices: dict[str, Any]) -> list[str]:
    """The addresses of ready endpoints across a Service's EndpointSlices, sorted, without repeats."""
    out: set[str] = set()
    for item in slices.get("items") or []:
        for endpoint in item.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready", True):
                out.update(str(a) for a in endpoint.get("addresses") or [])
    return sorted(out)


def service_addresses(api: ApiClient, namespace: str, service: str) -> list[str]:
    """The ready endpoint addresses of Service `namespace/service`, from its EndpointSlices."""
    slices = request_json(
        api,
        "GET",
        resource_path("discovery.k8s.io/v1", "endpointslices", namespace),
        [("labelSelector", f"kubernetes.io/service-name={service}")],
        timeout=3,
    )
    return ready_addresses(slices)


class ClusterResolver:
    """Service name -> addresses, read from the API server (cached for a second)."""

    def __init__(self, api: ApiClient, fixed: dict[str, str] | None = None) -> None:
        self.api = api
        self.fixed = dict(fixed or {})
        self._cache: dict[str, tuple[float, list[str]]] = {}

    def resolve(self, name: str) -> list[str] | None:
        """None: not a cluster name; []: a cluster name with no ready endpoint."""
        name = name.rstrip(".").lower()
        if name in self.fixed:
            return [self.fixed[name]]
        parts = name.split(".")
        if len(parts) != 5 or ".".join(parts[2:]) != f"svc.{DOMAIN}":
            return None
        hit = self._cache.get(name)
        if hit and time.monotonic() - hit[0] < CACHE_SECONDS:
            return hit[1]
        service, namespace = parts[0], parts[1]
        try:
            addresses = service_addresses(self.api, namespace, service)
        except KubeApiError as err:
            log.info("dns_lookup_failed", name=name, error=str(err))
            addresses = []
        self._cache[name] = (time.monotonic(), addresses)
        return addresses


def answer(query: bytes, resolve: Callable[[str], list[str] | None]) -> bytes:
    request = DNSRecord.parse(query)
    reply = request.reply()
    qname = str(request.q.qname)
    addresses = resolve(qname)
    if addresses is None:
        reply.header.rcode = RCODE.NXDOMAIN
    elif request.q.qtype in (QTYPE.A, QTYPE.ANY):
        for address in addresses:
            reply.add_answer(RR(qname, QTYPE.A, rdata=A(address), ttl=TTL))
    return bytes(reply.pack())


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, resolver: ClusterResolver) -> None:
        self.resolver = resolver
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        asyncio.get_running_loop().create_task(self._reply(data, addr))

    async def _reply(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            packet = await asyncio.to_thread(answer, data, self.resolver.resolve)
        except Exception as err:  # a malformed query gets no answer, as from any resolver
            log.info("dns_bad_query", error=str(err))
            return
        if self.transport is not None:
            self.transport.sendto(packet, addr)


async def serve(resolver: ClusterResolver, host: str, port: int = 53) -> asyncio.DatagramTransport:
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: _Protocol(resolver), local_addr=(host, port)
    )
    return cast(asyncio.DatagramTransport, transport)
