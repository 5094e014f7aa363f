"""The scraper on its own against a real local HTTP server: metrics, models, dead and slow pods."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest_asyncio
from aiohttp import web

from api.sources.store import ObjectStore
from picker.datastore import Datastore, EndpointState
from picker.scheduling.types import ServedModels
from picker.scrape import ScrapeConfig, Scraper
from tests.ports import free_port

NS = "default"


class Pod:
    """A vLLM-shaped /metrics and /v1/models whose behaviour a test switches: ok, hang or 500."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.mode = "ok"
        self.waiting = 3
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/v1/models", self._models)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def _answer(self, text: str) -> web.Response:
        if self.mode == "hang":
            await asyncio.sleep(30)
        if self.mode == "500":
            return web.Response(status=500, text="boom")
        return web.Response(text=text, content_type="text/plain")

    async def _metrics(self, _: web.Request) -> web.Response:
        labels = 'engine="0",model_name="base"'
        return await self._answer(
            f"vllm:num_requests_running{{{labels}}} 1.0\n"
            f"vllm:num_requests_waiting{{{labels}}} {float(self.waiting)}\n"
            f"vllm:kv_cache_usage_perc{{{labels}}} 0.25\n"
        )

    async def _models(self, _: web.Request) -> web.Response:
        return await self._answer(
            '{"object":"list","data":[{"id":"base","parent":null},{"id":"ad-1","parent":"base"}]}'
        )


class Rig:
    def __init__(self, pod: Pod, datastore: Datastore) -> None:
        self.pod = pod
        self.datastore = datastore
        self.address = f"127.0.0.1:{pod.port}"

    @property
    def state(self) -> EndpointState:
        return self.datastore.endpoint_states()[self.address]

    def eligible(self) -> bool:
        return self.datastore.is_fresh(self.state.frozen(self.datastore.clock()))


async def _until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def _objects(port: int) -> list[dict[str, object]]:
    pool: dict[str, object] = {
        "apiVersion": "inference.networking.x-k8s.io/v1alpha1",
        "kind": "InferencePool",
        "metadata": {"name": "pool", "namespace": NS},
        "spec": {"targetPortNumber": port, "selector": {"app": "m"}, "extensionRef": {"name": "picker"}},
    }
    pod: dict[str, object] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": NS, "labels": {"app": "m"}},
        "status": {"podIP": "127.0.0.1"},
    }
    return [pool, pod]


@pytest_asyncio.fixture
async def rig() -> AsyncIterator[Rig]:
    pod = Pod(free_port())
    await pod.start()
    store = ObjectStore()
    store.apply(upserts=_objects(pod.port))
    datastore = Datastore("picker", NS)
    datastore.sync(store.snapshot())
    scraper = Scraper(datastore, ScrapeConfig(metrics_interval_s=0.02, models_interval_s=0.2, timeout_s=0.5))
    task = asyncio.create_task(scraper.run())
    try:
        yield Rig(pod, datastore)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await pod.stop()


async def test_metrics_and_models_reach_the_datastore(rig: Rig) -> None:
    await _until(lambda: rig.state.metrics is not None and rig.state.served is not None)
    assert rig.state.served == ServedModels(frozenset({"base"}), frozenset({"ad-1"}))
    metrics = rig.state.metrics
    assert metrics is not None and (metrics.running, metrics.waiting, metrics.kv_cache_usage) == (1, 3, 0.25)
    assert rig.eligible()
    rig.pod.waiting = 9
    await _until(lambda: rig.state.metrics is not None and rig.state.metrics.waiting == 9)


async def test_a_dead_pod_is_ineligible_at_once_and_recovers(rig: Rig) -> None:
    rig.datastore.staleness_s = 3600.0  # age cannot make it ineligible here: only the refusal can
    await _until(rig.eligible)
    await rig.pod.stop()  # connections refused from now on
    await _until(lambda: not rig.eligible())
    assert rig.state.unreachable
    await rig.pod.start()
    await _until(rig.eligible)
    assert not rig.state.unreachable


async def test_a_hanging_pod_is_left_to_staleness(rig: Rig) -> None:
    await _until(rig.eligible)
    rig.pod.mode = "hang"
    last = rig.state.metrics_at
    await asyncio.sleep(0.8)  # beyond the 0.5 s scrape timeout: at least one scrape timed out
    assert rig.state.metrics_at == last  # no new metrics ...
    assert not rig.state.unreachable  # ... but a slow answer is not a dead pod
    rig.datastore.staleness_s = 0.5
    assert not rig.eligible()  # age decides


async def test_an_error_status_is_not_unreachable(rig: Rig) -> None:
    await _until(rig.eligible)
    rig.pod.mode = "500"
    last = rig.state.metrics_at
    await asyncio.sleep(0.2)
    assert rig.state.metrics_at == last
    assert not rig.state.unreachable
    assert rig.state.served is not None  # a failed /v1/models keeps the last good answer
    rig.pod.mode = "ok"
    await _until(lambda: rig.state.metrics_at != last)


async def test_tasks_follow_the_endpoints(rig: Rig) -> None:
    await _until(rig.eligible)
    rig.datastore.sync(ObjectStore().snapshot())  # the pod is gone
    assert rig.address not in rig.datastore.endpoint_states()
    store = ObjectStore()
    store.apply(upserts=_objects(rig.pod.port))
    rig.datastore.sync(store.snapshot())  # back: a fresh endpoint, scraped anew
    await _until(lambda: rig.address in rig.datastore.endpoint_states() and rig.eligible())
