"""The picker's own Prometheus metrics (GIE names), in an own CollectorRegistry."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from picker.datastore import Datastore
from picker.errors import ErrorCode
from picker.measurements import Measurements

# The rollout controller's JSON source (docs/rollout.md, "Measurements"), on the metrics port.
MEASUREMENTS_PATH = "/measurements"

DURATION_BUCKETS = (
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 45, 60,
    120, 180, 240, 300, 360, 480, 600, 900, 1200, 1800, 2700, 3600,
)  # fmt: skip
INPUT_TOKEN_BUCKETS = tuple(float(4**i) for i in range(11))  # 1 .. 1,048,576
OUTPUT_TOKEN_BUCKETS = tuple(float(2**i) for i in range(14))  # 1 .. 8192
DECISION_BUCKETS = (0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)


@dataclass(frozen=True)
class RequestMetrics:
    """The series one routed request touches (children of PickerMetrics' labelled metrics)."""

    requests: Counter
    running: Gauge
    duration: Histogram
    input_tokens: Histogram
    output_tokens: Histogram


class PickerMetrics:
    """Request metrics per (model_name, target_model_name, pool) and pool gauges read from the datastore.

    `pool` ("ns/name") keeps a shadow pool's copies of a model apart from production's (mirroring)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        labels = ("model_name", "target_model_name", "pool")
        r = self.registry
        self.requests = Counter(
            "inference_model_request", "Requests per model and target.", labels, registry=r
        )
        self.errors = Counter(
            "inference_model_request_error", "Failed requests.", (*labels, "error_code"), registry=r
        )
        self.duration = Histogram(
            "inference_model_request_duration_seconds",
            "From request headers to the end of the response.",
            labels,
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.input_tokens = Histogram(
            "inference_model_input_tokens",
            "Prompt tokens (usage).",
            labels,
            buckets=INPUT_TOKEN_BUCKETS,
            registry=r,
        )
        self.output_tokens = Histogram(
            "inference_model_output_tokens",
            "Completion tokens (usage).",
            labels,
            buckets=OUTPUT_TOKEN_BUCKETS,
            registry=r,
        )
        self.running = Gauge(
            "inference_model_running_requests",
            "Requests in flight through this picker.",
            ("model_name",),
            registry=r,
        )
        self.decision = Histogram(
            "inference_extension_scheduler_e2e_duration_seconds",
            "Time to schedule one request.",
            buckets=DECISION_BUCKETS,
            registry=r,
        )
        # Outcomes from the access log: status classes, TTFT, TPOT (picker/measurements.py).
        self.measurements = Measurements(r)
        self._children: dict[tuple[str, str, str], RequestMetrics] = {}

    def for_request(self, model: str, target: str, pool: str) -> RequestMetrics:
        """The labelled children for one (model, target, pool), cached: `labels()` is slow per request."""
        key = (model, target, pool)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = RequestMetrics(
                requests=self.requests.labels(model, target, pool),
                running=self.running.labels(model),
                duration=self.duration.labels(model, target, pool),
                input_tokens=self.input_tokens.labels(model, target, pool),
                output_tokens=self.output_tokens.labels(model, target, pool),
            )
        return children

    def watch_pools(self, datastore: Datastore) -> None:
        """Expose the inference_pool_* gauges, computed from `datastore` at scrape time."""
        self.registry.register(_PoolCollector(datastore))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def measurements_json(self) -> bytes:
        """GET MEASUREMENTS_PATH: per target cumulative outcomes, picker rejections and histograms."""
        # Model server errors are outcomes already (responses.5xx); the rest the picker answered itself.
        snapshot = self.measurements.snapshot(
            self.requests, self.errors, skip_error_codes=(ErrorCode.MODEL_SERVER_ERROR.value,)
        )
        return orjson.dumps(snapshot)


class _PoolCollector(Collector):
    def __init__(self, datastore: Datastore) -> None:
        self.datastore = datastore

    def collect(self) -> Iterator[GaugeMetricFamily]:
        kv = GaugeMetricFamily(
            "inference_pool_average_kv_cache_utilization",
            "Mean KV-cache use over fresh pods.",
            labels=["name"],
        )
        queue = GaugeMetricFamily(
            "inference_pool_average_queue_size", "Mean waiting requests over fresh pods.", labels=["name"]
        )
        ready = GaugeMetricFamily(
            "inference_pool_ready_pods", "Endpoints with fresh metrics.", labels=["name"]
        )
        for key, view in sorted(self.datastore.pools().items()):
            fresh = [
                e
                for e in self.datastore.endpoints_for(key)
                if self.datastore.is_fresh(e) and e.metrics is not None
            ]
            name = view.pool.meta.name
            ready.add_metric([name], len(fresh))
            count = len(fresh) or 1
            kv.add_metric([name], sum(e.metrics.kv_cache_usage for e in fresh if e.metrics) / count)
            queue.add_metric([name], sum(e.metrics.waiting for e in fresh if e.metrics) / count)
        yield kv
        yield queue
        yield ready


async def start_metrics_server(metrics: PickerMetrics, host: str, port: int) -> web.AppRunner:
    """Serve GET /metrics and MEASUREMENTS_PATH on host:port; returns the runner (`cleanup()` stops it)."""

    async def handle(_: web.Request) -> web.Response:
        return web.Response(body=metrics.exposition(), content_type="text/plain", charset="utf-8")

    async def measurements(_: web.Request) -> web.Response:
        return web.Response(body=metrics.measurements_json(), content_type="application/json")

    app = web.Application()
    app.router.add_get("/metrics", handle)
    app.router.add_get(MEASUREMENTS_PATH, measurements)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
