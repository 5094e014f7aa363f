"""What every hook needs: fresh pool/model snapshots, compile options, a status writer, decoding helpers."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from api.egextension.context_pb2 import ExtensionResource
from api.sources.store import Snapshot
from extserver.compile import CompileInputs, CompileOptions, Problem

log = structlog.get_logger("extserver.hooks")


class SnapshotSource(Protocol):
    """A source of pools and models that is current when the call returns (FileSource, KubernetesSource)."""

    async def fresh_snapshot(self) -> Snapshot: ...


class StatusWriter(Protocol):
    """Receives the problems of one compilation, to surface them as status conditions."""

    async def report(self, problems: Sequence[Problem]) -> None: ...


class LogStatusWriter:
    """Local mode: problems are only logged (there is no API server to write status to)."""

    async def report(self, problems: Sequence[Problem]) -> None:
        for problem in problems:
            log.warning(
                "status condition",
                object=f"{problem.kind} {problem.namespace}/{problem.name}",
                condition=problem.condition_type,
                reason=problem.reason,
                message=problem.message,
            )


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
    status: StatusWriter = field(default_factory=LogStatusWriter)

    async def inputs(self) -> CompileInputs:
        """Pools and models as they are now: EG may call right after an object changed."""
        snapshot = await self.source.fresh_snapshot()
        return CompileInputs(pools=tuple(snapshot.pools.values()), models=tuple(snapshot.models.values()))


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
