"""KubernetesSource against tests/k8s_fake_server.py.

No kube-apiserver can run on this machine, so the fake is a real local HTTP server that speaks the
real list/watch protocol (paged lists, chunked JSON-line watch streams with bookmarks, 410 Gone as
an ERROR event or HTTP status, abrupt disconnects); the source talks to it through a real
`kubernetes.client.ApiClient`. Nothing here asserts timings: tests wait for conditions.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from api.sources import MODEL_KINDS, POD_KIND, POOL_KINDS, KubernetesSource, ObjectStore, Snapshot
from tests.k8s_fake_server import FakeKubeApi, model_v1alpha2, pod, pool_v1alpha2

X2 = "inference.networking.x-k8s.io/v1alpha2"
MODELS_PATH = f"/apis/{X2}/inferencemodels"
POOLS_PATH = f"/apis/{X2}/inferencepools"


@pytest.fixture
def fake() -> Iterator[FakeKubeApi]:
    server = FakeKubeApi()
    # Only the v1alpha2 CRDs are "installed": v1alpha1 and GA pools answer 404.
    server.serve(X2, "inferencepools")
    server.serve(X2, "inferencemodels")
    server.serve("v1", "pods")
    server.start()
    server.put(pool_v1alpha2("pool", {"app": "vllm"}))
    server.put(model_v1alpha2("m1", "llama", "pool"))
    server.put(pod("p1", {"app": "vllm"}, ip="10.0.0.1"))
    yield server
    server.stop()


@pytest.fixture
async def source(fake: FakeKubeApi) -> AsyncIterator[KubernetesSource]:
    api = fake.api_client()
    src = KubernetesSource(
        api,
        ObjectStore(),
        kinds=(*POOL_KINDS, *MODEL_KINDS, POD_KIND),
        namespace=None,
        backoff_initial=0.05,
        backoff_max=0.5,
        missing_retry=0.5,
        watch_timeout=30,
        request_timeout=10,
    )
    task = asyncio.create_task(src.run())
    await asyncio.wait_for(src.wait_synced(), 30)
    yield src
    src.stop()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    api.close()


async def wait_for(src: KubernetesSource, check: Callable[[Snapshot], bool]) -> Snapshot:
    async def loop() -> Snapshot:
        snap = src.store.snapshot()
        while not check(snap):
            snap = await src.store.wait_for_change(snap.version, timeout=0.5)
        return snap

    return await asyncio.wait_for(loop(), timeout=30)


async def wait_until(check: Callable[[], bool]) -> None:
    async def loop() -> None:
        while not check():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(loop(), timeout=30)


async def test_initial_list_fills_the_store_and_missing_crds_are_not_fatal(source: KubernetesSource) -> None:
    snap = source.store.snapshot()
    assert set(snap.pools) == {"default/pool"}
    assert set(snap.models) == {"default/m1"}
    assert [p.ip for p in snap.pods_for_pool(snap.pools["default/pool"])] == ["10.0.0.1"]
    assert not snap.invalid


async def test_watch_applies_added_modified_deleted(fake: FakeKubeApi, source: KubernetesSource) -> None:
    fake.put(model_v1alpha2("m2", "qwen", "pool"))
    await wait_for(source, lambda s: "default/m2" in s.models)
    fake.put(model_v1alpha2("m2", "gemma", "pool"))
    await wait_for(
        source, lambda s: "default/m2" in s.models and s.models["default/m2"].model_name == "gemma"
    )
    fake.remove(X2, "inferencemodels", "default", "m2")
    await wait_for(source, lambda s: "default/m2" not in s.models)
    fake.put(pod("p1", {"app": "vllm"}, ip="10.0.0.1", ready=False))
    snap = await wait_for(source, lambda s: not s.pods["default/p1"].ready)
    assert snap.pods_for_pool(snap.pools["default/pool"]) == ()


@pytest.mark.parametrize("as_http_status", [False, True], ids=["error-event", "http-410"])
async def test_gone_forces_a_relist(
    fake: FakeKubeApi, source: KubernetesSource, as_http_status: bool
) -> None:
    fake.http_410 = as_http_status
    lists_before = fake.count("GET", MODELS_PATH, watch=False)
    # A deletion whose event was compacted away: only a relist can notice it.
    fake.remove(X2, "inferencemodels", "default", "m1", record_event=False)
    fake.expire_history(X2, "inferencemodels")
    fake.drop_watches()
    await wait_for(source, lambda s: "default/m1" not in s.models)
    assert fake.count("GET", MODELS_PATH, watch=False) > lists_before
    # And the watch resumes after the relist.
    fake.put(model_v1alpha2("m3", "phi", "pool"))
    await wait_for(source, lambda s: "default/m3" in s.models)


async def test_dropped_watch_reconnects_without_relisting(
    fake: FakeKubeApi, source: KubernetesSource
) -> None:
    await wait_until(lambda: fake.count("GET", MODELS_PATH, watch=True) >= 1)
    lists_before = fake.count("GET", MODELS_PATH, watch=False)
    watches_before = fake.count("GET", MODELS_PATH, watch=True)
    fake.drop_watches()
    await wait_until(lambda: fake.count("GET", MODELS_PATH, watch=True) > watches_before)
    fake.put(model_v1alpha2("m4", "mistral", "pool"))
    await wait_for(source, lambda s: "default/m4" in s.models)
    assert fake.count("GET", MODELS_PATH, watch=False) == lists_before


async def test_bookmark_advances_the_resume_point(fake: FakeKubeApi, source: KubernetesSource) -> None:
    await wait_until(lambda: fake.count("GET", MODELS_PATH, watch=True) >= 1)
    lists_before = fake.count("GET", MODELS_PATH, watch=False)
    bookmark_rv = fake.bookmark(X2, "inferencemodels")
    await wait_until(lambda: fake.delivered.get((X2, "inferencemodels"), 0) >= bookmark_rv)
    # Once the client resumes from the bookmark, compacting history below it must not cost a relist.
    watches = fake.count("GET", MODELS_PATH, watch=True)
    fake.drop_watches()
    await wait_until(lambda: fake.count("GET", MODELS_PATH, watch=True) > watches)
    resumed = [q for m, p, q in fake.requests if p == MODELS_PATH and q.get("watch") == "true"][-1]
    assert resumed["resourceVersion"] == str(bookmark_rv)
    assert fake.count("GET", MODELS_PATH, watch=False) == lists_before


async def test_fresh_snapshot_sees_changes_the_watch_has_not_delivered(
    fake: FakeKubeApi, source: KubernetesSource
) -> None:
    with fake.holding_events():
        fake.put(model_v1alpha2("m1", "renamed", "pool"))
        fake.put(model_v1alpha2("m5", "new", "pool"))
        fake.remove(X2, "inferencepools", "default", "pool")
        assert source.store.snapshot().models["default/m1"].model_name == "llama"  # watch still lagging
        snap = await source.fresh_snapshot()
        assert snap.models["default/m1"].model_name == "renamed"
        assert "default/m5" in snap.models
        assert "default/pool" not in snap.pools
    # The late watch events then change nothing that matters.
    await asyncio.sleep(0)
    snap = source.store.snapshot()
    assert snap.models["default/m1"].model_name == "renamed" and "default/pool" not in snap.pools


async def test_crd_installed_later_is_picked_up(fake: FakeKubeApi, source: KubernetesSource) -> None:
    ga = "inference.networking.k8s.io/v1"
    fake.serve(ga, "inferencepools")
    fake.put(
        {
            "apiVersion": ga,
            "kind": "InferencePool",
            "metadata": {"name": "ga-pool", "namespace": "default"},
            "spec": {
                "selector": {"matchLabels": {"app": "ga"}},
                "targetPorts": [{"number": 8000}],
                "endpointPickerRef": {"name": "picker", "port": {"number": 9002}},
            },
        }
    )
    await wait_for(source, lambda s: "default/ga-pool" in s.pools)


async def test_namespaced_source_only_sees_its_namespace(fake: FakeKubeApi) -> None:
    fake.serve("v1", "pods")
    fake.put(pod("other", {"app": "vllm"}, namespace="ns2"))
    api = fake.api_client()
    src = KubernetesSource(api, kinds=(POD_KIND,), namespace="ns2", backoff_initial=0.05)
    task = asyncio.create_task(src.run())
    try:
        await asyncio.wait_for(src.wait_synced(), 30)
        assert set(src.store.snapshot().pods) == {"ns2/other"}
        assert fake.count("GET", "/api/v1/namespaces/ns2/pods", watch=False) >= 1
    finally:
        src.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        api.close()
