"""Assembles the picker: source -> datastore -> scraper; ext_proc + EDS on one gRPC port; health; metrics."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
import structlog
from envoy.service.accesslog.v3 import als_pb2_grpc
from envoy.service.endpoint.v3 import eds_pb2_grpc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc
from grpc_health.v1 import health_pb2_grpc

from api.contract import (
    DEFAULT_MAX_BODY_BYTES,
    GRPC_MESSAGE_OVERHEAD_BYTES,
    PICKER_GRPC_PORT,
    PICKER_HEALTH_PORT,
    PICKER_METRICS_PORT,
)
from api.sources import Source
from api.sources.store import ObjectStore
from picker.datastore import Datastore
from picker.director import Director, Scheduler
from picker.handlers.accesslog import AccessLogReceiver
from picker.handlers.eds import EndpointDiscovery
from picker.handlers.extproc.stream import ExternalProcessor
from picker.handlers.health import new_health_servicer, set_ready
from picker.metrics import PickerMetrics, start_metrics_server
from picker.scheduling import DEFAULT_CONFIG, SchedulerConfig, build_scheduler, load_config
from picker.scrape import ScrapeConfig, Scraper

log = structlog.get_logger(__name__)

DEFAULT_SERVICE_NAME = "inference-gateway-ext-proc"
DEFAULT_NAMESPACE = "default"


@dataclass(frozen=True)
class PickerConfig:
    """Everything `serve` needs; ports 0 mean "any free port" (tests)."""

    service_name: str = DEFAULT_SERVICE_NAME
    namespace: str = DEFAULT_NAMESPACE
    pools: tuple[str, ...] = ()  # "ns/name" restriction; empty = every pool naming the Service
    manifests: tuple[Path, ...] = ()
    kubeconfig: Path | None = None
    in_cluster: bool = False
    host: str = "0.0.0.0"
    grpc_port: int = PICKER_GRPC_PORT
    health_port: int = PICKER_HEALTH_PORT
    metrics_port: int | None = PICKER_METRICS_PORT  # None: no metrics endpoint
    scheduler_config: Path | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    scrape: ScrapeConfig = field(default_factory=ScrapeConfig)


def build_source(config: PickerConfig, store: ObjectStore) -> Source:
    """Files in local mode, else the Kubernetes API (kubeconfig or in-cluster)."""
    if config.manifests:
        from api.sources.files import FileSource

        return FileSource(config.manifests, store, poll_interval=1.0)
    from kubernetes import client as k8s_client
    from kubernetes import config as k8s_config

    from api.sources.kubernetes import INFERENCE_KINDS, POD_KIND, KubernetesSource

    if config.in_cluster:
        k8s_config.load_incluster_config()  # type: ignore[no-untyped-call]
        api = k8s_client.ApiClient()
    else:
        api = k8s_config.new_client_from_config(str(config.kubeconfig) if config.kubeconfig else None)  # type: ignore[no-untyped-call]
    return KubernetesSource(api, store, kinds=(*INFERENCE_KINDS, POD_KIND), namespace=config.namespace)


def load_scheduler_config(path: Path | None) -> SchedulerConfig:
    """The scheduling YAML (plugins, weights, admission, metric names), or the built-in defaults."""
    return load_config(path) if path is not None else DEFAULT_CONFIG


def grpc_options(max_body_bytes: int) -> list[tuple[str, int]]:
    # Receive twice the body limit so a too-large body still reaches us and gets a clear 400, not a
    # gRPC failure (which Envoy turns into a bare 500) when Envoy's own buffer limit is set higher.
    limit = 2 * max_body_bytes + GRPC_MESSAGE_OVERHEAD_BYTES
    return [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        ("grpc.max_concurrent_streams", 100_000),
        ("grpc.so_reuseport", 0),
    ]


class PickerServer:
    """The running picker. `start()` binds every port (read the bound ones from the attributes)."""

    def __init__(
        self, config: PickerConfig, source: Source | None = None, scheduler: Scheduler | None = None
    ) -> None:
        self.config = config
        self.store = source.store if source is not None else ObjectStore()
        self.source = source if source is not None else build_source(config, self.store)
        scheduling = load_scheduler_config(config.scheduler_config)
        self.datastore = Datastore(
            config.service_name, config.namespace, config.pools, staleness_s=scheduling.staleness_s
        )
        self.metrics = PickerMetrics()
        self.metrics.watch_pools(self.datastore)
        self.scheduler = scheduler if scheduler is not None else build_scheduler(scheduling)
        self.director = Director(self.datastore, self.scheduler, self.metrics, config.max_body_bytes)
        self.scraper = Scraper(self.datastore, replace(config.scrape, metric_names=scheduling.metric_names))
        self.health = new_health_servicer()
        self.grpc_port = 0
        self.health_port = 0
        self.metrics_port = 0
        self._grpc: grpc.aio.Server | None = None
        self._health_server: grpc.aio.Server | None = None
        self._metrics_runner: Any = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._ready = False

    async def start(self) -> None:
        cfg = self.config
        await set_ready(self.health, False)
        self._grpc = grpc.aio.server(options=grpc_options(cfg.max_body_bytes))
        ep_grpc.add_ExternalProcessorServicer_to_server(ExternalProcessor(self.director), self._grpc)
        eds_pb2_grpc.add_EndpointDiscoveryServiceServicer_to_server(
            EndpointDiscovery(self.datastore), self._grpc
        )
        # Status and token usage of routed requests come back through Envoy's access log.
        als_pb2_grpc.add_AccessLogServiceServicer_to_server(AccessLogReceiver(self.director), self._grpc)
        # Envoy health-checks the picker cluster with gRPC health on this (the ext_proc) port.
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._grpc)
        self.grpc_port = self._grpc.add_insecure_port(f"{cfg.host}:{cfg.grpc_port}")
        self._health_server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._health_server)
        self.health_port = self._health_server.add_insecure_port(f"{cfg.host}:{cfg.health_port}")
        await self._grpc.start()
        await self._health_server.start()
        if cfg.metrics_port is not None:
            self._metrics_runner = await start_metrics_server(self.metrics, cfg.host, cfg.metrics_port)
            self.metrics_port = int(self._metrics_runner.addresses[0][1])
        self._tasks = [
            asyncio.create_task(self.source.run(), name="source"),
            asyncio.create_task(self._follow_store(), name="datastore sync"),
            asyncio.create_task(self.scraper.run(), name="scraper"),
        ]
        # Everything loaded so far (modules, descriptors, clients) lives as long as the process: keep
        # it out of the collector's way so full collections under load stay short (p99 latency).
        gc.freeze()
        # Each request allocates a few hundred short-lived objects: with the default first threshold
        # (700) a collection runs every few requests. Rarer ones cost less in all (measured in
        # hack/bench/picker.py: about 5% more requests/s) for a few MB more at most.
        gc.set_threshold(20_000, 20, 50)
        log.info(
            "picker started",
            grpc_port=self.grpc_port,
            health_port=self.health_port,
            metrics_port=self.metrics_port,
            service=cfg.service_name,
            namespace=cfg.namespace,
        )

    async def _follow_store(self) -> None:
        await self.source.wait_synced()
        version = -1
        while True:
            snapshot = await self.store.wait_for_change(version)
            version = snapshot.version
            self.datastore.sync(snapshot)
            if not self._ready:
                self._ready = True
                await set_ready(self.health, True)

    def scraped_once(self) -> bool:
        """Pods are synced and every endpoint has been scraped once (tests and benchmarks poll this)."""
        return (
            self.datastore.synced
            and self.datastore.models_settled()
            and all(s.metrics_at is not None for s in self.datastore.endpoint_states().values())
        )

    async def stop(self) -> None:
        self.source.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._grpc is not None:
            await self._grpc.stop(grace=0.5)
        if self._health_server is not None:
            await self._health_server.stop(grace=None)
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()

    async def wait_closed(self) -> None:
        if self._grpc is not None:
            await self._grpc.wait_for_termination()


async def serve(config: PickerConfig) -> None:
    """Run until cancelled (SIGINT/SIGTERM handled by the caller)."""
    server = PickerServer(config)
    await server.start()
    try:
        await server.wait_closed()
    finally:
        await server.stop()


def configure_logging(fmt: str = "console", level: str = "info") -> None:
    import logging

    processors: Sequence[Any] = (
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso"),
        structlog.processors.format_exc_info,
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False),
    )
    structlog.configure(
        processors=list(processors),
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper(), logging.INFO)),
        cache_logger_on_first_use=True,
    )
