"""Request lifecycle: parse the body, resolve pool/target/criticality/priority, schedule, rewrite; release."""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from api.contract import MetadataKey, Role
from api.model import Criticality, InferenceModel
from picker.body import ParsedBody, parse_body, rewrite_model
from picker.datastore import Datastore, PoolView
from picker.errors import ErrorCode, PickerError
from picker.handlers.accesslog import Outcome
from picker.handlers.extproc.attributes import RequestAttributes
from picker.measurements import OK
from picker.metrics import PickerMetrics, RequestMetrics
from picker.scheduling.types import Decision, Endpoint, InferenceRequest, Rejection

log = structlog.get_logger(__name__)

MAX_DESTINATIONS = 3  # primary + up to 2 fallbacks
# The OpenAI body's `param` for a scheduler rejection, by its code.
_PARAMS = {"model_not_found": "model"}


class Scheduler(Protocol):
    def schedule(self, request: InferenceRequest, endpoints: Sequence[Endpoint]) -> Decision | Rejection: ...

    def record(self, decision: Decision) -> None: ...


@dataclass(frozen=True)
class RouteRequest:
    """What the director needs of one request besides its body, read from the stream's first message."""

    request_id: str
    path: str = "/"
    attributes: RequestAttributes = field(default_factory=RequestAttributes)
    subset_hint: frozenset[str] | None = None
    started: float = field(default_factory=time.monotonic)  # request headers arrived


class Lease:
    """The primary's in-flight slot and the request's running series, held until the stream ends."""

    __slots__ = ("_datastore", "_released", "_series", "_started", "address")

    def __init__(self, datastore: Datastore, address: str, series: RequestMetrics, started: float) -> None:
        self._datastore = datastore
        self._series = series
        self._started = started
        self._released = False
        self.address = address
        datastore.acquire(address)
        series.requests.inc()
        series.running.inc()

    def release(self) -> None:
        """End of the routed request (Envoy ended its ext_proc stream): release and time it, once."""
        if self._released:
            return
        self._released = True
        self._datastore.release(self.address)
        self._series.running.dec()
        self._series.duration.observe(time.monotonic() - self._started)


@dataclass(frozen=True)
class Routed:
    """Where the request goes: pool, client model, target model, endpoints (primary first), the body
    to send (None: unchanged), the lease to release when the request ends, and whether it streams."""

    pool: str
    model: str
    target: str
    endpoints: tuple[str, ...]
    body: bytes | None
    lease: Lease
    stream: bool = False


class Director:
    """Resolves pool and target, then schedules on the pool's snapshot; bookkeeping when requests end.

    Which endpoints may take a request (model served, subset hint, fresh metrics) and whether the
    pool sheds it are the scheduler's filters and admission: the director only resolves.
    """

    def __init__(
        self,
        datastore: Datastore,
        scheduler: Scheduler,
        metrics: PickerMetrics,
        max_body_bytes: int,
        rng: random.Random | None = None,
    ) -> None:
        self.datastore = datastore
        self.scheduler = scheduler
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.rng = rng or random.Random()

    def route(self, request: RouteRequest, raw: bytes) -> Routed:
        """Decide for one request; raises PickerError (labelled with what was resolved) otherwise."""
        model = target = pool = ""
        try:
            parsed = parse_body(raw, request.path, self.max_body_bytes)
            model = parsed.model
            view = self._pool(request)
            pool = view.pool.key
            target, criticality = self._target(request, view, parsed)
            priority = _priority(request.attributes.route_metadata)
            return self._schedule(request, raw, view, parsed, target, criticality, priority)
        except PickerError as error:
            error.model, error.target, error.pool = model, target, pool
            raise

    def _schedule(
        self,
        request: RouteRequest,
        raw: bytes,
        view: PoolView,
        parsed: ParsedBody,
        target: str,
        criticality: Criticality,
        priority: int = 0,
    ) -> Routed:
        snapshot = self.datastore.snapshot_for(view.pool.key)
        inference = InferenceRequest(
            request_id=request.request_id,
            model=parsed.model,
            target_model=target,
            criticality=criticality,
            priority=priority,
            prompt=parsed.prompt,
            subset_hint=request.subset_hint,
        )
        started = time.perf_counter()
        outcome = self.scheduler.schedule(inference, snapshot)
        self.metrics.decision.observe(time.perf_counter() - started)
        if isinstance(outcome, Rejection):
            raise PickerError(outcome.status, outcome.message, _PARAMS.get(outcome.code))
        # Distinct addresses: a route retry moves on to the next one, so a repeat would waste it.
        chosen = tuple(dict.fromkeys(outcome.endpoints))[:MAX_DESTINATIONS]
        if not chosen:
            raise PickerError(503, f"no ready endpoint for model `{target}`")
        log.debug(
            "decision",
            request_id=request.request_id,
            model=parsed.model,
            target=target,
            pool=view.pool.key,
            endpoint=chosen[0],
            fallbacks=list(chosen[1:]),
            criticality=inference.criticality.value,
            priority=inference.priority,
            scores=outcome.scores,
        )
        self.scheduler.record(outcome)  # prefix affinity: the primary now holds this prompt
        new_body = rewrite_model(raw, target) if target != parsed.model else None
        series = self.metrics.for_request(parsed.model, target, view.pool.key)
        lease = Lease(self.datastore, chosen[0], series, request.started)
        return Routed(view.pool.key, parsed.model, target, chosen, new_body, lease, parsed.stream)

    def reject(self, error: PickerError) -> None:
        """Count a request the picker answered itself."""
        self.metrics.errors.labels(error.model, error.target, error.pool, error.code.value).inc()

    def record_outcome(self, outcome: Outcome) -> None:
        """Status, latencies and token usage of a routed request, from Envoy's access log (maybe
        another replica's)."""
        if outcome.status is not None and outcome.status >= 400:
            self.metrics.errors.labels(
                outcome.model, outcome.target, outcome.pool, ErrorCode.MODEL_SERVER_ERROR.value
            ).inc()
        status_class = self.metrics.measurements.record(outcome)
        if status_class != OK:
            # The failures a rollout would be judged on, with what Envoy said about them.
            log.debug(
                "request failed",
                request_id=outcome.request_id,
                pool=outcome.pool,
                model=outcome.model,
                target=outcome.target,
                endpoint=outcome.endpoint,
                status=outcome.status,
                status_class=status_class,
                flags=sorted(outcome.flags),
            )
        if outcome.prompt_tokens is None and outcome.completion_tokens is None:
            return
        series = self.metrics.for_request(outcome.model, outcome.target, outcome.pool)
        if outcome.prompt_tokens is not None:
            series.input_tokens.observe(outcome.prompt_tokens)
        if outcome.completion_tokens is not None:
            series.output_tokens.observe(outcome.completion_tokens)

    # --- resolution ----------------------------------------------------------------------------

    def _pool(self, request: RouteRequest) -> PoolView:
        """The pool from cluster (or route) metadata; with no metadata, the only pool served."""
        for md in (request.attributes.cluster_metadata, request.attributes.route_metadata):
            if md and md.get(MetadataKey.POOL_NAMESPACE) and md.get(MetadataKey.POOL_NAME):
                key = f"{md[MetadataKey.POOL_NAMESPACE]}/{md[MetadataKey.POOL_NAME]}"
                view = self.datastore.pool(key)
                if view is None:
                    raise PickerError(503, f"inference pool {key} is not served by this endpoint picker")
                return view
        pools = self.datastore.pools()
        if len(pools) == 1:
            return next(iter(pools.values()))
        if not pools:
            raise PickerError(503, "no inference pool is ready")
        raise PickerError(500, "request carries no pool metadata and this picker serves several pools")

    def _target(self, request: RouteRequest, view: PoolView, parsed: ParsedBody) -> tuple[str, Criticality]:
        """Target model (from the cluster Envoy chose) and criticality (from the route, else the model)."""
        cluster_md = request.attributes.cluster_metadata or {}
        route_md = request.attributes.route_metadata or {}
        model = view.model_named(parsed.model)
        target = (
            cluster_md.get(MetadataKey.TARGET_MODEL)
            if cluster_md.get(MetadataKey.ROLE) == Role.TARGET
            else None
        )
        if not isinstance(target, str) or not target:
            # Catch-all cluster, or no metadata: split by the InferenceModel here, else serve as asked.
            target = self._weighted_target(model) if model is not None else parsed.model
        criticality = _criticality(route_md.get(MetadataKey.CRITICALITY))
        if criticality is None:
            criticality = model.effective_criticality if model is not None else Criticality.STANDARD
        return target, criticality

    def _weighted_target(self, model: InferenceModel) -> str:
        targets = [t for t in model.weighted_targets() if (t.weight or 0) > 0]
        if not targets:
            return model.model_name
        names = [t.name for t in targets]
        return self.rng.choices(names, weights=[t.weight or 0 for t in targets])[0]


def _priority(route_md: Mapping[str, Any] | None) -> int:
    """The InferenceObjective priority the route variant carries (a JSON number), else 0."""
    value = (route_md or {}).get(MetadataKey.PRIORITY)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    return 0


def _criticality(value: Any) -> Criticality | None:
    try:
        return Criticality(value) if isinstance(value, str) else None
    except ValueError:
        return None
