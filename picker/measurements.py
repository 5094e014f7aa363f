"""Per (pool, model, target) outcomes from Envoy's access log: status classes, TTFT and TPOT histograms.

Prometheus series for dashboards and the same numbers as JSON for the rollout controller. All counts are
cumulative since `started_at` and every replica uses the same bucket bounds, so a window is a difference
of two polls and several replicas merge by summing (docs/rollout.md, "Measurements").
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.samples import Sample

from picker.handlers.accesslog import Outcome


def _series(decades: Iterable[int], top: Sequence[float]) -> tuple[float, ...]:
    # Steps of at most 1.5x: a 1.5x shift moves a distribution by about one bucket.
    steps = (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.5)
    return (*(round(step * 10.0**d, 12) for d in decades for step in steps), *top)


TTFT_BUCKETS = _series(range(-3, 1), (10, 15, 20, 30, 45, 60))  # 1 ms .. 60 s
TPOT_BUCKETS = _series(range(-4, 0), (1.0, 1.5, 2.0))  # 0.1 ms .. 2 s
# GIE's own NTPOT bounds, so its dashboards read this histogram unchanged.
NTPOT_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)

OK = "2xx"
STATUS_CLASSES = (OK, "4xx", "5xx", "timeout", "reset", "client_gone", "other")
TIMEOUT_FLAGS = frozenset({"UT", "DT", "SI", "UMSDR"})
CLIENT_GONE_FLAGS = frozenset({"DC", "DR"})
RESET_FLAGS = frozenset({"UC", "UR", "LR", "UPE"})  # the answer started, then its stream broke


def status_class(outcome: Outcome) -> str:
    """One disjoint class per outcome: timeouts before codes (a UT is also a 504), then the client."""
    if outcome.flags & TIMEOUT_FLAGS:
        return "timeout"
    if not outcome.status:
        return "reset" if outcome.flags & RESET_FLAGS else "client_gone"
    if outcome.flags & CLIENT_GONE_FLAGS:
        return "client_gone"
    if 500 <= outcome.status < 600:
        return "5xx"
    if outcome.flags & RESET_FLAGS:
        return "reset"
    if 400 <= outcome.status < 500:
        return "4xx"
    return OK if 200 <= outcome.status < 300 else "other"


def ttft_seconds(outcome: Outcome) -> float | None:
    """Request start to the first response body chunk: the first SSE event, or the whole JSON answer."""
    return outcome.timings.first_chunk


def tpot_seconds(outcome: Outcome) -> float | None:
    """Streaming: first chunk to last byte over (tokens - 1); else request sent to answer in, over tokens."""
    tokens, t = outcome.completion_tokens, outcome.timings
    if outcome.stream:
        if tokens is None or tokens < 2 or t.first_chunk is None or t.last_upstream_rx is None:
            return None
        gap = t.last_upstream_rx - t.first_chunk
        return gap / (tokens - 1) if gap >= 0 else None
    if not tokens or t.last_upstream_tx is None or t.last_upstream_rx is None:
        return None
    gap = t.last_upstream_rx - t.last_upstream_tx
    return gap / tokens if gap >= 0 else None


def normalized_tpot_seconds(outcome: Outcome) -> float | None:
    """GIE's NTPOT: the whole request (to the last byte sent to the client) over its output tokens."""
    tokens, end = outcome.completion_tokens, outcome.timings.last_downstream_tx
    return end / tokens if tokens and end is not None else None


KINDS = ("streaming", "non_streaming")  # the JSON's keys for the `streaming` label's "true" / "false"


def _streaming(stream: bool) -> str:
    return "true" if stream else "false"


class Measurements:
    """The outcome series, registered in the picker's registry; `record` takes one access log entry."""

    def __init__(self, registry: CollectorRegistry, replica: str | None = None) -> None:
        labels = ("model_name", "target_model_name", "pool")
        self.replica = replica or socket.gethostname()  # in Kubernetes: the pod's name
        self.started_at = time.time()
        self.responses = Counter(
            "inference_model_response",
            "Routed requests by how they ended (access log): status class, timeout, reset or client gone.",
            (*labels, "status_class"),
            registry=registry,
        )
        self.ttft = Histogram(
            "inference_model_request_ttft_seconds",
            "Time to first token: request start to the first response body chunk (2xx only).",
            (*labels, "streaming"),
            buckets=TTFT_BUCKETS,
            registry=registry,
        )
        self.tpot = Histogram(
            "inference_model_request_tpot_seconds",
            "Time per output token after the first (streaming) or over the whole answer (2xx only).",
            (*labels, "streaming"),
            buckets=TPOT_BUCKETS,
            registry=registry,
        )
        self.ntpot = Histogram(
            "inference_model_normalized_time_per_output_token_seconds",
            "Request latency divided by output tokens (2xx only).",
            labels,
            buckets=NTPOT_BUCKETS,
            registry=registry,
        )
        # Labelled children, cached: `labels()` costs more than the observation.
        self._responses: dict[tuple[str, str, str, str], Counter] = {}
        self._timed: dict[tuple[str, str, str, bool], tuple[Histogram, Histogram, Histogram]] = {}

    def record(self, outcome: Outcome) -> str:
        """Count the outcome and observe its latencies; returns its status class."""
        klass = status_class(outcome)
        key = (outcome.model, outcome.target, outcome.pool)
        counter = self._responses.get((*key, klass))
        if counter is None:
            counter = self._responses[(*key, klass)] = self.responses.labels(*key, klass)
        counter.inc()
        # Latency of failures would mix error paths into the comparison; an unknown kind would mix both.
        if klass != OK or outcome.stream is None:
            return klass
        timed = self._timed.get((*key, outcome.stream))
        if timed is None:
            streaming = _streaming(outcome.stream)
            timed = self._timed[(*key, outcome.stream)] = (
                self.ttft.labels(*key, streaming),
                self.tpot.labels(*key, streaming),
                self.ntpot.labels(*key),
            )
        for histogram, value in zip(
            timed,
            (ttft_seconds(outcome), tpot_seconds(outcome), normalized_tpot_seconds(outcome)),
            strict=True,
        ):
            if value is not None:
                histogram.observe(value)
        return klass

    def snapshot(
        self, routed: Counter, errors: Counter, skip_error_codes: Sequence[str] = ()
    ) -> dict[str, Any]:
        """The JSON document of GET MEASUREMENTS_PATH: per target cumulative counts and bucket counts."""
        targets: dict[tuple[str, str, str], dict[str, Any]] = {}

        def target(labels: dict[str, str]) -> dict[str, Any]:
            key = (labels["pool"], labels["model_name"], labels["target_model_name"])
            entry = targets.get(key)
            if entry is None:
                entry = targets[key] = _empty_target(*key)
            return entry

        for sample in _samples(routed, "_total"):
            target(sample.labels)["routed"] += int(sample.value)
        for sample in _samples(errors, "_total"):
            if sample.labels["error_code"] not in skip_error_codes and sample.labels["target_model_name"]:
                rejected = target(sample.labels)["rejected"]
                code = sample.labels["error_code"]
                rejected[code] = rejected.get(code, 0) + int(sample.value)
        for sample in _samples(self.responses, "_total"):
            entry = target(sample.labels)
            entry["responses"][sample.labels["status_class"]] += int(sample.value)
            entry["requests"] += int(sample.value)
        for name, histogram, bounds in (
            ("ttft_seconds", self.ttft, TTFT_BUCKETS),
            ("tpot_seconds", self.tpot, TPOT_BUCKETS),
        ):
            for sample in _samples(histogram, "_bucket", "_sum"):
                kind = "streaming" if sample.labels["streaming"] == "true" else "non_streaming"
                series = target(sample.labels)[name][kind]
                if sample.name.endswith("_sum"):
                    series["sum"] = sample.value
                else:
                    le = sample.labels["le"]
                    index = len(bounds) if le == "+Inf" else bounds.index(float(le))
                    series["cumulative"][index] = int(sample.value)
        for entry in targets.values():
            for name in ("ttft_seconds", "tpot_seconds"):
                for series in entry[name].values():
                    _finish(series)
        return {
            "schema": "inference-gateway.measurements/v1",
            "replica": self.replica,
            "started_at": self.started_at,
            "now": time.time(),
            "status_classes": list(STATUS_CLASSES),
            "bounds": {"ttft_seconds": list(TTFT_BUCKETS), "tpot_seconds": list(TPOT_BUCKETS)},
            "targets": [targets[key] for key in sorted(targets)],
        }


def _empty_series(bounds: Sequence[float]) -> dict[str, Any]:
    return {"count": 0, "sum": 0.0, "counts": [], "cumulative": [0] * (len(bounds) + 1)}


def _empty_target(pool: str, model: str, target: str) -> dict[str, Any]:
    return {
        "pool": pool,
        "model": model,
        "target": target,
        "routed": 0,
        "rejected": {},
        "requests": 0,
        "responses": dict.fromkeys(STATUS_CLASSES, 0),
        "ttft_seconds": {kind: _empty_series(TTFT_BUCKETS) for kind in KINDS},
        "tpot_seconds": {kind: _empty_series(TPOT_BUCKETS) for kind in KINDS},
    }


def _finish(series: dict[str, Any]) -> None:
    """Prometheus buckets are cumulative over bounds; the JSON gives each bucket's own count."""
    cumulative: list[int] = series.pop("cumulative")
    series["counts"] = [c - p for p, c in zip([0, *cumulative[:-1]], cumulative, strict=True)]
    series["count"] = cumulative[-1]


def _samples(metric: Counter | Histogram, *suffixes: str) -> list[Sample]:
    return [s for family in metric.collect() for s in family.samples if s.name.endswith(suffixes)]
