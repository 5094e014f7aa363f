"""Request lifecycle: parse the body, resolve pool/target/criticality, schedule, rewrite; then finish."""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from api.contract import MetadataKey, Role
from api.model import Criticality, InferenceModel
from picker.accesslog import Outcome
from picker.body import ParsedBody, parse_body, rewrite_model
from picker.datastore import Datastore, PoolView
from picker.errors import ErrorCode, PickerError
from picker.extproc.attributes import RequestAttributes
from picker.metrics import PickerMetrics
from picker.scheduling import admission
from picker.scheduling.admission import DEFAULT_ADMISSION, AdmissionConfig
from picker.scheduling.types import Decision, Endpoint, EndpointSnapshot, InferenceRequest, Rejection

log = structlog.get_logger(__name__)

MAX_DESTINATIONS = 3  # primary + up to 2 fallbacks


class Scheduler(Protocol):
    def schedule(self, request: InferenceRequest, endpoints: Sequence[Endpoint]) -> Decision | Rejection: ...

    def record(self, decision: Decision) -> None: ...


@dataclass
class RequestContext:
    """Per-stream state the director needs; filled from request headers, then by `route`."""

    request_id: str
    path: str = "/"
    attributes: RequestAttributes = field(default_factory=RequestAttributes)
    subset_hint: frozenset[str] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    # Set once routed:
    model: str = ""
    target: str = ""
    pool: str = ""
    endpoint: str | None = None  # primary, counted in flight until `finish`
    finished: bool = False


@dataclass(frozen=True)
class Routed:
    """Where the request goes and the body to send (None: unchanged)."""

    endpoints: tuple[str, ...]
    body: bytes | None


class Director:
    """parse -> resolve -> schedule -> rewrite for each request, and the bookkeeping when it ends."""

    def __init__(
        self,
        datastore: Datastore,
        scheduler: Scheduler,
        metrics: PickerMetrics,
        max_body_bytes: int,
        admission_config: AdmissionConfig = DEFAULT_ADMISSION,
        rng: random.Random | None = None,
    ) -> None:
        self.admission_config = admission_config
        self.datastore = datastore
        self.scheduler = scheduler
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.rng = rng or random.Random()

    def route(self, ctx: RequestContext, raw: bytes) -> Routed:
        """Decide for one request; raises PickerError for every answer that is not a routing."""
        parsed = parse_body(raw, ctx.path, self.max_body_bytes)
        ctx.model = parsed.model
        view = self._pool(ctx)
        ctx.pool = view.pool.key
        target, criticality = self._target(ctx, view, parsed)
        ctx.target = target
        endpoints = self._candidates(view, target, ctx.subset_hint)
        request = InferenceRequest(
            request_id=ctx.request_id,
            model=parsed.model,
            target_model=target,
            criticality=criticality,
            prompt=parsed.prompt,
            subset_hint=ctx.subset_hint,
        )
        started = time.perf_counter()
        shed = admission.check(request, endpoints, self.admission_config)
        if shed is not None:
            raise PickerError(shed.status, shed.message)
        outcome = self.scheduler.schedule(request, endpoints)
        self.metrics.decision.observe(time.perf_counter() - started)
        if isinstance(outcome, Rejection):
            raise PickerError(outcome.status, outcome.message)
        # Distinct addresses: a route retry moves on to the next one, so a repeat would waste it.
        chosen = tuple(dict.fromkeys(outcome.endpoints))[:MAX_DESTINATIONS]
        if not chosen:
            raise PickerError(503, f"no ready endpoint for model `{target}`")
        log.debug(
            "decision",
            request_id=ctx.request_id,
            model=parsed.model,
            target=target,
            pool=ctx.pool,
            endpoint=chosen[0],
            fallbacks=list(chosen[1:]),
            scores=outcome.scores,
        )
        self.scheduler.record(outcome)  # prefix affinity: the primary now holds this prompt
        new_body = rewrite_model(raw, target) if target != parsed.model else None
        ctx.endpoint = chosen[0]
        self.datastore.acquire(chosen[0])
        series = self.metrics.for_request(parsed.model, target)
        series.requests.inc()
        series.running.inc()
        return Routed(chosen, new_body)

    def reject(self, ctx: RequestContext, error: PickerError) -> None:
        """Count a request the picker answered itself."""
        ctx.finished = True
        self.metrics.errors.labels(ctx.model, ctx.target, error.code.value).inc()

    def finish(self, ctx: RequestContext) -> None:
        """End of a routed request (Envoy ended its ext_proc stream): release and time it, once."""
        if ctx.finished:
            return
        ctx.finished = True
        if ctx.endpoint is None:
            return
        self.datastore.release(ctx.endpoint)
        series = self.metrics.for_request(ctx.model, ctx.target)
        series.running.dec()
        series.duration.observe(time.monotonic() - ctx.started)

    def record_outcome(self, outcome: Outcome) -> None:
        """Status and token usage of a routed request, from Envoy's access log (maybe another replica's)."""
        if outcome.status is not None and outcome.status >= 400:
            self.metrics.errors.labels(
                outcome.model, outcome.target, ErrorCode.MODEL_SERVER_ERROR.value
            ).inc()
        if outcome.prompt_tokens is None and outcome.completion_tokens is None:
            return
        series = self.metrics.for_request(outcome.model, outcome.target)
        if outcome.prompt_tokens is not None:
            series.input_tokens.observe(outcome.prompt_tokens)
        if outcome.completion_tokens is not None:
            series.output_tokens.observe(outcome.completion_tokens)

    # --- resolution ----------------------------------------------------------------------------

    def _pool(self, ctx: RequestContext) -> PoolView:
        """The pool from cluster (or route) metadata; with no metadata, the only pool served."""
        for md in (ctx.attributes.cluster_metadata, ctx.attributes.route_metadata):
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

    def _target(self, ctx: RequestContext, view: PoolView, parsed: ParsedBody) -> tuple[str, Criticality]:
        """Target model (from the cluster Envoy chose) and criticality (from the route, else the model)."""
        cluster_md = ctx.attributes.cluster_metadata or {}
        route_md = ctx.attributes.route_metadata or {}
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

    def _candidates(self, view: PoolView, target: str, subset: frozenset[str] | None) -> Sequence[Endpoint]:
        """The pool's endpoints that may take the request, memoised on the pool's reused snapshot.

        The same EndpointSnapshot object for the same (snapshot, target, subset) lets the scheduler
        reuse what it derived from it; in-flight counts stay live through the snapshot's mapping.
        """
        snapshot = self.datastore.snapshot_for(view.pool.key)
        key = ("director-candidates", target, subset, self.datastore.staleness_s)
        found: EndpointSnapshot | None = snapshot.memo.get(key)
        if found is None:
            # Errors are not memoised: each raise needs its own exception, and they are the rare path.
            found = snapshot.memo[key] = snapshot.derive(self._select(snapshot, view, target, subset))
        return found

    def _select(
        self, endpoints: Sequence[Endpoint], view: PoolView, target: str, subset: frozenset[str] | None
    ) -> list[Endpoint]:
        if not endpoints:
            raise PickerError(503, f"inference pool {view.pool.key} has no ready endpoint")
        serving = [e for e in endpoints if e.served is not None and e.served.serves(target)]
        if not serving:
            unknown = [e for e in endpoints if e.served is None]
            if not unknown:
                raise PickerError(404, f"The model `{target}` does not exist.", "model")
            serving = unknown  # what they serve is not known yet: let the scheduler decide
        if subset is not None:
            serving = [e for e in serving if e.address in subset]
            if not serving:
                raise PickerError(503, f"no endpoint of the requested subset serves model `{target}`")
        limit = self.datastore.staleness_s  # inline Datastore.is_fresh: this runs per endpoint per request
        fresh = [e for e in serving if e.metrics_age_s <= limit]
        if not fresh:
            raise PickerError(503, f"no ready endpoint for model `{target}`: metrics are stale")
        return fresh


def _criticality(value: Any) -> Criticality | None:
    try:
        return Criticality(value) if isinstance(value, str) else None
    except ValueError:
        return None
