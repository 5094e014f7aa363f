"""The picker replicas' `/measurements` URLs from the picker Service's EndpointSlices in Kubernetes."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from kubernetes.client import ApiClient

from api.sources.kubeapi import request_json, resource_path
from rollout.poll import MEASUREMENTS_PATH, Discover

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


def endpoint_slice_urls(slices: Mapping[str, Any], port: int | str) -> list[str]:
    """Every serving endpoint's URL, sorted; `port` is a number, or the name of the slices' port."""
    urls: set[str] = set()
    for item in slices.get("items") or ():
        number = port if isinstance(port, int) else _named_port(item, port)
        if number is None:
            continue
        for endpoint in item.get("endpoints") or ():
            conditions = endpoint.get("conditions") or {}
            # A terminating pod still serving keeps its access-log streams: its counts are the window's.
            serving = conditions.get("serving", conditions.get("ready"))
            if serving is False:
                continue
            for address in endpoint.get("addresses") or ():
                host = f"[{address}]" if ":" in address else address
                urls.add(f"http://{host}:{number}{MEASUREMENTS_PATH}")
    return sorted(urls)


def _named_port(item: Mapping[str, Any], name: str) -> int | None:
    for p in item.get("ports") or ():
        if p.get("name") == name and isinstance(p.get("port"), int):
            return int(p["port"])
    return None


def kube_discovery(
    api: ApiClient, namespace: str, service: str, port: int | str = 9090, timeout: float = 5.0
) -> Discover:
    """A discovery coroutine for `WindowTracker`: the Service's EndpointSlices, read at each call."""
    path = resource_path("discovery.k8s.io/v1", "endpointslices", namespace)
    query: Sequence[tuple[str, str]] = (("labelSelector", f"{SERVICE_NAME_LABEL}={service}"),)

    async def discover() -> Sequence[str]:
        # The kubernetes client is synchronous: keep it off the event loop.
        slices = await asyncio.to_thread(request_json, api, "GET", path, query, timeout=timeout)
        return endpoint_slice_urls(slices, port)

    return discover
