"""Inputs and outputs of one scheduling decision: an immutable snapshot in, a decision out."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from api.model import Criticality

T = TypeVar("T")

# Metrics older than this say nothing about a pod's state now: its endpoint is not ready (the
# readiness filter drops it) and counts as full for admission. One limit for both, configured as the
# readiness filter's `maxMetricsAgeSeconds` (SchedulerConfig.staleness_s); this is its default.
METRICS_STALENESS_SECONDS = 2.0


@dataclass(frozen=True)
class PodMetrics:
    """Load of one model server, parsed from its /metrics (vLLM names by default)."""

    running: int = 0
    waiting: int = 0
    kv_cache_usage: float = 0.0  # 0..1
    max_loras: int = 0
    running_adapters: frozenset[str] = frozenset()
    waiting_adapters: frozenset[str] = frozenset()
    block_size: int | None = None
    num_gpu_blocks: int | None = None


@dataclass(frozen=True)
class ServedModels:
    """What one model server serves, from GET /v1/models: base model ids and LoRA adapter ids."""

    base: frozenset[str] = frozenset()
    adapters: frozenset[str] = frozenset()

    def serves(self, model: str) -> bool:
        return model in self.base or model in self.adapters


@dataclass(frozen=True)
class Endpoint:
    """One pod x target port, with what the picker knows about it at decision time."""

    address: str  # "ip:port"
    pod: str  # "<ns>/<name>"
    served: ServedModels | None = None  # None: /v1/models not read yet
    metrics: PodMetrics | None = None  # None: never scraped
    metrics_age_s: float = float("inf")
    in_flight: int = 0  # requests this picker replica sent and has not seen finish


class EndpointSnapshot(tuple[Endpoint, ...]):
    """Endpoints frozen at one moment, plus this replica's LIVE in-flight counts ("ip:port" -> count).

    Reuse one snapshot across decisions while pods and metrics are unchanged: it owns the columns
    derived from its endpoints (`column`), each computed once. When `in_flight` is set it is
    authoritative (a missing address counts 0) and `Endpoint.in_flight` is ignored, so requests
    starting and ending between decisions do not force a new snapshot.
    """

    in_flight: Mapping[str, int] | None
    _columns: dict[Any, Any]

    def __new__(
        cls, endpoints: Iterable[Endpoint] = (), in_flight: Mapping[str, int] | None = None
    ) -> EndpointSnapshot:
        snapshot = super().__new__(cls, endpoints)
        snapshot.in_flight = in_flight
        snapshot._columns = {}
        return snapshot

    def column(self, key: Any, make: Callable[[EndpointSnapshot], T]) -> T:
        """The column `key` of this snapshot: `make(self)` the first time, then the same object.
        `key` names everything `make` depends on besides the endpoints (e.g. the target model);
        columns are shared by every decision over the snapshot, so never modify one in place."""
        try:
            found: T = self._columns[key]
        except KeyError:
            found = self._columns[key] = make(self)
        return found

    def derive(self, endpoints: Iterable[Endpoint]) -> EndpointSnapshot:
        """A sub-snapshot (e.g. the endpoints serving one model) sharing the live in-flight counts."""
        return EndpointSnapshot(endpoints, self.in_flight)

    def in_flight_of(self, endpoint: Endpoint) -> int:
        if self.in_flight is None:
            return endpoint.in_flight
        return self.in_flight.get(endpoint.address, 0)


@dataclass(frozen=True)
class InferenceRequest:
    """What scheduling needs from one request."""

    request_id: str
    model: str  # client-facing model (body.model as sent)
    target_model: str  # model the chosen cluster serves; body.model is rewritten to it
    criticality: Criticality = Criticality.STANDARD
    # InferenceObjective priority (route metadata; 0 when none is named): admission sheds by the
    # criticality mapped from it, and later flow control can order by it.
    priority: int = 0
    prompt: str = ""  # prompt text (completions) or flattened chat messages, for prefix affinity
    subset_hint: frozenset[str] | None = None  # allowed "ip:port"s from envoy.lb.subset_hint


@dataclass(frozen=True)
class Decision:
    """Where to send the request: primary first, then fallbacks."""

    endpoints: tuple[str, ...]
    scores: dict[str, float] = field(default_factory=dict)  # address -> total score, for the log
    # The prompt's block hashes per scheme (block size, max blocks) computed in the cycle: each
    # prefix-aware plugin records the ones of its own scheme after sending.
    prefix_hashes: Mapping[tuple[int, int], tuple[int, ...]] = field(default_factory=dict)
    # Prompt characters the primary probably has to prefill: all but the prefix this replica last
    # sent it (a guess of its prefix cache), for the load scorers that weigh prefill work.
    prefill_chars: int = 0

    @property
    def primary(self) -> str:
        return self.endpoints[0]


@dataclass(frozen=True)
class Rejection:
    """No endpoint: HTTP status and message for an OpenAI-style error answer."""

    status: int  # 404 no pod serves the model, 503 none ready, 429 shed
    code: str
    message: str
