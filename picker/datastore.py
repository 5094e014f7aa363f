"""What this picker replica knows about its pools: endpoints, what each serves, load, requests in flight.

All state here is per replica (in-flight counts, scrape results): several replicas each see their own.
Mutated only from the event loop thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import structlog

from api.model import InferenceModel, InferencePool
from api.sources.store import Snapshot
from picker.scheduling.types import (
    METRICS_STALENESS_SECONDS,
    Endpoint,
    EndpointSnapshot,
    PodMetrics,
    ServedModels,
)

log = structlog.get_logger(__name__)
# A pool's EndpointSnapshot is reused across decisions (it owns the columns the scheduler derives from
# it) until pods, served models or metrics change. Pools this small are rebuilt on every change;
# larger ones at most every SNAPSHOT_REFRESH_SECONDS while only metrics change (scrapes of 1,000 pods
# every 50 ms would otherwise rebuild it per request). Never older than SNAPSHOT_MAX_AGE_SECONDS, so
# metric ages (staleness) stay current.
SNAPSHOT_EXACT_MAX_ENDPOINTS = 64
SNAPSHOT_REFRESH_SECONDS = 0.05
SNAPSHOT_MAX_AGE_SECONDS = 0.05


@dataclass
class EndpointState:
    """One pod x target port, mutable: the scraper and the director update it."""

    address: str  # "ip:port"
    pod: str  # "ns/name"
    served: ServedModels | None = None
    models_attempted: bool = False  # at least one /v1/models read finished (ok or failed)
    metrics: PodMetrics | None = None
    metrics_at: float | None = None  # monotonic time of the last good /metrics scrape
    in_flight: int = 0
    # The last scrape could not connect (refused, reset, connect timeout): the pod is treated as if
    # its metrics were stale until a scrape succeeds again, instead of waiting out the staleness limit.
    unreachable: bool = False

    def frozen(self, now: float) -> Endpoint:
        age = float("inf") if self.unreachable or self.metrics_at is None else now - self.metrics_at
        return Endpoint(self.address, self.pod, self.served, self.metrics, age, self.in_flight)


@dataclass(frozen=True)
class PoolView:
    """One served pool as of the last sync: the pool, its models (oldest first) and endpoint addresses."""

    pool: InferencePool
    models: tuple[InferenceModel, ...]
    addresses: tuple[str, ...]

    def model_named(self, name: str) -> InferenceModel | None:
        return next((m for m in self.models if m.model_name == name), None)


@dataclass
class _ChangeSignal:
    version: int = 0
    event: asyncio.Event = field(default_factory=asyncio.Event)


class Datastore:
    """Pools whose picker is Service `service_name` in `namespace` (optionally only `pool_keys`)."""

    def __init__(
        self,
        service_name: str,
        namespace: str,
        pool_keys: Iterable[str] = (),
        *,
        staleness_s: float = METRICS_STALENESS_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.service_name = service_name
        self.namespace = namespace
        self.pool_keys = frozenset(pool_keys)
        self.staleness_s = staleness_s
        self.clock = clock
        self.synced = False
        self._pools: dict[str, PoolView] = {}
        self._endpoints: dict[str, EndpointState] = {}
        self._change = _ChangeSignal()
        # Live requests in flight by address, only non-zero entries (shared by every snapshot).
        self._in_flight: dict[str, int] = {}
        self._state_serial = 0  # grows on every endpoint state change (metrics included)
        # pool key -> (snapshot, built at, change version, state serial)
        self._snapshots: dict[str, tuple[EndpointSnapshot, float, int, int]] = {}

    # --- discovery --------------------------------------------------------------------------

    def sync(self, snapshot: Snapshot) -> bool:
        """Adopt the pools and Ready pods of `snapshot`; returns whether endpoints or pools changed."""
        pools: dict[str, PoolView] = {}
        wanted: dict[str, str] = {}  # address -> pod
        for pool in snapshot.pools_for_picker(self.service_name, self.namespace):
            if self.pool_keys and pool.key not in self.pool_keys:
                continue
            addresses: list[str] = []
            for pod in snapshot.pods_for_pool(pool):
                for port in pool.target_ports:
                    address = f"{pod.ip}:{port}"
                    addresses.append(address)
                    wanted[address] = pod.key
            pools[pool.key] = PoolView(pool, snapshot.models_for_pool(pool.key), tuple(addresses))
        changed = pools != self._pools
        for address in list(self._endpoints):
            state = self._endpoints[address]
            if wanted.get(address) != state.pod:
                del self._endpoints[address]  # gone, or the IP now belongs to another pod: start afresh
                self._in_flight.pop(address, None)
                changed = True
        for address, pod_key in wanted.items():
            if address not in self._endpoints:
                self._endpoints[address] = EndpointState(address, pod_key)
                changed = True
        self._pools = pools
        self.synced = True
        self._state_serial += 1
        if changed:
            log.info("endpoints synced", pools=sorted(pools), endpoints=len(self._endpoints))
            self._bump()
        return changed

    # --- reads ------------------------------------------------------------------------------

    @property
    def version(self) -> int:
        """Grows when pools, endpoints or served models change (what EDS and the scraper follow)."""
        return self._change.version

    async def wait_for_change(self, after_version: int) -> int:
        """Wait until `version` > after_version; returns the current version."""
        while self._change.version <= after_version:
            await self._change.event.wait()
        return self._change.version

    def pools(self) -> Mapping[str, PoolView]:
        return self._pools

    def pool(self, key: str) -> PoolView | None:
        return self._pools.get(key)

    def endpoint_states(self) -> Mapping[str, EndpointState]:
        return self._endpoints

    def endpoint_states_for(self, pool_key: str) -> list[EndpointState]:
        view = self._pools.get(pool_key)
        if view is None:
            return []
        return [self._endpoints[a] for a in view.addresses if a in self._endpoints]

    def endpoints_for(self, pool_key: str) -> list[Endpoint]:
        """Frozen endpoints of a pool for one scheduling decision."""
        now = self.clock()
        return [state.frozen(now) for state in self.endpoint_states_for(pool_key)]

    def snapshot_for(self, pool_key: str) -> EndpointSnapshot:
        """The pool's endpoints for scheduling, reused while nothing changed, with live in-flight counts."""
        now = self.clock()
        cached = self._snapshots.get(pool_key)
        if cached is not None:
            snapshot, built_at, version, serial = cached
            elapsed = now - built_at
            if (
                version == self._change.version
                and elapsed < SNAPSHOT_MAX_AGE_SECONDS
                and (
                    serial == self._state_serial
                    or (len(snapshot) > SNAPSHOT_EXACT_MAX_ENDPOINTS and elapsed < SNAPSHOT_REFRESH_SECONDS)
                )
            ):
                return snapshot
        states = self.endpoint_states_for(pool_key)
        snapshot = EndpointSnapshot([state.frozen(now) for state in states], self._in_flight)
        self._snapshots[pool_key] = (snapshot, now, self._change.version, self._state_serial)
        return snapshot

    def in_flight_counts(self) -> Mapping[str, int]:
        """Live requests in flight per address (only endpoints with some); do not mutate."""
        return self._in_flight

    def is_fresh(self, endpoint: Endpoint) -> bool:
        return endpoint.metrics_age_s <= self.staleness_s

    def models_settled(self) -> bool:
        """Every endpoint has had its first /v1/models answer (or failure)."""
        return all(state.models_attempted for state in self._endpoints.values())

    # --- writes from the scraper and the director -------------------------------------------

    def record_metrics(self, address: str, metrics: PodMetrics) -> None:
        state = self._endpoints.get(address)
        if state is not None:
            # An unchanged scrape (an idle pod, every 50 ms) keeps the scheduling snapshot: it is
            # rebuilt anyway within SNAPSHOT_MAX_AGE_SECONDS, which bounds how old its ages can be.
            if metrics != state.metrics or state.unreachable:
                self._state_serial += 1
            state.metrics = metrics
            state.metrics_at = self.clock()
            if state.unreachable:
                state.unreachable = False
                log.info("endpoint reachable again", endpoint=address)

    def record_unreachable(self, address: str) -> None:
        """A connection to the endpoint failed: ineligible at once, until `record_metrics` again."""
        state = self._endpoints.get(address)
        if state is not None and not state.unreachable:
            state.unreachable = True
            self._state_serial += 1
            log.warning("endpoint unreachable", endpoint=address)

    def record_models(self, address: str, served: ServedModels | None) -> None:
        """Store a /v1/models result (None: the read failed; the last good answer is kept)."""
        state = self._endpoints.get(address)
        if state is None:
            return
        first = not state.models_attempted
        self._state_serial += 1
        state.models_attempted = True
        if served is not None and served != state.served:
            state.served = served
            self._bump()
        elif first:
            self._bump()  # EDS may be waiting for every endpoint's first answer

    def acquire(self, address: str) -> None:
        state = self._endpoints.get(address)
        if state is not None:
            state.in_flight += 1
            self._in_flight[address] = state.in_flight

    def release(self, address: str) -> None:
        state = self._endpoints.get(address)
        if state is not None and state.in_flight > 0:
            state.in_flight -= 1
            if state.in_flight:
                self._in_flight[address] = state.in_flight
            else:
                self._in_flight.pop(address, None)

    def _bump(self) -> None:
        old = self._change
        self._change = _ChangeSignal(old.version + 1)
        old.event.set()
