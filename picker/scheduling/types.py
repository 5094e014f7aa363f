"""Inputs and outputs of one scheduling decision: an immutable snapshot in, a decision out."""

from __future__ import annotations

from dataclasses import dataclass, field

from api.model import Criticality


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


@dataclass(frozen=True)
class InferenceRequest:
    """What scheduling needs from one request."""

    request_id: str
    model: str  # client-facing model (body.model as sent)
    target_model: str  # model the chosen cluster serves; body.model is rewritten to it
    criticality: Criticality = Criticality.STANDARD
    prompt: str = ""  # prompt text (completions) or flattened chat messages, for prefix affinity
    subset_hint: frozenset[str] | None = None  # allowed "ip:port"s from envoy.lb.subset_hint
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Decision:
    """Where to send the request: primary first, then fallbacks."""

    endpoints: tuple[str, ...]
    scores: dict[str, float] = field(default_factory=dict)  # address -> total score, for the log
    prefix_hashes: tuple[int, ...] = ()  # the prompt's block hashes, for PrefixIndex.record after sending

    @property
    def primary(self) -> str:
        return self.endpoints[0]


@dataclass(frozen=True)
class Rejection:
    """No endpoint: HTTP status and message for an OpenAI-style error answer."""

    status: int  # 404 no pod serves the model, 503 none ready, 429 shed
    code: str
    message: str
