"""What every hook needs: fresh pool/model snapshots, compile options, a status writer, decoding helpers."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from kubernetes.client import ApiClient

from api.egextension.context_pb2 import ExtensionResource
from api.httproute import rule_backends
from api.sources import status as sources_status
from api.sources.store import Snapshot
from extserver.compile import CompileCache, CompileInputs, CompileOptions
from extserver.hooks.status import ConditionReporter, StatusReport

log = structlog.get_logger("extserver.hooks")


class SnapshotSource(Protocol):
    """A source of pools and models that is current when the call returns (FileSource, KubernetesSource)."""

    async def fresh_snapshot(self) -> Snapshot: ...


class StatusReporter(Protocol):
    """Receives what one translation found, to surface it as status conditions."""

    async def report(self, report: StatusReport) -> None: ...


class LogConditionReporter(ConditionReporter):
    """Local mode: conditions go to the log, once per change (there is no API server to write to)."""

    def __init__(self) -> None:
        super().__init__(sources_status.LogConditionWriter())


class KubernetesConditionReporter(ConditionReporter):
    """Against the API server: conditions are merge-patched into the objects' status, in the background,
    only when they change."""

    def __init__(self, api: ApiClient, controller_name: str | None = None) -> None:
        super().__init__(sources_status.KubernetesConditionWriter(api, controller_name), background=True)


@dataclass
class StaticSnapshotSource:
    """A fixed snapshot (translate command, tests)."""

    snapshot: Snapshot

    async def fresh_snapshot(self) -> Snapshot:
        return self.snapshot


@dataclass
class HookContext:
    source: SnapshotSource
    options: CompileOptions = field(default_factory=CompileOptions)
    status: StatusReporter = field(default_factory=LogConditionReporter)
    cache: CompileCache = field(default_factory=CompileCache)
    _last: tuple[Snapshot, CompileInputs] | None = field(default=None, init=False, repr=False)

    async def inputs(self) -> CompileInputs:
        """Pools and models as they are now: EG may call right after an object changed."""
        snapshot = await self.source.fresh_snapshot()
        # The same object while nothing changed: the cache then reuses its plan across EG's hook calls.
        if self._last is None or self._last[0] is not snapshot:
            self._last = (snapshot, inputs_of(snapshot, getattr(self.source, "kinds_read", frozenset())))
        return self._last[1]


def inputs_of(snapshot: Snapshot, kinds_read: frozenset[str]) -> CompileInputs:
    """The compile inputs of one snapshot; Pods and Services only where the source reads them."""
    pools = tuple(snapshot.pools.values())
    endpoints = None
    if "Pod" in kinds_read:
        endpoints = {pool.key: snapshot.pool_endpoints(pool) for pool in pools}
    services = snapshot.service_annotations() if "Service" in kinds_read else None
    rules = None
    if "HTTPRoute" in kinds_read:
        rules = rule_backends(snapshot.others_of_kind("HTTPRoute", "gateway.networking.k8s.io/v1"))
    return CompileInputs(
        pools,
        tuple(snapshot.models.values()),
        endpoints,
        services,
        rules,
        tuple(snapshot.rewrites.values()),
        tuple(snapshot.objectives.values()),
    )


def decode_resources(resources: Sequence[ExtensionResource], hook: str) -> list[Mapping[str, Any]]:
    """EG's ExtensionResource JSON objects; undecodable entries are logged and skipped."""
    out: list[Mapping[str, Any]] = []
    for index, resource in enumerate(resources):
        try:
            obj = json.loads(resource.unstructured_bytes)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            log.warning("extension resource skipped", hook=hook, index=index, error=f"not JSON: {exc}")
            continue
        if not isinstance(obj, dict):
            log.warning("extension resource skipped", hook=hook, index=index, error="not a JSON object")
            continue
        out.append(obj)
    return out


def encode_resource(obj: Mapping[str, Any]) -> ExtensionResource:
    return ExtensionResource(unstructured_bytes=json.dumps(obj, separators=(",", ":")).encode())


def describe(resources: Sequence[Mapping[str, Any]]) -> list[str]:
    """Short names of extension resources for logs: "Kind ns/name"."""
    out = []
    for obj in resources:
        meta = obj.get("metadata") or {}
        out.append(f"{obj.get('kind')} {meta.get('namespace', '')}/{meta.get('name', '')}")
    return out
