"""The stack's load balancer: each Envoy Service Envoy Gateway creates gets forwards from 127.0.0.1.

A Service of one Gateway carries EG's owning-gateway labels; with mergeGateways one Service serves every
Gateway of a GatewayClass (owning-gatewayclass label), and each of its ports is the port of one or more
of those Gateways' listeners. Every (Gateway, port) gets a line `GATEWAY <ns>/<name>:<port> <url>` in
DIR/gateways; the forward listens on the Gateway's own port when it is free.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
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


def gateways_by_port(
    service: Mapping[str, Any], gateways: Sequence[Mapping[str, Any]]
) -> dict[int, list[str]]:
    """Service port -> the Gateways ("ns/name") it serves, for one Gateway's or a merged class's Service."""
    labels = service["metadata"].get("labels") or {}
    ports = [int(p["port"]) for p in service["spec"].get("ports") or [] if p.get("protocol", "TCP") == "TCP"]
    if OWNING_GATEWAY in labels:
        gateway = f"{labels.get(OWNING_GATEWAY_NS, 'default')}/{labels[OWNING_GATEWAY]}"
        return {port: [gateway] for port in ports}
    out: dict[int, list[str]] = {port: [] for port in ports}
    for gateway in gateways:
        if gateway["spec"].get("gatewayClassName") != labels.get(OWNING_CLASS):
            continue
        key = f"{gateway['metadata']['namespace']}/{gateway['metadata']['name']}"
        for listener in gateway["spec"].get("listeners") or []:
            if int(listener["port"]) in out and key not in out[int(listener["port"])]:
                out[int(listener["port"])].append(key)
    return out


class LoadBalancer:
    """Keeps the forwards and DIR/gateways in step with EG's Envoy Services and their ready Pods."""

    def __init__(self, api: ApiClient, host_netns: str, namespace: str, state: Path) -> None:
        self.api = api
        self.host_netns = host_netns
        self.namespace = namespace
        self.state = state
        self.forwards: dict[tuple[str, int], network.Forward] = {}  # (service, port)
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
            found = await self._get(resource_path("v1", "services", self.namespace), selector)
            services += [s for s in found.get("items") or [] if s not in services]
        gateways = (await self._get("/apis/gateway.networking.k8s.io/v1/gateways")).get("items") or []
        lines = []
        for service in services:
            name = service["metadata"]["name"]
            addresses = await asyncio.to_thread(dns.service_addresses, self.api, self.namespace, name)
            targets = {
                int(p["port"]): int(p.get("targetPort") or p["port"]) for p in service["spec"]["ports"]
            }
            for port, owners in sorted(gateways_by_port(service, gateways).items()):
                if not addresses:
                    continue
                forward = await self._forward((name, port), (addresses[0], targets[port]), port)
                lines += [f"GATEWAY {owner}:{port} http://127.0.0.1:{forward.local_port}" for owner in owners]
            await self._set_address(service)
        if lines != self.lines:
            self.lines = lines
            tmp = self.state / "gateways.tmp"
            tmp.write_text("".join(f"{line}\n" for line in lines))
            tmp.replace(self.state / "gateways")

    async def _forward(self, key: tuple[str, int], target: tuple[str, int], port: int) -> network.Forward:
        forward = self.forwards.get(key)
        if forward is None:
            forward = network.Forward(self.host_netns, target, port)
            await forward.start()
            self.forwards[key] = forward
            log.info(
                "gateway_forward", service=key[0], port=port, local_port=forward.local_port, target=target
            )
        forward.retarget(target)
        return forward

    async def _set_address(self, service: Mapping[str, Any]) -> None:
        """As a cloud load balancer would, so EG can report the Gateway's address."""
        if service["spec"].get("type") != "LoadBalancer" or (service.get("status") or {}).get("loadBalancer"):
            return
        meta = service["metadata"]
        body = {"status": {"loadBalancer": {"ingress": [{"ip": "127.0.0.1"}]}}}
        path = resource_path("v1", "services", meta["namespace"], meta["name"], "status")
        await asyncio.to_thread(request_json, self.api, "PATCH", path, (), body, MERGE_PATCH)

    async def stop(self) -> None:
        for forward in self.forwards.values():
            await forward.stop()
