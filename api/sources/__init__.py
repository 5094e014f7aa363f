"""Sources of truth shared by extserver and picker: an in-memory store fed by Kubernetes or YAML files."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from api.sources.files import DEFAULT_KEEP_KINDS, FileSource
from api.sources.kubeapi import KubeApiError
from api.sources.kubernetes import (
    GATEWAY_KIND,
    HTTPROUTE_KIND,
    INFERENCE_KINDS,
    MODEL_KINDS,
    POD_KIND,
    POOL_KINDS,
    ROLLOUT_KIND,
    SERVICE_KIND,
    KindSpec,
    KubernetesSource,
)
from api.sources.pods import parse_pod
from api.sources.status import (
    ConditionUpdate,
    ConditionWriter,
    KubernetesConditionWriter,
    LogConditionWriter,
    ParentRef,
    with_condition,
)
from api.sources.store import ObjectKey, ObjectStore, Snapshot, key_of


@runtime_checkable
class Source(Protocol):
    """What extserver and picker need from a source: run it, wait for the first load, read fresh."""

    store: ObjectStore

    async def run(self) -> None:
        """Follow changes until stopped or cancelled."""
        ...

    async def wait_synced(self) -> None:
        """Return once everything has been loaded at least once."""
        ...

    async def fresh_snapshot(self) -> Snapshot:
        """A snapshot reflecting the source as of this call (call it at hook time)."""
        ...

    def stop(self) -> None:
        """Ask run() to return."""
        ...


__all__ = [
    "DEFAULT_KEEP_KINDS",
    "GATEWAY_KIND",
    "HTTPROUTE_KIND",
    "INFERENCE_KINDS",
    "MODEL_KINDS",
    "POD_KIND",
    "POOL_KINDS",
    "ROLLOUT_KIND",
    "SERVICE_KIND",
    "ConditionUpdate",
    "ConditionWriter",
    "FileSource",
    "KindSpec",
    "KubeApiError",
    "KubernetesConditionWriter",
    "KubernetesSource",
    "LogConditionWriter",
    "ObjectKey",
    "ObjectStore",
    "ParentRef",
    "Snapshot",
    "Source",
    "key_of",
    "parse_pod",
    "with_condition",
]
