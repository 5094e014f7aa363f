"""Admission: shed low-priority requests while the pool is saturated (pure functions).

Pool saturation is the mean over the request's candidate endpoints of
`max(waiting / queueThreshold, kv / kvThreshold)` (`waiting` plus this replica's in-flight requests
beyond the scraped running + waiting: sent since the last scrape), where stale or missing metrics
count 1.0 and no endpoint at all counts 1.0. The pool is saturated when the mean is >= 1.0.
`Critical` is never shed, `Sheddable` is shed when saturated, `Standard` only if configured.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from api.model import Criticality
from picker.scheduling.params import ConfigError, Params
from picker.scheduling.types import (
    METRICS_STALENESS_SECONDS,
    Endpoint,
    EndpointSnapshot,
    InferenceRequest,
    Rejection,
)

SATURATED = 1.0


@dataclass(frozen=True)
class AdmissionConfig:
    queue_threshold: float = 5.0  # waiting requests at which a pod counts as full
    kv_threshold: float = 0.8  # KV-cache use at which a pod counts as full
    # Metrics older than this count as full: the scheduler's one staleness limit (the readiness
    # filter's), so a pod the request may be routed to is never counted saturated for its age.
    staleness_s: float = METRICS_STALENESS_SECONDS
    shed_standard: bool = False
    count_in_flight: bool = True  # add this replica's in-flight requests to `waiting`

    @classmethod
    def from_mapping(
        cls,
        data: Mapping[str, Any] | None,
        path: str = "admission",
        staleness_s: float = METRICS_STALENESS_SECONDS,
    ) -> AdmissionConfig:
        """`staleness_s` is not an admission parameter: it is the scheduler's one staleness limit."""
        if isinstance(data, Mapping) and "metricsStalenessSeconds" in data:
            raise ConfigError(
                f"{path}.metricsStalenessSeconds: not an admission parameter any more: metrics "
                "staleness is one limit for routing and admission, the readiness filter's "
                "`maxMetricsAgeSeconds`"
            )
        params = Params(data, path)
        config = cls(
            queue_threshold=params.number("queueThreshold", 5.0, minimum=0, exclusive_minimum=True),
            kv_threshold=params.number("kvCacheThreshold", 0.8, minimum=0, maximum=1, exclusive_minimum=True),
            staleness_s=staleness_s,
            shed_standard=params.boolean("shedStandard", False),
            count_in_flight=params.boolean("countInFlight", True),
        )
        params.done()
        return config


DEFAULT_ADMISSION = AdmissionConfig()


def endpoint_saturation(
    endpoint: Endpoint, config: AdmissionConfig = DEFAULT_ADMISSION, in_flight: int | None = None
) -> float:
    """One endpoint's load relative to its thresholds (1.0 = full); stale or unknown counts 1.0.
    `in_flight` overrides `endpoint.in_flight` (live counts of an EndpointSnapshot)."""
    metrics = endpoint.metrics
    if metrics is None or endpoint.metrics_age_s > config.staleness_s:
        return 1.0
    if not config.count_in_flight:
        in_flight = 0
    elif in_flight is None:
        in_flight = endpoint.in_flight
    # In-flight requests include the running ones: only those beyond the scraped running + waiting
    # (sent since the last scrape) may still be queued. Adding them all would call a pod busy with
    # five running requests "full" and shed at moderate load.
    waiting = metrics.waiting + max(0, in_flight - metrics.running - metrics.waiting)
    return max(waiting / config.queue_threshold, metrics.kv_cache_usage / config.kv_threshold)


def pool_saturation(
    endpoints: Sequence[Endpoint],
    config: AdmissionConfig = DEFAULT_ADMISSION,
    in_flight: Mapping[str, int] | None = None,
) -> float:
    """Mean endpoint saturation; 1.0 when there is no endpoint. Live in-flight counts (`in_flight`,
    else an EndpointSnapshot's) are used instead of `Endpoint.in_flight`."""
    if not endpoints:
        return 1.0
    if in_flight is None and isinstance(endpoints, EndpointSnapshot):
        in_flight = endpoints.in_flight
    if in_flight is not None:
        live = in_flight
        total = sum(endpoint_saturation(e, config, live.get(e.address, 0)) for e in endpoints)
    else:
        total = sum(endpoint_saturation(e, config) for e in endpoints)
    return total / len(endpoints)


def sheddable(criticality: Criticality, config: AdmissionConfig = DEFAULT_ADMISSION) -> bool:
    if criticality is Criticality.SHEDDABLE:
        return True
    return criticality is Criticality.STANDARD and config.shed_standard


def check(
    request: InferenceRequest,
    endpoints: Sequence[Endpoint],
    config: AdmissionConfig = DEFAULT_ADMISSION,
    in_flight: Mapping[str, int] | None = None,
) -> Rejection | None:
    """None to admit; a 429 `pool_saturated` Rejection to shed. `endpoints`: the request's candidates
    (what the scheduler's filters kept); `in_flight`: live counts, see `pool_saturation`."""
    if not sheddable(request.criticality, config):
        return None  # skip the O(endpoints) work for requests that are never shed
    saturation = pool_saturation(endpoints, config, in_flight)
    if saturation < SATURATED:
        return None
    return Rejection(
        429,
        "pool_saturated",
        f"the inference pool is saturated (saturation {saturation:.2f}); "
        f"{request.criticality.value} request for model {request.model!r} shed, retry later",
    )


__all__ = [
    "DEFAULT_ADMISSION",
    "AdmissionConfig",
    "ConfigError",
    "check",
    "endpoint_saturation",
    "pool_saturation",
    "sheddable",
]
