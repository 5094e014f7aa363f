"""Make Envoy Gateway re-translate a Gateway when the pools and models it serves change.

EG re-runs translation, and with it our hooks, only when its own IR changes. Objects it does not route
to (every InferenceModel, and InferencePools attached with the attach-to annotation) never reach that
IR, so EG would not call us after a weight change. The extension server therefore keeps one
InferenceGatewayRevision per Gateway that serves a pool: a policy, registered in EG's
`policyResources`, that targets the Gateway and whose `spec.revision` digests the generations of the
pools and models behind it. EG puts a policy that targets a Gateway into that Gateway's IR, so a new
digest re-translates exactly that Gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from kubernetes.client import ApiClient

from api import contract
from api.canary import canary_annotations
from api.model import ObjectMeta
from api.sources.kubeapi import KubeApiError, request_json, resource_path
from api.sources.store import ObjectStore, Snapshot
from extserver.hooks.status import ConditionReporter, StatusReport

log = structlog.get_logger(__name__)

GROUP = "extension.inference-gateway.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "InferenceGatewayRevision"
PLURAL = "inferencegatewayrevisions"
FIELD_MANAGER = "inference-extserver"
APPLY_PATCH = "application/apply-patch+yaml"

GatewayKey = tuple[str, str]


def _gateway(text: str, default_namespace: str) -> GatewayKey:
    namespace, _, name = text.rpartition("/")
    return (namespace or default_namespace, name)


def _annotations_text(meta: ObjectMeta) -> str:
    """The annotations that are compiled (canary, mirror): editing them bumps no generation."""
    mirror = tuple((k, v) for k, v in meta.annotations if k == contract.ANNOTATION_MIRROR)
    annotations = (*canary_annotations(meta), *mirror)
    return f" {annotations!r}" if annotations else ""


def gateway_digests(
    snapshot: Snapshot, learned: Mapping[tuple[str, str], tuple[str, ...]]
) -> dict[GatewayKey, str]:
    """Gateway -> digest of the (kind, key, generation) of every pool it serves and their models.

    A pool serves the Gateway its attach-to annotation names, and every Gateway the last translation
    found routing to it (`learned`, from the Translation hook's report).
    """
    served: dict[GatewayKey, set[str]] = {}
    services = snapshot.service_annotations()
    for pool in snapshot.pools.values():
        gateways = {
            _gateway(g, pool.meta.namespace) for g in learned.get((pool.meta.namespace, pool.meta.name), ())
        }
        if pool.attach_to is not None:
            gateways.add((pool.attach_to.gateway_namespace, pool.attach_to.gateway_name))
        items = {f"pool {pool.api_version} {pool.key} {pool.meta.generation}{_annotations_text(pool.meta)}"}
        # Compiled into the pool's clusters and filters too: the endpoints, and whether the picker Service
        # exists and which protocol it names (its other annotations change nothing compiled).
        items.add(f"endpoints {pool.key} {','.join(snapshot.pool_endpoints(pool))}")
        if pool.picker is not None:
            service = services.get(f"{pool.meta.namespace}/{pool.picker.name}")
            protocol = "missing" if service is None else service.get(contract.ANNOTATION_PICKER_PROTOCOL, "")
            items.add(f"picker {pool.key} {protocol}")
        items |= {
            f"model {m.api_version} {m.key} {m.meta.generation}{_annotations_text(m.meta)}"
            for m in snapshot.models_for_pool(pool.key)
        }
        items |= {
            f"{type(c).__name__} {c.api_version} {c.key} {c.meta.generation}"
            for c in snapshot.canary_for_pool(pool.key)
        }
        for gateway in gateways:
            served.setdefault(gateway, set()).update(items)
    for gateway, route in _pool_routes(snapshot):
        served.setdefault(gateway, set()).add(route)
    return {
        gateway: hashlib.sha256("\n".join(sorted(items)).encode()).hexdigest()[:16]
        for gateway, items in served.items()
    }


def _pool_routes(snapshot: Snapshot) -> list[tuple[GatewayKey, str]]:
    """(Gateway, "httproute ns/name generation") of each HTTPRoute naming a pool, as a backend or a
    mirror. Their weights and mirrors are compiled, and EG, whose own output may not change with them
    (it refuses pool mirrors either way), would otherwise not call the hooks again."""
    found = []
    for route in snapshot.others_of_kind("HTTPRoute", "gateway.networking.k8s.io/v1"):
        meta = route.get("metadata") or {}
        namespace = str(meta.get("namespace") or "default")
        refs = [
            ref
            for rule in (route.get("spec") or {}).get("rules") or []
            for ref in [
                *(rule.get("backendRefs") or []),
                *(
                    (f.get("requestMirror") or {}).get("backendRef") or {}
                    for f in rule.get("filters") or []
                    if f.get("type") == "RequestMirror"
                ),
            ]
        ]
        if not any(ref.get("kind") == "InferencePool" for ref in refs):
            continue
        item = f"httproute {namespace}/{meta.get('name')} {meta.get('generation', 0)}"
        for parent in (route.get("spec") or {}).get("parentRefs") or []:
            if parent.get("kind", "Gateway") == "Gateway":
                found.append(
                    (_gateway(f"{parent.get('namespace', '')}/{parent.get('name')}", namespace), item)
                )
    return found


def gateways_of_call(resources: Sequence[Mapping[str, Any]]) -> frozenset[str]:
    """The Gateways ("ns/name") whose revisions EG put in this translation's context: the call is theirs."""
    return frozenset(
        f"{(obj.get('metadata') or {}).get('namespace', '')}/{ref.get('name')}"
        for obj in resources
        if obj.get("apiVersion") == API_VERSION and obj.get("kind") == KIND
        for ref in (obj.get("spec") or {}).get("targetRefs") or []
        if ref.get("kind") == "Gateway"
    )


def revision_object(gateway: GatewayKey, digest: str) -> dict[str, Any]:
    namespace, name = gateway
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": name}],
            "revision": digest,
        },
    }


class RevisionReporter:
    """The status reporter with revisions beside it: learns pools' Gateways, writes a revision on change."""

    def __init__(self, api: ApiClient, store: ObjectStore, conditions: ConditionReporter) -> None:
        self.api = api
        self.store = store
        self.conditions = conditions
        self.learned: dict[tuple[str, str], tuple[str, ...]] = {}
        self.written: dict[GatewayKey, str] = {}
        self._wake = asyncio.Event()
        self._disabled = False

    async def report(self, report: StatusReport) -> None:
        await self.conditions.report(report)
        if dict(report.pool_gateways) != self.learned:
            self.learned = dict(report.pool_gateways)
            self._wake.set()

    async def flush(self) -> None:
        await self.conditions.flush()

    async def close(self) -> None:
        await self.conditions.close()

    async def run(self) -> None:
        version = -1
        while True:
            changed = asyncio.create_task(self.store.wait_for_change(version))
            woken = asyncio.create_task(self._wake.wait())
            await asyncio.wait({changed, woken}, return_when=asyncio.FIRST_COMPLETED)
            for task in (changed, woken):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            self._wake.clear()
            snapshot = self.store.snapshot()
            version = self.store.version
            if not self._disabled:
                await self._write_changed(gateway_digests(snapshot, self.learned))

    async def _write_changed(self, digests: Mapping[GatewayKey, str]) -> None:
        for gateway, digest in sorted(digests.items()):
            if self.written.get(gateway) == digest:
                continue
            namespace, name = gateway
            path = resource_path(API_VERSION, PLURAL, namespace, name)
            query = [("fieldManager", FIELD_MANAGER), ("force", "true")]
            try:
                await asyncio.to_thread(
                    request_json,
                    self.api,
                    "PATCH",
                    path,
                    query,
                    revision_object(gateway, digest),
                    APPLY_PATCH,
                    10,
                )
            except KubeApiError as err:
                if err.status == 404 and "the server could not find" in str(err).lower():
                    self._disabled = True  # no CRD: EG re-translates on its own changes only
                log.warning("revision_write_failed", gateway=f"{namespace}/{name}", error=str(err))
                continue
            self.written[gateway] = digest
            log.info("revision_written", gateway=f"{namespace}/{name}", revision=digest)
