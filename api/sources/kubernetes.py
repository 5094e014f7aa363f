"""Cluster mode: list + watch the inference CRDs, Pods and other kinds into an ObjectStore.

Each kind runs its own informer loop: list, then watch from the list's resourceVersion (with
bookmarks), relist on 410 Gone and every resync period, reconnect with exponential backoff and
jitter when a watch breaks. Blocking HTTP runs on a private thread pool, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog
from kubernetes.client import ApiClient

from api.model import V1, V1ALPHA1, V1ALPHA2
from api.rewrite import CANARY_API_VERSIONS, KIND_OBJECTIVE, KIND_REWRITE
from api.rollout import KIND_ROLLOUT, ROLLOUT_API_VERSION
from api.sources.kubeapi import KubeApiError, iter_json_lines, open_request, request_json, resource_path
from api.sources.store import ObjectStore, Snapshot, key_of, resource_version_of

log = structlog.get_logger(__name__)

_T = TypeVar("_T")


@dataclass(frozen=True)
class KindSpec:
    """One watched resource: `api_version` as in manifests ("v1", "group/version")."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool = True
    fresh_at_hook: bool = False  # fresh_snapshot() relists it, so hook output is never stale
    label_selector: str | None = None

    @property
    def display(self) -> str:
        return f"{self.kind}.{self.api_version}"

    def path(self, namespace: str | None) -> str:
        return resource_path(self.api_version, self.plural, namespace if self.namespaced else None)


POOL_KINDS = tuple(
    KindSpec(v, "InferencePool", "inferencepools", fresh_at_hook=True) for v in (V1ALPHA1, V1ALPHA2, V1)
)
MODEL_KINDS = tuple(
    KindSpec(v, "InferenceModel", "inferencemodels", fresh_at_hook=True) for v in (V1ALPHA1, V1ALPHA2)
)
# Both groups of the canary kinds; a group whose CRD is not installed answers 404 and is skipped.
CANARY_KINDS = tuple(
    KindSpec(v, kind, plural, fresh_at_hook=True)
    for v in CANARY_API_VERSIONS
    for kind, plural in ((KIND_REWRITE, "inferencemodelrewrites"), (KIND_OBJECTIVE, "inferenceobjectives"))
)
# Not among the defaults: only the rollout controller watches it (extserver and picker ignore rollouts).
ROLLOUT_KIND = KindSpec(ROLLOUT_API_VERSION, KIND_ROLLOUT, "inferencerollouts")
POD_KIND = KindSpec("v1", "Pod", "pods")
SERVICE_KIND = KindSpec("v1", "Service", "services")
GATEWAY_KIND = KindSpec("gateway.networking.k8s.io/v1", "Gateway", "gateways")
# Relisted at hook time too: EG translates right after an HTTPRoute edit, and its weights and mirrors
# are compiled; a watch event arriving after the hook call would leave the edit out until the next one.
HTTPROUTE_KIND = KindSpec("gateway.networking.k8s.io/v1", "HTTPRoute", "httproutes", fresh_at_hook=True)
INFERENCE_KINDS = POOL_KINDS + MODEL_KINDS + CANARY_KINDS


@dataclass
class _KindState:
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    missing: bool = False  # the API server does not serve this kind (CRD not installed): 404
    last_list: float = 0.0
    resource_version: str | None = None  # where the watch resumes; None: relist first
    response: Any = None  # the open watch response, so stop() can break a blocked read


class _Gone(Exception):
    """The watch's resourceVersion is too old (410): relist."""


class KubernetesSource:
    """Feeds `store` from the API server `api` points at; `namespace=None` watches all namespaces."""

    def __init__(
        self,
        api: ApiClient,
        store: ObjectStore | None = None,
        kinds: Sequence[KindSpec] = (*INFERENCE_KINDS, POD_KIND),
        namespace: str | None = None,
        *,
        resync_period: float = 300.0,
        watch_timeout: float = 240.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        missing_retry: float = 60.0,
        request_timeout: float = 30.0,
        page_size: int = 500,
        rng: random.Random | None = None,
    ) -> None:
        self.api = api
        self.store = store if store is not None else ObjectStore()
        self.kinds = tuple(kinds)
        # What hooks may rely on being complete: a kind not watched is unknown, not absent.
        self.kinds_read = frozenset(spec.kind for spec in self.kinds)
        self.namespace = namespace
        self.resync_period = resync_period
        self.watch_timeout = watch_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.missing_retry = missing_retry
        self.request_timeout = request_timeout
        self.page_size = page_size
        self._rng = rng or random.Random()
        self._state = {spec: _KindState() for spec in self.kinds}
        self._stop = asyncio.Event()
        self._stopping = threading.Event()  # seen by the watch threads
        self._executor = ThreadPoolExecutor(
            max_workers=2 * len(self.kinds) + 2, thread_name_prefix="k8s-source"
        )
        self._fresh_lock = asyncio.Lock()
        self._fresh_at = -1.0

    # --- Source protocol ------------------------------------------------------------------

    async def run(self) -> None:
        """Run every kind's informer loop until stop() or cancellation."""
        try:
            await asyncio.gather(*(self._run_kind(spec) for spec in self.kinds))
        finally:
            self._close()

    def stop(self) -> None:
        self._stop.set()
        self._close()

    async def wait_synced(self) -> None:
        """Return once every kind has been listed once (or found not served)."""
        await asyncio.gather(*(state.synced.wait() for state in self._state.values()))

    async def fresh_snapshot(self, max_age: float = 0.0) -> Snapshot:
        """A snapshot no older than this call: relists the `fresh_at_hook` kinds and merges by
        resourceVersion. Concurrent callers share one relist; `max_age` > 0 reuses a recent one."""
        called = time.monotonic()
        async with self._fresh_lock:
            if self._fresh_at >= called - max_age:
                return self.store.snapshot()
            started = time.monotonic()
            specs = [s for s in self.kinds if s.fresh_at_hook and not self._state[s].missing]
            results = await asyncio.gather(
                *(self._in_thread(self._fresh_list, spec) for spec in specs), return_exceptions=True
            )
            for spec, result in zip(specs, results, strict=True):
                if isinstance(result, BaseException):
                    log.warning(
                        "fresh list failed; using watched state", kind=spec.display, error=str(result)
                    )
            self._fresh_at = started
        return self.store.snapshot()

    # --- informer loop -------------------------------------------------------------------

    async def _run_kind(self, spec: KindSpec) -> None:
        state = self._state[spec]
        failures = 0
        while not self._stop.is_set():
            try:
                if state.resource_version is None or time.monotonic() - state.last_list >= self.resync_period:
                    await self._in_thread(self._relist, spec)
                    if state.missing:
                        log.info("kind is now served", kind=spec.display)
                        state.missing = False
                    state.synced.set()
                    failures = 0
                timeout = max(
                    1.0, min(self.watch_timeout, self.resync_period - (time.monotonic() - state.last_list))
                )
                if await self._in_thread(self._watch, spec, timeout):
                    failures = 0
            except _Gone:
                log.info("watch resourceVersion expired; relisting", kind=spec.display)
                state.resource_version = None
            except KubeApiError as exc:
                if exc.status == 404:
                    if not state.missing:
                        log.warning(
                            "kind not served by the API server (CRD not installed?); retrying slowly",
                            kind=spec.display,
                        )
                        state.missing = True
                        self.store.replace_all(spec.api_version, spec.kind, (), self._scope(spec))
                    state.synced.set()
                    state.resource_version = None
                    await self._sleep(self.missing_retry)
                    continue
                failures += 1
                log.warning(
                    "list/watch failed; backing off", kind=spec.display, error=str(exc), attempt=failures
                )
                await self._sleep(self._backoff(failures))
            except Exception as exc:  # connection drops, timeouts, bad JSON: reconnect, never die
                if self._stop.is_set():
                    break
                failures += 1
                log.warning(
                    "watch dropped; reconnecting", kind=spec.display, error=repr(exc), attempt=failures
                )
                await self._sleep(self._backoff(failures))

    def _relist(self, spec: KindSpec) -> None:
        items, rv = self._list(spec)
        self.store.replace_all(spec.api_version, spec.kind, items, self._scope(spec))
        state = self._state[spec]
        state.last_list = time.monotonic()
        state.resource_version = rv
        log.debug("listed", kind=spec.display, count=len(items), resource_version=rv)

    def _fresh_list(self, spec: KindSpec) -> None:
        items, rv = self._list(spec)
        self.store.reconcile(spec.api_version, spec.kind, items, rv, self._scope(spec))

    def _list(self, spec: KindSpec) -> tuple[list[Mapping[str, Any]], str]:
        """All objects of a kind (paged), with apiVersion/kind filled in, and the list's resourceVersion."""
        items: list[Mapping[str, Any]] = []
        cont = ""
        while True:
            query = [("limit", str(self.page_size))]
            if cont:
                query.append(("continue", cont))
            if spec.label_selector:
                query.append(("labelSelector", spec.label_selector))
            page = request_json(
                self.api, "GET", spec.path(self.namespace), query, timeout=self.request_timeout
            )
            for item in page.get("items") or ():
                if isinstance(item, dict):
                    items.append(_with_type(item, spec))
            meta = page.get("metadata") or {}
            cont = str(meta.get("continue") or "")
            if not cont:
                return items, str(meta.get("resourceVersion") or "")

    def _watch(self, spec: KindSpec, timeout: float) -> bool:
        """One watch request until the server ends it; returns whether any event arrived. Each event
        moves the resume point, even if the stream then breaks. Raises _Gone on 410."""
        state = self._state[spec]
        query = [
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            ("resourceVersion", state.resource_version or ""),
            ("timeoutSeconds", str(int(timeout))),
        ]
        if spec.label_selector:
            query.append(("labelSelector", spec.label_selector))
        try:
            response = open_request(
                self.api,
                "GET",
                spec.path(self.namespace),
                query,
                timeout=(self.request_timeout, timeout + self.request_timeout),
            )
        except KubeApiError as exc:
            if exc.status == 410:
                raise _Gone() from None
            raise
        state.response = response
        streamed = False
        try:
            if self._stopping.is_set():
                return streamed
            for event in iter_json_lines(response):
                streamed = True
                state.resource_version = self._handle_event(spec, event) or state.resource_version
        finally:
            state.response = None
            response.release_conn()
        return streamed

    def _handle_event(self, spec: KindSpec, event: Mapping[str, Any]) -> str:
        """Apply one watch event to the store; returns its resourceVersion ("" if none)."""
        kind = event.get("type")
        obj = event.get("object")
        if not isinstance(obj, dict):
            raise ValueError(f"watch event without object: {kind}")
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise _Gone()
            raise KubeApiError(int(obj.get("code") or 0), str(obj.get("message") or obj))
        obj = _with_type(obj, spec)
        new_rv = resource_version_of(obj)
        if kind in ("ADDED", "MODIFIED"):
            self.store.upsert(obj)
        elif kind == "DELETED":
            key = key_of(obj)
            self.store.delete(key.api_version, key.kind, key.namespace, key.name)
        elif kind != "BOOKMARK":
            log.warning("unknown watch event type", kind=spec.display, type=kind)
        return new_rv

    # --- plumbing ---------------------------------------------------------------------------

    def _scope(self, spec: KindSpec) -> str | None:
        return self.namespace if spec.namespaced else None

    def _backoff(self, failures: int) -> float:
        ceiling = min(self.backoff_max, self.backoff_initial * 2 ** min(failures - 1, 30))
        return float(ceiling * self._rng.uniform(0.5, 1.0))

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _in_thread(self, fn: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _close(self) -> None:
        self._stopping.set()
        for state in self._state.values():
            response = state.response
            if response is not None:
                with contextlib.suppress(Exception):  # already closed by its own thread
                    response.shutdown()
        self._executor.shutdown(wait=False, cancel_futures=True)


def _with_type(obj: dict[str, Any], spec: KindSpec) -> dict[str, Any]:
    """List items of built-in kinds come without apiVersion/kind; the store keys on them."""
    if obj.get("apiVersion") == spec.api_version and obj.get("kind") == spec.kind:
        return obj
    return {**obj, "apiVersion": spec.api_version, "kind": spec.kind}
