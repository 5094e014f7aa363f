"""Polls every endpoint's /metrics (every 50 ms) and /v1/models (on first sight, then every second).

One asyncio task per endpoint, each with its own kept-alive connections (picker/modelserver/http.py)
and short timeouts; tasks start and stop as the datastore's endpoints change. A scrape that cannot
connect (refused, reset, connect timeout) marks the endpoint unreachable at once; a slow or hanging
scrape only ages its metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

import structlog

from picker.datastore import Datastore
from picker.modelserver.http import EndpointClient, Unreachable
from picker.modelserver.names import VLLM, MetricNames
from picker.modelserver.parse import parse_metrics, parse_models
from picker.scheduling.types import PodMetrics, ServedModels

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ScrapeConfig:
    metrics_interval_s: float = 0.05
    models_interval_s: float = 1.0
    timeout_s: float = 1.0
    connect_timeout_s: float = 0.25
    metrics_path: str = "/metrics"
    models_path: str = "/v1/models"
    scheme: str = "http"
    metric_names: MetricNames = VLLM  # which metric names the model servers expose


class Scraper:
    """Keeps one polling task per endpoint of `datastore`."""

    def __init__(self, datastore: Datastore, config: ScrapeConfig | None = None) -> None:
        self.datastore = datastore
        self.config = config or ScrapeConfig()
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}

    async def run(self) -> None:
        """Follow the datastore until cancelled."""
        version = -1
        try:
            while True:
                version = await self.datastore.wait_for_change(version)
                self._reconcile()
        finally:
            await self.close()

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    def _reconcile(self) -> None:
        wanted = {(a, s.pod) for a, s in self.datastore.endpoint_states().items()}
        for key in list(self._tasks):
            if key not in wanted:
                self._tasks.pop(key).cancel()
        for key in wanted:
            if key not in self._tasks:
                self._tasks[key] = asyncio.create_task(self._poll(key[0]), name=f"scrape {key[0]}")

    async def _poll(self, address: str) -> None:
        client = EndpointClient(
            address,
            use_tls=self.config.scheme == "https",
            connect_timeout_s=self.config.connect_timeout_s,
            timeout_s=self.config.timeout_s,
        )
        try:
            await self._poll_with(address, client)
        finally:
            client.close()

    async def _poll_with(self, address: str, client: EndpointClient) -> None:
        cfg = self.config
        next_models = 0.0
        failures = 0
        while True:
            started = time.monotonic()
            want_models = started >= next_models
            if want_models:
                fetched, served = await asyncio.gather(
                    self._fetch_metrics(client, cfg.metrics_path), self._fetch_models(client, cfg.models_path)
                )
                self.datastore.record_models(address, served)
                next_models = started + cfg.models_interval_s
            else:
                fetched = await self._fetch_metrics(client, cfg.metrics_path)
            if isinstance(fetched, PodMetrics):
                self.datastore.record_metrics(address, fetched)
                if failures:
                    log.info("scrape recovered", endpoint=address, after_failures=failures)
                failures = 0
            else:
                if fetched is UNREACHABLE:
                    self.datastore.record_unreachable(address)
                failures += 1
                if failures in (1, 40) or failures % 1000 == 0:
                    log.warning(
                        "scrape failed",
                        endpoint=address,
                        failures=failures,
                        unreachable=fetched is UNREACHABLE,
                    )
            # Back off a failing endpoint up to 1 s so a dead pod costs little.
            interval = cfg.metrics_interval_s if not failures else min(1.0, cfg.metrics_interval_s * failures)
            await asyncio.sleep(max(0.0, started + interval - time.monotonic()))

    async def _fetch_text(self, client: EndpointClient, path: str) -> bytes | _Unreachable | None:
        """The body of a 200 answer; UNREACHABLE if no connection could be used; None otherwise."""
        # One immediate retry: a kept-alive connection the server just closed fails without
        # meaning the pod is gone, and a fresh connection tells the two apart.
        outcome = await self._fetch_once(client, path)
        if outcome is UNREACHABLE:
            outcome = await self._fetch_once(client, path)
        return outcome

    @staticmethod
    async def _fetch_once(client: EndpointClient, path: str) -> bytes | _Unreachable | None:
        try:
            response = await client.get(path)
        except Unreachable:
            return UNREACHABLE  # refused, reset, connect timeout, dropped mid-answer
        except TimeoutError:
            return None  # connected, but the answer is slow: staleness decides
        except OSError:
            return None
        return response.body if response.status == 200 else None

    async def _fetch_metrics(self, client: EndpointClient, path: str) -> PodMetrics | _Unreachable | None:
        body = await self._fetch_text(client, path)
        if not isinstance(body, bytes):
            return body
        try:
            return parse_metrics(body.decode("utf-8", "replace"), self.config.metric_names)
        except Exception:
            log.warning("unparseable /metrics", endpoint=client.host, path=path, exc_info=True)
            return None

    async def _fetch_models(self, client: EndpointClient, path: str) -> ServedModels | None:
        body = await self._fetch_text(client, path)
        if not isinstance(body, bytes):
            return None
        try:
            return parse_models(body)
        except Exception:
            log.warning("unparseable /v1/models", endpoint=client.host, path=path, exc_info=True)
            return None


class _Unreachable:
    """Marker: the scrape could not connect or the connection broke."""

    def __repr__(self) -> str:
        return "UNREACHABLE"


UNREACHABLE = _Unreachable()
