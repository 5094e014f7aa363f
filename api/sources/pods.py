"""Reading a core/v1 Pod into the few fields the picker and the local gateway need."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from api.model import ObjectMeta, Pod
from api.validation import rfc3339

DEFAULT_NAMESPACE = "default"


def parse_pod(obj: Mapping[str, Any]) -> Pod:
    """Pod from a raw object; lenient (pods come from the API server), except a name is required."""
    meta = _mapping(obj.get("metadata"))
    spec = _mapping(obj.get("spec"))
    status = _mapping(obj.get("status"))
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError("metadata.name: required")
    return Pod(
        meta=ObjectMeta(
            namespace=str(meta.get("namespace") or DEFAULT_NAMESPACE),
            name=name,
            uid=str(meta.get("uid") or ""),
            resource_version=str(meta.get("resourceVersion") or ""),
            generation=_int(meta.get("generation")),
            creation_timestamp=rfc3339(meta["creationTimestamp"]) if meta.get("creationTimestamp") else "",
            labels=_string_pairs(meta.get("labels")),
            annotations=_string_pairs(meta.get("annotations")),
        ),
        ip=str(status.get("podIP") or ""),
        ready=_is_ready(status),
        terminating=meta.get("deletionTimestamp") is not None
        or status.get("phase") in ("Succeeded", "Failed"),
        container_ports=_container_ports(spec),
    )


def _is_ready(status: Mapping[str, Any]) -> bool:
    conditions = status.get("conditions")
    if conditions is None:
        # Hand-written local-mode manifests give only status.podIP; the API server always reports
        # conditions once a pod has an IP, so this leniency never applies to real pods.
        return bool(status.get("podIP")) and status.get("phase") in (None, "Running")
    if not isinstance(conditions, list):
        return False
    return any(
        isinstance(c, Mapping) and c.get("type") == "Ready" and str(c.get("status")) == "True"
        for c in conditions
    )


def _container_ports(spec: Mapping[str, Any]) -> tuple[int, ...]:
    ports: set[int] = set()
    containers = spec.get("containers")
    for container in containers if isinstance(containers, list) else ():
        if not isinstance(container, Mapping):
            continue
        for port in container.get("ports") or ():
            if isinstance(port, Mapping) and isinstance(port.get("containerPort"), int):
                ports.add(port["containerPort"])
    return tuple(sorted(ports))


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _string_pairs(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, Mapping):
        return ()
    return tuple(sorted((str(k), str(v)) for k, v in value.items()))


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
