"""Reporting conditions on the inference kinds: status subresource in a cluster, logs locally."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog
from kubernetes.client import ApiClient

from api.model import V1, V1ALPHA2
from api.sources.kubeapi import MERGE_PATCH, KubeApiError, request_json, resource_path

log = structlog.get_logger(__name__)

GATEWAY_GROUP = "gateway.networking.k8s.io"
CONDITIONS_MAX = 8
PARENTS_MAX = 32
_PLURALS = {
    "InferencePool": "inferencepools",
    "InferenceModel": "inferencemodels",
    "InferenceModelRewrite": "inferencemodelrewrites",
    "InferenceObjective": "inferenceobjectives",
}
# v1alpha2 (v0.5+) default status: a placeholder parent that a real entry replaces.
_PLACEHOLDER_PARENT = {"kind": "Status", "name": "default"}


@dataclass(frozen=True)
class ParentRef:
    """The Gateway a pool's condition is about (v1alpha2 `status.parent[]`, v1 `status.parents[]`)."""

    name: str
    namespace: str | None = None
    group: str = GATEWAY_GROUP
    kind: str = "Gateway"

    def as_dict(self) -> dict[str, str]:
        out = {"group": self.group, "kind": self.kind, "name": self.name}
        if self.namespace:
            out["namespace"] = self.namespace
        return out

    def matches(self, ref: Any) -> bool:
        if not isinstance(ref, Mapping):
            return False
        return (
            ref.get("group", GATEWAY_GROUP) == self.group
            and ref.get("kind", "Gateway") == self.kind
            and ref.get("name") == self.name
            and (ref.get("namespace") or None) == self.namespace
        )


_CacheKey = tuple[str, str, str, str, str, ParentRef | None]
_CacheValue = tuple[str, str, str, int]


@dataclass(frozen=True)
class ConditionUpdate:
    """One status condition for one object (and, for v1alpha2/v1 pools, one parent Gateway)."""

    kind: str
    api_version: str
    namespace: str
    name: str
    type: str
    status: str
    reason: str
    message: str
    observed_generation: int
    parent: ParentRef | None = None

    @property
    def key(self) -> _CacheKey:
        """Which condition this is (writers keep the last value written per key)."""
        return (self.api_version, self.kind, self.namespace, self.name, self.type, self.parent)

    @property
    def value(self) -> _CacheValue:
        return (self.status, self.reason, self.message, self.observed_generation)

    @property
    def object(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


class ConditionWriter(Protocol):
    """Where conditions go: the objects' status subresource, or the log."""

    async def set_condition(self, update: ConditionUpdate) -> None:
        """Record one condition on an object; a no-op when it already says exactly this."""
        ...

    async def remove_parent(self, pool: PoolRef, parent: ParentRef) -> None:
        """Drop a pool's status entry for a Gateway that no longer routes to it (if this writer set one)."""
        ...


@dataclass(frozen=True)
class PoolRef:
    """A v1alpha2/v1 InferencePool, whose status keeps conditions per parent Gateway."""

    api_version: str
    namespace: str
    name: str


class LogConditionWriter:
    """Local mode: conditions go to the structured log, once per change."""

    def __init__(self) -> None:
        self._last: dict[_CacheKey, _CacheValue] = {}

    async def set_condition(self, update: ConditionUpdate) -> None:
        if self._last.get(update.key) == update.value:
            return
        self._last[update.key] = update.value
        level = log.info if update.status == "True" else log.warning
        level(
            "condition",
            object=update.object,
            api_version=update.api_version,
            type=update.type,
            status=update.status,
            reason=update.reason,
            message=update.message,
            observed_generation=update.observed_generation,
            parent=update.parent.as_dict() if update.parent else None,
        )

    async def remove_parent(self, pool: PoolRef, parent: ParentRef) -> None:
        if not any(
            k[1:4] == ("InferencePool", pool.namespace, pool.name) and k[5] == parent for k in self._last
        ):
            return
        self._last = {k: v for k, v in self._last.items() if not _is_parent_key(k, pool, parent)}
        log.info(
            "parent removed", object=f"InferencePool {pool.namespace}/{pool.name}", parent=parent.as_dict()
        )


def _is_parent_key(key: _CacheKey, pool: PoolRef, parent: ParentRef) -> bool:
    return (
        key[0] == pool.api_version
        and key[1:4] == ("InferencePool", pool.namespace, pool.name)
        and (key[5] == parent)
    )


class KubernetesConditionWriter:
    """Merge-patches the status subresource (read-modify-write guarded by resourceVersion)."""

    def __init__(
        self, api: ApiClient, controller_name: str | None = None, request_timeout: float = 10.0
    ) -> None:
        self.api = api
        self.controller_name = controller_name
        self.request_timeout = request_timeout
        self._last: dict[_CacheKey, _CacheValue] = {}
        self._lock = asyncio.Lock()

    async def set_condition(self, update: ConditionUpdate) -> None:
        if self._last.get(update.key) == update.value:
            return
        condition = {
            "type": update.type,
            "status": update.status,
            "reason": update.reason,
            "message": update.message,
            "observedGeneration": update.observed_generation,
        }
        async with self._lock:
            try:
                await asyncio.to_thread(
                    self._write,
                    update.kind,
                    update.api_version,
                    update.namespace,
                    update.name,
                    condition,
                    update.parent,
                )
            except KubeApiError as exc:
                log.warning("status write failed", object=update.object, error=str(exc))
                return
            self._last[update.key] = update.value

    async def remove_parent(self, pool: PoolRef, parent: ParentRef) -> None:
        if not any(_is_parent_key(k, pool, parent) for k in self._last):
            return  # never written by this process: not ours to remove
        async with self._lock:
            try:
                await asyncio.to_thread(self._remove_parent, pool, parent)
            except KubeApiError as exc:
                log.warning("status parent not removed", pool=f"{pool.namespace}/{pool.name}", error=str(exc))
                return
            self._last = {k: v for k, v in self._last.items() if not _is_parent_key(k, pool, parent)}
            log.info("parent removed", pool=f"{pool.namespace}/{pool.name}", parent=parent.as_dict())

    def _remove_parent(self, pool: PoolRef, parent: ParentRef) -> None:
        list_key = "parent" if pool.api_version == V1ALPHA2 else "parents"

        def without_parent(status: Mapping[str, Any]) -> dict[str, Any] | None:
            parents = [p for p in status.get(list_key) or [] if isinstance(p, Mapping)]
            kept = [p for p in parents if not parent.matches(p.get("parentRef"))]
            return None if len(kept) == len(parents) else {list_key: kept}

        path = resource_path(pool.api_version, "inferencepools", pool.namespace, pool.name)
        self._update_status(path, f"InferencePool {pool.namespace}/{pool.name}", without_parent)

    def _write(
        self,
        kind: str,
        api_version: str,
        namespace: str,
        name: str,
        condition: Mapping[str, Any],
        parent: ParentRef | None,
    ) -> None:
        plural = _PLURALS.get(kind)
        if plural is None:
            raise ValueError(f"no status for kind {kind}")

        def with_it(status: Mapping[str, Any]) -> dict[str, Any] | None:
            return with_condition(status, kind, api_version, condition, parent, self.controller_name, _now())

        path = resource_path(api_version, plural, namespace, name)
        self._update_status(path, f"{kind} {namespace}/{name}", with_it)

    def _update_status(
        self, path: str, what: str, change: Callable[[Mapping[str, Any]], dict[str, Any] | None]
    ) -> None:
        """Read-modify-write of the status subresource, guarded by resourceVersion; `change` gives the new
        status (merge-patched) or None for "nothing to do". A deleted object is left alone."""
        for _attempt in range(3):
            try:
                current = request_json(self.api, "GET", path, timeout=self.request_timeout)
            except KubeApiError as exc:
                if exc.status == 404:
                    return  # deleted meanwhile: nothing to report on
                raise
            status = current.get("status") if isinstance(current.get("status"), Mapping) else {}
            updated = change(status or {})
            if updated is None:
                return
            body = {
                "metadata": {"resourceVersion": (current.get("metadata") or {}).get("resourceVersion")},
                "status": updated,
            }
            try:
                request_json(
                    self.api,
                    "PATCH",
                    path + "/status",
                    body=body,
                    content_type=MERGE_PATCH,
                    timeout=self.request_timeout,
                )
                return
            except KubeApiError as exc:
                if exc.status != 409:
                    raise
        raise KubeApiError(409, f"{what}: status kept changing under us")


def with_condition(
    status: Mapping[str, Any],
    kind: str,
    api_version: str,
    condition: Mapping[str, Any],
    parent: ParentRef | None,
    controller_name: str | None,
    now: str,
) -> dict[str, Any] | None:
    """`status` with `condition` set where this kind/version keeps it; None if nothing would change.

    Pools of v1alpha2 keep conditions per parent in `status.parent`, v1 pools in `status.parents`
    (docs/envoy-gateway.md, "Where status conditions go"); v1alpha1 pools and models in `status.conditions`.
    """
    out = copy.deepcopy(dict(status))
    if kind == "InferencePool" and api_version in (V1ALPHA2, V1):
        if parent is None:
            raise ValueError(f"{kind} {api_version} conditions belong to a parent Gateway; none given")
        list_key = "parent" if api_version == V1ALPHA2 else "parents"
        parents = [p for p in out.get(list_key) or [] if isinstance(p, dict)]
        parents = [p for p in parents if p.get("parentRef") != _PLACEHOLDER_PARENT]
        entry = next((p for p in parents if parent.matches(p.get("parentRef"))), None)
        if entry is None:
            entry = {"parentRef": parent.as_dict(), "conditions": []}
            parents.append(entry)
        if api_version == V1 and controller_name:
            entry["controllerName"] = controller_name
        entry["conditions"] = _set_condition(entry.get("conditions") or [], condition, now)
        out[list_key] = parents[-PARENTS_MAX:]
    else:
        out["conditions"] = _set_condition(out.get("conditions") or [], condition, now)
    return None if out == dict(status) else out


def _set_condition(conditions: list[Any], condition: Mapping[str, Any], now: str) -> list[dict[str, Any]]:
    """Replace the condition of the same type; lastTransitionTime moves only when status changes."""
    kept = [dict(c) for c in conditions if isinstance(c, Mapping)]
    old = next((c for c in kept if c.get("type") == condition["type"]), None)
    new = dict(condition)
    if old is not None and old.get("status") == new["status"] and old.get("lastTransitionTime"):
        new["lastTransitionTime"] = old["lastTransitionTime"]
    else:
        new["lastTransitionTime"] = now
    if old is not None and {k: old.get(k) for k in new} == new:
        return kept
    others = [c for c in kept if c.get("type") != condition["type"]]
    # Drop the "Pending" default that a controller replaces (its type differs: GIE's Ready quirk).
    others = [c for c in others if not (c.get("reason") == "Pending" and c.get("status") == "Unknown")]
    return ([*others, new])[-CONDITIONS_MAX:]


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
