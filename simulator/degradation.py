"""Per-model degradation of a simulated server: TTFT and token latency x N, 5xx errors, from a moment on.

One `Degradation` names a model (the base served model or a LoRA adapter) and what happens to its
requests once it starts: `ttft` and `tpot` multiply the time to first token and every inter-token gap,
`error_rate` answers that share of requests with HTTP 500. It starts `after_s` real seconds (never
scaled by time_scale) after it is set, and/or after `after_requests` more requests for the model;
with `ramp_s` the factors and the error rate grow linearly from normal to full over that many seconds.
Error draws come from `random.Random(seed)`, one draw per degraded request, so runs are exact.

Text form (CLI `--degrade`, env `SIM_DEGRADE`, fleet YAML): entries separated by `;`, each a
comma-separated list of key=value, e.g. `model=sql-lora-v2,ttft=3,after_s=30;model=base,error_rate=0.05`.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

DEGRADE_ENV = "SIM_DEGRADE"  # a pod manifest's knob: the simulated vLLM container's environment


@dataclass(frozen=True)
class Degradation:
    """What happens to requests for `model` once the degradation has started."""

    model: str
    ttft: float = 1.0  # time to first token x ttft (>= 1)
    tpot: float = 1.0  # every inter-token gap x tpot (>= 1)
    error_rate: float = 0.0  # probability a request is answered 500
    after_s: float = 0.0  # starts this many real seconds after it was set (a config: the server's start)
    after_requests: int = 0  # ... and only after this many more requests for the model
    ramp_s: float = 0.0  # from the start, grows linearly from normal to full over this many seconds
    seed: int = 0  # of the error draws

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.model, str) or not self.model:
            problems.append("model must be a non-empty model name")
        for name in ("ttft", "tpot"):
            if not _number(getattr(self, name)) or getattr(self, name) < 1:
                problems.append(f"{name} must be a factor >= 1")
        if not _number(self.error_rate) or not 0 <= self.error_rate <= 1:
            problems.append("error_rate must be a probability in [0, 1]")
        for name in ("after_s", "ramp_s"):
            if not _number(getattr(self, name)) or getattr(self, name) < 0:
                problems.append(f"{name} must be a number of seconds >= 0")
        if not _integer(self.after_requests) or self.after_requests < 0:
            problems.append("after_requests must be an integer >= 0")
        if not _integer(self.seed):
            problems.append("seed must be an integer")
        if problems:
            raise ValueError(f"degrade {self.model!r}: {'; '.join(problems)}")

    @property
    def noop(self) -> bool:
        """Degrades nothing: setting it removes the model's degradation."""
        return self.ttft == 1 and self.tpot == 1 and self.error_rate == 0


_KEYS = [f.name for f in fields(Degradation)]


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def degradation_from_mapping(data: Mapping[str, Any]) -> Degradation:
    """A Degradation from a JSON/YAML object; keys may use dashes or underscores."""
    kwargs = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(kwargs) - set(_KEYS))
    if unknown:
        raise ValueError(f"degrade: unknown keys {', '.join(unknown)} (known: {', '.join(_KEYS)})")
    if "model" not in kwargs:
        raise ValueError("degrade: every entry needs a `model`")
    for key in ("ttft", "tpot", "error_rate", "after_s", "ramp_s"):
        if _integer(kwargs.get(key)):
            kwargs[key] = float(kwargs[key])
    return Degradation(**kwargs)


def _parse_entry(text: str) -> Degradation:
    data: dict[str, Any] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise ValueError(f"degrade: bad item {item.strip()!r} in {text.strip()!r}: expected key=value")
        data[key] = value if key.replace("-", "_") == "model" else _scalar(key, value)
    return degradation_from_mapping(data)


def _scalar(key: str, value: str) -> int | float:
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"degrade: {key}={value!r} is not a number") from None


def parse_degradations(value: object) -> tuple[Degradation, ...]:
    """Degradations from the text form, one mapping, or a list of text/mappings/Degradations."""
    if value is None:
        return ()
    if isinstance(value, Degradation):
        return (value,)
    if isinstance(value, str):
        return tuple(_parse_entry(e) for e in value.split(";") if e.strip())
    if isinstance(value, Mapping):
        return (degradation_from_mapping(value),)
    if isinstance(value, list | tuple):
        return tuple(d for item in value for d in parse_degradations(item))
    raise ValueError("degrade must be an object, a list of objects, or text like model=NAME,ttft=3")


def format_degradation(spec: Degradation) -> str:
    """The text form of one degradation (only the keys that differ from the defaults)."""
    default = Degradation(model=spec.model)
    items = [f"model={spec.model}"]
    items += [f"{k}={v}" for k, v in asdict(spec).items() if k != "model" and v != getattr(default, k)]
    return ",".join(items)


@dataclass(frozen=True)
class Effect:
    """What one request gets: factors on its clock, and whether it is answered 500."""

    ttft: float
    tpot: float
    fail: bool


class ModelDegradation:
    """A Degradation in effect on one server: counts its model's requests and draws their errors."""

    def __init__(self, spec: Degradation, clock: Callable[[], float]) -> None:
        self.spec = spec
        self._clock = clock
        self.armed_at = clock()
        self.started_at: float | None = self.armed_at + spec.after_s if spec.after_requests == 0 else None
        self.requests = 0
        self.degraded = 0
        self.errors = 0
        self._rng = random.Random(spec.seed)

    def level(self, now: float) -> float:
        """0 before the start, then up to 1 over ramp_s."""
        if self.started_at is None or now < self.started_at:
            return 0.0
        if self.spec.ramp_s == 0:
            return 1.0
        return min(1.0, (now - self.started_at) / self.spec.ramp_s)

    def on_request(self) -> Effect | None:
        """Count one request for the model; its effect, or None while it is still normal."""
        now = self._clock()
        self.requests += 1
        if self.started_at is None and self.requests > self.spec.after_requests:
            self.started_at = max(now, self.armed_at + self.spec.after_s)
        if self.started_at is None or now < self.started_at:
            return None
        spec, level = self.spec, self.level(now)
        # One draw per degraded request whatever the rate, so a seed fixes the whole sequence.
        fail = self._rng.random() < spec.error_rate * level
        self.degraded += 1
        self.errors += fail
        return Effect(1 + (spec.ttft - 1) * level, 1 + (spec.tpot - 1) * level, fail)

    def state(self) -> dict[str, Any]:
        now = self._clock()
        starts_in: float | None = None
        if self.started_at is not None:
            starts_in = max(0.0, self.started_at - now)
        return {
            **asdict(self.spec),
            "started": self.started_at is not None and now >= self.started_at,
            "starts_in_s": starts_in,  # None: waiting for after_requests
            "level": self.level(now),
            "requests": self.requests,
            "degraded": self.degraded,
            "errors": self.errors,
        }


class Degradations:
    """The degradations of one server, by model."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._by_model: dict[str, ModelDegradation] = {}

    def set(self, specs: Iterable[Degradation]) -> None:
        """Arm each spec now (replacing its model's); a no-op spec removes the model's degradation."""
        for spec in specs:
            if spec.noop:
                self._by_model.pop(spec.model, None)
            else:
                self._by_model[spec.model] = ModelDegradation(spec, self._clock)

    def clear(self) -> None:
        self._by_model.clear()

    def on_request(self, model: str) -> Effect | None:
        degradation = self._by_model.get(model)
        return degradation.on_request() if degradation is not None else None

    def state(self) -> dict[str, dict[str, Any]]:
        return {model: d.state() for model, d in self._by_model.items()}
