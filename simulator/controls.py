"""Test controls of a simulated server: forced /metrics values, traffic stats, /sim/control's keys."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any

from simulator.metrics import MetricsView

CONTROL_KEYS = frozenset(
    {
        "clear",
        "slowdown",
        "fail",
        "down",
        "degrade",
        "waiting",
        "running",
        "kv_cache_usage",
        "running_lora_adapters",
        "waiting_lora_adapters",
    }
)


@dataclass
class MetricOverrides:
    """Values a test forces into /metrics (None: the engine's own)."""

    running: int | None = None
    waiting: int | None = None
    kv_cache_usage: float | None = None
    running_lora_adapters: tuple[str, ...] | None = None
    waiting_lora_adapters: tuple[str, ...] | None = None

    def any(self) -> bool:
        return any(v is not None for v in vars(self).values())

    def apply(self, view: MetricsView) -> MetricsView:
        return MetricsView(
            running=view.running if self.running is None else self.running,
            waiting=view.waiting if self.waiting is None else self.waiting,
            waiting_deferred=0 if self.waiting is not None else view.waiting_deferred,
            kv_cache_usage=view.kv_cache_usage if self.kv_cache_usage is None else self.kv_cache_usage,
            running_lora_adapters=(
                view.running_lora_adapters
                if self.running_lora_adapters is None
                else self.running_lora_adapters
            ),
            waiting_lora_adapters=(
                view.waiting_lora_adapters
                if self.waiting_lora_adapters is None
                else self.waiting_lora_adapters
            ),
        )


@dataclass
class ServerStats:
    """Traffic one server saw: inference requests by requested model, answers by status."""

    requests_by_model: Counter[str] = field(default_factory=Counter)
    responses_by_status: Counter[int] = field(default_factory=Counter)
    last_request: Any = None

    def as_json(self) -> dict[str, Any]:
        return {
            "requests_total": sum(self.requests_by_model.values()),
            "requests_by_model": dict(self.requests_by_model),
            "responses_by_status": {str(k): v for k, v in self.responses_by_status.items()},
            "last_request": self.last_request,
        }


def validated_override(key: str, value: Any) -> Any:
    """A /metrics override value as stored, or ValueError; None removes the override."""
    if key not in {f.name for f in fields(MetricOverrides)}:
        raise ValueError(f"unknown override {key!r}")
    if value is None:
        return None
    if key.endswith("_adapters"):
        if not isinstance(value, list | tuple) or not all(isinstance(a, str) for a in value):
            raise ValueError(f"{key} must be a list of adapter names")
        return tuple(value)
    if key == "kv_cache_usage":
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ValueError("kv_cache_usage must be a number in [0, 1]")
        return float(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{key} must be a non-negative integer")
    return value
