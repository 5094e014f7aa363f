"""In-memory store of the objects a source watches, and the immutable snapshots consumers read."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple, TypeVar

import structlog

from api import parse
from api.errors import ValidationError
from api.model import MODEL_API_VERSIONS, POOL_API_VERSIONS, InferenceModel, InferencePool, Pod
from api.rewrite import InferenceModelRewrite, InferenceObjective
from api.rollout import InferenceRollout
from api.sources.pods import parse_pod

log = structlog.get_logger(__name__)

POD_API_VERSION = "v1"


class ObjectKey(NamedTuple):
    """Identity of one stored object; the API version is part of it (each version is watched apart)."""

    api_version: str
    kind: str
    namespace: str
    name: str

    @property
    def display(self) -> str:
        """`Kind ns/name`, the form used in `Snapshot.invalid` and in logs."""
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"


def key_of(obj: Mapping[str, Any]) -> ObjectKey:
    """The key of a raw Kubernetes object (namespace "" for cluster-scoped or unset)."""
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    return ObjectKey(
        str(obj.get("apiVersion") or ""),
        str(obj.get("kind") or ""),
        str(meta.get("namespace") or ""),
        str(meta.get("name") or ""),
    )


def resource_version_of(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata")
    return str(meta.get("resourceVersion") or "") if isinstance(meta, Mapping) else ""


@dataclass(frozen=True)
class _Entry:
    """One stored object: its raw form plus what it parsed to (or why it did not)."""

    raw: Mapping[str, Any]
    parsed: parse.Parsed | Pod | None
    errors: tuple[str, ...] = ()


# Preference among served versions of one object (same namespace/name): newest API first.
_VERSION_RANK = {v: i for i, v in enumerate(reversed(POOL_API_VERSIONS))}


@dataclass(frozen=True)
class Snapshot:
    """An immutable view of the store at one version; every consumer works from one of these."""

    version: int = 0
    pools: Mapping[str, InferencePool] = field(default_factory=lambda: MappingProxyType({}))
    models: Mapping[str, InferenceModel] = field(default_factory=lambda: MappingProxyType({}))
    # Both forms (llm-d.ai, x-k8s) of the canary kinds, keyed "<apiVersion> <ns>/<name>": the compiler
    # decides which form wins and reports the other (extserver/compile/plan_canary.py).
    rewrites: Mapping[str, InferenceModelRewrite] = field(default_factory=lambda: MappingProxyType({}))
    objectives: Mapping[str, InferenceObjective] = field(default_factory=lambda: MappingProxyType({}))
    # Keyed "<ns>/<name>": the rollout controller's input (one served version, so no choosing).
    rollouts: Mapping[str, InferenceRollout] = field(default_factory=lambda: MappingProxyType({}))
    pods: Mapping[str, Pod] = field(default_factory=lambda: MappingProxyType({}))
    others: tuple[Mapping[str, Any], ...] = ()
    invalid: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))

    def pools_for_picker(self, service_name: str, namespace: str) -> tuple[InferencePool, ...]:
        """Pools whose endpoint picker is the Service `service_name` in `namespace`, sorted by key."""
        return tuple(
            pool
            for key, pool in sorted(self.pools.items())
            if pool.meta.namespace == namespace
            and pool.picker is not None
            and pool.picker.name == service_name
            and pool.picker.kind == "Service"
            and pool.picker.group == ""
        )

    def models_for_pool(self, pool_key: str) -> tuple[InferenceModel, ...]:
        """Models referring to pool `ns/name`, oldest first (creationTimestamp, then name): oldest wins."""
        namespace, _, name = pool_key.partition("/")
        found = [
            m
            for m in self.models.values()
            if m.meta.namespace == namespace
            and m.pool_ref.name == name
            and m.pool_ref.kind == "InferencePool"
        ]
        return tuple(sorted(found, key=lambda m: (m.meta.creation_timestamp, m.meta.name)))

    def canary_for_pool(self, pool_key: str) -> tuple[InferenceModelRewrite | InferenceObjective, ...]:
        """Rewrites and objectives (both forms) naming pool `ns/name`, sorted by apiVersion and key."""
        namespace, _, name = pool_key.partition("/")
        every: list[InferenceModelRewrite | InferenceObjective] = [
            *self.rewrites.values(),
            *self.objectives.values(),
        ]
        found = [c for c in every if c.meta.namespace == namespace and c.pool_ref.name == name]
        return tuple(sorted(found, key=lambda c: (type(c).__name__, c.api_version, c.key)))

    def pods_for_pool(self, pool: InferencePool) -> tuple[Pod, ...]:
        """Ready, non-terminating pods with an IP in the pool's namespace matching its selector."""
        found = [
            pod
            for pod in self.pods.values()
            if pod.meta.namespace == pool.meta.namespace
            and pod.ready
            and not pod.terminating
            and pod.ip
            and pool.selects(pod.label_map)
        ]
        return tuple(sorted(found, key=lambda p: p.meta.name))

    def pool_endpoints(self, pool: InferencePool) -> tuple[str, ...]:
        """The pool's endpoints "ip:port": each ready pod's IP with each target port (GIE's rule).

        Computed once per snapshot: the hooks' inputs and the revision digests both ask for every pool."""
        found = self._endpoints.get(pool.key)
        if found is None or self.pools.get(pool.key) is not pool:
            return _endpoints_of(pool, self.pods_for_pool(pool))
        return found

    @functools.cached_property
    def _endpoints(self) -> dict[str, tuple[str, ...]]:
        return {key: _endpoints_of(pool, self.pods_for_pool(pool)) for key, pool in self.pools.items()}

    def service_annotations(self) -> dict[str, Mapping[str, str]]:
        """Every stored Service "ns/name" -> its annotations."""
        out: dict[str, Mapping[str, str]] = {}
        for service in self.others_of_kind("Service", "v1"):
            meta = service.get("metadata") or {}
            out[f"{meta.get('namespace') or 'default'}/{meta.get('name')}"] = meta.get("annotations") or {}
        return out

    def others_of_kind(self, kind: str, api_version: str | None = None) -> tuple[Mapping[str, Any], ...]:
        """Kept raw objects of one kind (optionally one apiVersion), in key order."""
        return tuple(
            o
            for o in self.others
            if o.get("kind") == kind and (api_version is None or o.get("apiVersion") == api_version)
        )


def _endpoints_of(pool: InferencePool, pods: Iterable[Pod]) -> tuple[str, ...]:
    return tuple(f"{pod.ip}:{port}" for pod in pods for port in pool.target_ports)


Subscriber = Callable[[Snapshot], None]


class ObjectStore:
    """Thread-safe store: sources write from any thread, consumers read snapshots or await changes.

    The version grows by one on every effective change (a write that changes nothing is ignored),
    so consumers can cache anything derived from a snapshot by its version.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[ObjectKey, _Entry] = {}
        self._version = 0
        self._snapshot: Snapshot | None = Snapshot()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._subscribers: list[Subscriber] = []

    @property
    def version(self) -> int:
        return self._version

    # --- writes -----------------------------------------------------------------------------

    def upsert(self, obj: Mapping[str, Any]) -> bool:
        """Add or replace one raw object; returns whether anything changed."""
        return self.apply(upserts=(obj,))

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        """Remove one object; returns whether it was there."""
        return self.apply(deletes=(ObjectKey(api_version, kind, namespace, name),))

    def replace_all(
        self,
        api_version: str,
        kind: str,
        objects: Iterable[Mapping[str, Any]],
        namespace: str | None = None,
    ) -> bool:
        """Make the stored objects of one apiVersion+kind (in one namespace, if given) exactly `objects`."""
        prepared = {key_of(o): _entry_for(o) for o in objects}

        def mutate(entries: dict[ObjectKey, _Entry]) -> bool:
            gone = [k for k in entries if _in_scope(k, api_version, kind, namespace) and k not in prepared]
            for k in gone:
                del entries[k]
            return _put(entries, prepared.items()) or bool(gone)

        return self._commit(mutate)

    def reconcile(
        self,
        api_version: str,
        kind: str,
        objects: Iterable[Mapping[str, Any]],
        list_resource_version: str,
        namespace: str | None = None,
    ) -> bool:
        """Apply a list result without undoing newer watch events that raced with it.

        An object is kept when its stored resourceVersion is newer than the listed one (or, for an
        object missing from the list, newer than the list itself). Kubernetes calls resourceVersions
        opaque; every API server hands out etcd revisions, so they are compared as integers when both
        parse, and the list wins otherwise.
        """
        prepared = {key_of(o): (resource_version_of(o), _entry_for(o)) for o in objects}

        def mutate(entries: dict[ObjectKey, _Entry]) -> bool:
            changed = False
            for k in [k for k in entries if _in_scope(k, api_version, kind, namespace) and k not in prepared]:
                if not _newer(resource_version_of(entries[k].raw), list_resource_version):
                    del entries[k]
                    changed = True
            for k, (rv, entry) in prepared.items():
                old = entries.get(k)
                if old is not None and _newer(resource_version_of(old.raw), rv):
                    continue
                if old != entry:
                    entries[k] = entry
                    changed = True
            return changed

        return self._commit(mutate)

    def apply(self, upserts: Iterable[Mapping[str, Any]] = (), deletes: Iterable[ObjectKey] = ()) -> bool:
        """Apply a batch of writes atomically: at most one version bump and one notification."""
        prepared = [(key_of(o), _entry_for(o)) for o in upserts]
        deletes = list(deletes)

        def mutate(entries: dict[ObjectKey, _Entry]) -> bool:
            changed = False
            for key in deletes:
                if entries.pop(key, None) is not None:
                    changed = True
            return _put(entries, prepared) or changed

        return self._commit(mutate)

    def _commit(self, mutate: Callable[[dict[ObjectKey, _Entry]], bool]) -> bool:
        """Run `mutate` under the lock; on an effective change bump the version and notify."""
        with self._lock:
            if not mutate(self._entries):
                return False
            self._version += 1
            self._snapshot = None
            waiters, self._waiters = self._waiters, []
            subscribers = list(self._subscribers)
        for loop, future in waiters:
            with contextlib.suppress(RuntimeError):  # the waiter's loop is closed: nobody to wake
                loop.call_soon_threadsafe(_wake, future)
        if subscribers:
            snap = self.snapshot()
            for callback in subscribers:
                try:
                    callback(snap)
                except Exception:
                    log.exception("store subscriber failed")
        return True

    # --- reads ------------------------------------------------------------------------------

    def raw_objects(self, api_version: str, kind: str) -> dict[ObjectKey, Mapping[str, Any]]:
        """Stored raw objects (valid or not) of one apiVersion+kind, for sources comparing lists."""
        with self._lock:
            return {
                k: e.raw for k, e in self._entries.items() if k.api_version == api_version and k.kind == kind
            }

    def snapshot(self) -> Snapshot:
        """The current state; cached until the next change, so calling this per request is cheap."""
        with self._lock:
            if self._snapshot is None:
                self._snapshot = _build_snapshot(self._version, self._entries)
            return self._snapshot

    async def wait_for_change(self, after_version: int, timeout: float | None = None) -> Snapshot:
        """Return a snapshot newer than `after_version`, or the current one when `timeout` runs out."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._version > after_version:
                future = None
            else:
                future = loop.create_future()
                self._waiters.append((loop, future))
        if future is not None:
            try:
                await asyncio.wait_for(future, timeout)
            except TimeoutError:
                with self._lock, contextlib.suppress(ValueError):
                    self._waiters.remove((loop, future))
        return self.snapshot()

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call `callback(snapshot)` after every change, on the writing thread; returns an unsubscribe."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock, contextlib.suppress(ValueError):
                self._subscribers.remove(callback)

        return unsubscribe


def _in_scope(key: ObjectKey, api_version: str, kind: str, namespace: str | None) -> bool:
    return (
        key.api_version == api_version
        and key.kind == kind
        and (namespace is None or key.namespace == namespace)
    )


def _put(entries: dict[ObjectKey, _Entry], items: Iterable[tuple[ObjectKey, _Entry]]) -> bool:
    changed = False
    for key, entry in items:
        if entries.get(key) != entry:
            entries[key] = entry
            changed = True
    return changed


def _newer(stored: str, other: str) -> bool:
    """Whether resourceVersion `stored` is known to be newer than `other`."""
    try:
        return int(stored) > int(other)
    except ValueError:
        return False


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _entry_for(obj: Mapping[str, Any]) -> _Entry:
    """Parse our kinds and Pods; anything else is kept raw. Parse failures become errors, not raises."""
    raw = MappingProxyType(dict(obj))
    try:
        if parse.owns(obj):
            return _Entry(raw, parse.parse_object(obj))
        if obj.get("kind") == "Pod" and obj.get("apiVersion") == POD_API_VERSION:
            return _Entry(raw, parse_pod(obj))
    except ValidationError as exc:
        return _Entry(raw, None, tuple(exc.errors))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        return _Entry(raw, None, (f"{key_of(obj).display}: {exc}",))
    return _Entry(raw, None)


def _build_snapshot(version: int, entries: Mapping[ObjectKey, _Entry]) -> Snapshot:
    pools: dict[str, list[tuple[ObjectKey, InferencePool]]] = {}
    models: dict[str, list[tuple[ObjectKey, InferenceModel]]] = {}
    rewrites: dict[str, InferenceModelRewrite] = {}
    objectives: dict[str, InferenceObjective] = {}
    rollouts: dict[str, InferenceRollout] = {}
    pods: dict[str, Pod] = {}
    others: list[Mapping[str, Any]] = []
    invalid: dict[str, tuple[str, ...]] = {}
    for key in sorted(entries):
        entry = entries[key]
        parsed = entry.parsed
        if entry.errors:
            invalid[key.display] = invalid.get(key.display, ()) + entry.errors
        elif isinstance(parsed, InferencePool):
            pools.setdefault(parsed.key, []).append((key, parsed))
        elif isinstance(parsed, InferenceModel):
            models.setdefault(parsed.key, []).append((key, parsed))
        elif isinstance(parsed, InferenceModelRewrite):
            rewrites[f"{parsed.api_version} {parsed.key}"] = parsed
        elif isinstance(parsed, InferenceObjective):
            objectives[f"{parsed.api_version} {parsed.key}"] = parsed
        elif isinstance(parsed, InferenceRollout):
            rollouts[parsed.key] = parsed
        elif isinstance(parsed, Pod):
            pods[parsed.key] = parsed
        else:
            others.append(entry.raw)
    return Snapshot(
        version=version,
        pools=MappingProxyType(_pick_one_per_name("InferencePool", pools, invalid)),
        models=MappingProxyType(_pick_one_per_name("InferenceModel", models, invalid)),
        rewrites=MappingProxyType(rewrites),
        objectives=MappingProxyType(objectives),
        rollouts=MappingProxyType(rollouts),
        pods=MappingProxyType(pods),
        others=tuple(others),
        invalid=MappingProxyType(invalid),
    )


_Parsed = TypeVar("_Parsed", InferencePool, InferenceModel)


def _pick_one_per_name(
    kind: str, candidates: Mapping[str, list[tuple[ObjectKey, _Parsed]]], invalid: dict[str, tuple[str, ...]]
) -> dict[str, _Parsed]:
    """One object per `ns/name`: the same object seen in several versions collapses to the newest
    version; distinct objects (e.g. an x-k8s and a GA pool of one name) resolve oldest-wins."""
    chosen: dict[str, _Parsed] = {}
    for name_key, items in candidates.items():
        ranked = sorted(
            items,
            key=lambda kv: (kv[1].meta.creation_timestamp, _VERSION_RANK.get(kv[0].api_version, 99), kv[0]),
        )
        winner = ranked[0][1]
        chosen[name_key] = winner
        for okey, loser in ranked[1:]:
            if loser.meta.uid and loser.meta.uid == winner.meta.uid:
                continue
            invalid[f"{kind} {name_key} ({okey.api_version})"] = (
                f"{kind} {name_key} ({okey.api_version}): conflicts with the older {winner.api_version} "
                f"object of the same name, which is used instead",
            )
    return chosen


__all__ = [
    "MODEL_API_VERSIONS",
    "POOL_API_VERSIONS",
    "ObjectKey",
    "ObjectStore",
    "Snapshot",
    "key_of",
    "resource_version_of",
]
