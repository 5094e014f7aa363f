"""The stack's load balancer: each Envoy Service Envoy Gateway creates gets its own loopback address.

A Service of one Gateway carries EG's owning-gateway labels; with mergeGateways one Service serves every
Gateway of a GatewayClass (owning-gatewayclass label), and each of its ports is the port of one or more
of those Gateways' listeners. Each such Service gets an address 127.<stack>.<x>.<y> of the machine
(Linux routes all of 127.0.0.0/8 to `lo`: nothing to configure), written to its
`status.loadBalancer.ingress` as a cloud load balancer would, so EG reports it as the Gateway's address
and two Gateways can both listen on port 80. `<stack>` comes from the state directory, so two stacks
running at once use different addresses; `<x>.<y>` from the Service's name, so a Gateway keeps its
address from one run to the next. The forward listens there on the Gateway's own port (any port if that
is taken), and also on 127.0.0.1 at that port when it is free (`curl localhost:8081`, as in the seed
article). Every (Gateway, port) gets a line `GATEWAY <ns>/<name>:<port> <url>` in DIR/gateways.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog
from kubernetes.client import ApiClient

from api.sources.kubeapi import MERGE_PATCH, request_json, resource_path
from hack.stack import dns, network

log = structlog.get_logger(__name__)

OWNING_GATEWAY = "gateway.envoyproxy.io/owning-gateway-name"
OWNING_GATEWAY_NS = "gateway.envoyproxy.io/owning-gateway-namespace"
OWNING_CLASS = "gateway.envoyproxy.io/owning-gatewayclass"
# Addresses tried per Service before it settles for its first one with any free port.
ADDRESS_ATTEMPTS = 64


def gateways_by_port(
    service: Mapping[str, Any], gateways: Sequence[Mapping[str, Any]]
) -> dict[int, list[str]]:
    """Service port -> the Gateways ("ns/name") it serves, for one Gateway's or a merged class's Service."""
    labels = service["metadata"].get("labels") or {}
    out: dict[int, list[str]] = {port: [] for port in tcp_ports(service)}
    if OWNING_GATEWAY in labels:
        owner = f"{labels.get(OWNING_GATEWAY_NS, 'default')}/{labels[OWNING_GATEWAY]}"
        return {port: [owner] for port in out}
    for gateway in gateways:
        if gateway["spec"].get("gatewayClassName") != labels.get(OWNING_CLASS):
            continue
        key = f"{gateway['metadata']['namespace']}/{gateway['metadata']['name']}"
        for listener in gateway["spec"].get("listeners") or []:
            if int(listener["port"]) in out and key not in out[int(listener["port"])]:
                out[int(listener["port"])].append(key)
    return out


def tcp_ports(service: Mapping[str, Any]) -> list[int]:
    return [int(p["port"]) for p in service["spec"].get("ports") or [] if p.get("protocol", "TCP") == "TCP"]


def stack_octet(state: Path) -> int:
    """The second octet of a stack's addresses, from its state directory: 1..254, so never 127.0.x.x,
    where 127.0.0.1 and the machine's own resolvers (127.0.0.53) live."""
    return hashlib.sha256(str(state.resolve()).encode()).digest()[0] % 254 + 1


def candidate_addresses(octet: int, service: str) -> Iterator[str]:
    """127.<octet>.<x>.<y> for a Service ("ns/name"): the one its name hashes to first, then the next ones."""
    start = int.from_bytes(hashlib.sha256(service.encode()).digest()[:2], "big")
    for step in range(1 << 16):
        x, y = divmod((start + step) % (1 << 16), 256)
        if 0 < y < 255:  # no network or broadcast-looking addresses
            yield f"127.{octet}.{x}.{y}"


class LoadBalancer:
    """Keeps the forwards, Service addresses and DIR/gateways in step with EG's Envoy Services."""

    def __init__(self, api: ApiClient, host_netns: str, state: Path) -> None:
        self.api = api
        self.host_netns = host_netns
        self.state = state
        self.octet = stack_octet(state)
        self.addresses: dict[str, str] = {}  # Service "ns/name" -> its loopback address
        self.forwards: dict[tuple[str, int], network.Forward] = {}  # (service "ns/name", port)
        self.aliases: dict[tuple[str, int], network.Forward | None] = {}  # on 127.0.0.1; None: port taken
        self.lines: list[str] = []

    async def _get(self, path: str, selector: str | None = None) -> dict[str, Any]:
        query = [("labelSelector", selector)] if selector else []
        return await asyncio.to_thread(request_json, self.api, "GET", path, query)

    async def run(self) -> None:
        while True:
            try:
                await self.sync()
            except Exception as err:  # the API server restarting, a Service going away: try again
                log.info("load_balancer_sync_failed", error=str(err))
            await asyncio.sleep(0.5)

    async def sync(self) -> None:
        services = []
        for selector in (OWNING_GATEWAY, OWNING_CLASS):
            # Every namespace: EG puts a Gateway's Envoy in its own namespace in GatewayNamespace mode.
            found = await self._get(resource_path("v1", "services"), selector)
            services += [s for s in found.get("items") or [] if s not in services]
        gateways = (await self._get("/apis/gateway.networking.k8s.io/v1/gateways")).get("items") or []
        lines = []
        for service in services:
            namespace, name = service["metadata"]["namespace"], service["metadata"]["name"]
            key = f"{namespace}/{name}"
            ip = self._address(key, tcp_ports(service))
            addresses = await asyncio.to_thread(dns.service_addresses, self.api, namespace, name)
            targets = {
                int(p["port"]): int(p.get("targetPort") or p["port"]) for p in service["spec"]["ports"]
            }
            for port, owners in sorted(gateways_by_port(service, gateways).items()):
                if not addresses:
                    continue
                target = (addresses[0], targets[port])
                forward = await self._forward((key, port), target, ip, port)
                await self._alias((key, port), target)
                url = f"http://{ip}:{forward.local_port}"
                lines += [f"GATEWAY {owner}:{port} {url}" for owner in owners]
            await self._set_address(service, ip)
        if lines != self.lines:
            self.lines = lines
            tmp = self.state / "gateways.tmp"
            tmp.write_text("".join(f"{line}\n" for line in lines))
            tmp.replace(self.state / "gateways")

    def _address(self, service: str, ports: Sequence[int]) -> str:
        """The Service's address: the first candidate no other Service here took whose ports are all free
        (another stack may hold it), else the first candidate not taken here."""
        known = self.addresses.get(service)
        if known is not None:
            return known
        taken = set(self.addresses.values())
        free = [ip for ip in candidate_addresses(self.octet, service) if ip not in taken]
        chosen = next((ip for ip in free[:ADDRESS_ATTEMPTS] if self._ports_free(ip, ports)), free[0])
        self.addresses[service] = chosen
        log.info("gateway_address", service=service, address=chosen)
        return chosen

    def _ports_free(self, ip: str, ports: Sequence[int]) -> bool:
        for port in ports:
            try:
                network.listener_in(self.host_netns, port, ip, exact=True).close()
            except OSError:
                return False
        return True

    async def _forward(
        self, key: tuple[str, int], target: tuple[str, int], ip: str, port: int
    ) -> network.Forward:
        forward = self.forwards.get(key)
        if forward is None:
            forward = network.Forward(self.host_netns, target, port, host=ip)
            await forward.start()
            self.forwards[key] = forward
            log.info(
                "gateway_forward",
                service=key[0],
                port=port,
                address=f"{ip}:{forward.local_port}",
                target=target,
            )
        forward.retarget(target)
        return forward

    async def _alias(self, key: tuple[str, int], target: tuple[str, int]) -> None:
        """127.0.0.1:<port> as well, for the first Service that finds the port free (tried once)."""
        if key not in self.aliases:
            alias = network.Forward(self.host_netns, target, key[1], exact=True)
            try:
                await alias.start()
                self.aliases[key] = alias
                log.info("gateway_alias", service=key[0], address=f"127.0.0.1:{key[1]}")
            except OSError:
                self.aliases[key] = None
        existing = self.aliases[key]
        if existing is not None:
            existing.retarget(target)

    async def _set_address(self, service: Mapping[str, Any], ip: str) -> None:
        """As a cloud load balancer would, so EG can report the Gateway's address."""
        if service["spec"].get("type") != "LoadBalancer":
            return
        ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress")
        if ingress == [{"ip": ip}]:
            return
        meta = service["metadata"]
        body = {"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}}
        path = resource_path("v1", "services", meta["namespace"], meta["name"], "status")
        await asyncio.to_thread(request_json, self.api, "PATCH", path, (), body, MERGE_PATCH)

    async def stop(self) -> None:
        for forward in [*self.forwards.values(), *self.aliases.values()]:
            if forward is not None:
                with contextlib.suppress(Exception):
                    await forward.stop()
