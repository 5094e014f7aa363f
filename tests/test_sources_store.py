"""ObjectStore and Snapshot: dispatch by kind, invalid objects, versions, waiting, oldest-wins order."""

from __future__ import annotations

import asyncio
import threading

from api.sources import ObjectStore, Snapshot
from tests.k8s_fake_server import model_v1alpha2, pod, pool_v1alpha2

GA_POOL = {
    "apiVersion": "inference.networking.k8s.io/v1",
    "kind": "InferencePool",
    "metadata": {"name": "pool", "namespace": "default", "creationTimestamp": "2024-06-01T00:00:00Z"},
    "spec": {
        "selector": {"matchLabels": {"app": "b"}},
        "targetPorts": [{"number": 8000}],
        "endpointPickerRef": {"name": "picker", "port": {"number": 9002}},
    },
}


def test_dispatches_our_kinds_pods_and_others() -> None:
    store = ObjectStore()
    store.upsert(pool_v1alpha2("pool", {"app": "a"}))
    store.upsert(model_v1alpha2("m", "llama", "pool"))
    store.upsert(pod("p1", {"app": "a"}))
    store.upsert(
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "gw", "namespace": "default"},
        }
    )
    snap = store.snapshot()
    assert set(snap.pools) == {"default/pool"}
    assert set(snap.models) == {"default/m"}
    assert set(snap.pods) == {"default/p1"}
    assert [o["metadata"]["name"] for o in snap.others_of_kind("Gateway")] == ["gw"]
    assert not snap.invalid


def test_invalid_object_is_recorded_and_removed_from_valid_set() -> None:
    store = ObjectStore()
    store.upsert(model_v1alpha2("m", "llama", "pool"))
    assert "default/m" in store.snapshot().models
    broken = model_v1alpha2("m", "llama", "pool")
    del broken["spec"]["modelName"]
    store.upsert(broken)
    snap = store.snapshot()
    assert "default/m" not in snap.models
    assert any("spec.modelName" in e for e in snap.invalid["InferenceModel default/m"])
    store.upsert(model_v1alpha2("m", "llama", "pool"))  # fixed again
    snap = store.snapshot()
    assert "default/m" in snap.models and not snap.invalid


def test_version_bumps_only_on_effective_change() -> None:
    store = ObjectStore()
    assert store.snapshot().version == 0
    assert store.upsert(pool_v1alpha2("pool", {"app": "a"}))
    assert store.snapshot().version == 1
    assert not store.upsert(pool_v1alpha2("pool", {"app": "a"}))
    assert store.snapshot().version == 1
    assert store.upsert(pool_v1alpha2("pool", {"app": "b"}))
    assert store.snapshot().version == 2
    assert not store.delete("inference.networking.x-k8s.io/v1alpha2", "InferencePool", "default", "other")
    assert store.delete("inference.networking.x-k8s.io/v1alpha2", "InferencePool", "default", "pool")
    assert store.snapshot().version == 3


def test_snapshot_is_cached_until_change() -> None:
    store = ObjectStore()
    store.upsert(pool_v1alpha2("pool", {"app": "a"}))
    first = store.snapshot()
    assert store.snapshot() is first
    store.upsert(pool_v1alpha2("pool2", {"app": "a"}))
    assert store.snapshot() is not first
    assert set(first.pools) == {"default/pool"}  # old snapshots never change


def test_replace_all_scoped_by_kind_and_namespace() -> None:
    store = ObjectStore()
    store.upsert(pool_v1alpha2("a", {"app": "a"}, namespace="ns1"))
    store.upsert(pool_v1alpha2("b", {"app": "a"}, namespace="ns2"))
    store.upsert(model_v1alpha2("m", "llama", "a", namespace="ns1"))
    changed = store.replace_all(
        "inference.networking.x-k8s.io/v1alpha2",
        "InferencePool",
        [pool_v1alpha2("c", {"app": "a"}, namespace="ns1")],
        namespace="ns1",
    )
    assert changed
    snap = store.snapshot()
    assert set(snap.pools) == {"ns1/c", "ns2/b"}
    assert set(snap.models) == {"ns1/m"}
    version = snap.version
    assert not store.replace_all(
        "inference.networking.x-k8s.io/v1alpha2",
        "InferencePool",
        [pool_v1alpha2("c", {"app": "a"}, namespace="ns1")],
        namespace="ns1",
    )
    assert store.snapshot().version == version


def test_reconcile_keeps_newer_watch_state() -> None:
    store = ObjectStore()
    newer = pool_v1alpha2("a", {"app": "new"})
    newer["metadata"]["resourceVersion"] = "20"
    store.upsert(newer)
    added_after_list = pool_v1alpha2("late", {"app": "x"})
    added_after_list["metadata"]["resourceVersion"] = "25"
    store.upsert(added_after_list)
    stale = pool_v1alpha2("a", {"app": "old"})
    stale["metadata"]["resourceVersion"] = "10"
    store.reconcile(
        "inference.networking.x-k8s.io/v1alpha2", "InferencePool", [stale], list_resource_version="15"
    )
    snap = store.snapshot()
    assert snap.pools["default/a"].selector == (("app", "new"),)
    assert "default/late" in snap.pools
    # A list newer than the stored state wins, and drops what it no longer has.
    fresh = pool_v1alpha2("a", {"app": "newest"})
    fresh["metadata"]["resourceVersion"] = "30"
    store.reconcile(
        "inference.networking.x-k8s.io/v1alpha2", "InferencePool", [fresh], list_resource_version="31"
    )
    snap = store.snapshot()
    assert snap.pools["default/a"].selector == (("app", "newest"),)
    assert "default/late" not in snap.pools


def test_models_for_pool_oldest_first() -> None:
    store = ObjectStore()
    store.upsert(model_v1alpha2("young", "llama", "pool", created="2024-03-01T00:00:00Z"))
    store.upsert(model_v1alpha2("old", "llama", "pool", created="2024-01-01T00:00:00Z"))
    store.upsert(model_v1alpha2("b-same", "llama", "pool", created="2024-02-01T00:00:00Z"))
    store.upsert(model_v1alpha2("a-same", "llama", "pool", created="2024-02-01T00:00:00Z"))
    store.upsert(model_v1alpha2("elsewhere", "llama", "other-pool"))
    store.upsert(model_v1alpha2("other-ns", "llama", "pool", namespace="ns2"))
    names = [m.meta.name for m in store.snapshot().models_for_pool("default/pool")]
    assert names == ["old", "a-same", "b-same", "young"]


def test_same_name_in_two_groups_oldest_wins_and_loser_reported() -> None:
    store = ObjectStore()
    store.upsert(pool_v1alpha2("pool", {"app": "a"}, created="2024-01-01T00:00:00Z"))
    store.upsert(GA_POOL)
    snap = store.snapshot()
    assert snap.pools["default/pool"].api_version == "inference.networking.x-k8s.io/v1alpha2"
    assert "InferencePool default/pool (inference.networking.k8s.io/v1)" in snap.invalid


def test_same_object_served_in_two_versions_collapses_to_newest_version() -> None:
    store = ObjectStore()
    v1 = pool_v1alpha2("pool", {"app": "a"}, created="2024-01-01T00:00:00Z")
    v1["metadata"]["uid"] = "u1"
    v1["apiVersion"] = "inference.networking.x-k8s.io/v1alpha1"
    v2 = pool_v1alpha2("pool", {"app": "a"}, created="2024-01-01T00:00:00Z")
    v2["metadata"]["uid"] = "u1"
    store.upsert(v1)
    store.upsert(v2)
    snap = store.snapshot()
    assert snap.pools["default/pool"].api_version == "inference.networking.x-k8s.io/v1alpha2"
    assert not snap.invalid


def test_pools_for_picker() -> None:
    store = ObjectStore()
    store.upsert(pool_v1alpha2("a", {"app": "a"}, picker="epp"))
    store.upsert(pool_v1alpha2("b", {"app": "b"}, picker="epp"))
    store.upsert(pool_v1alpha2("c", {"app": "c"}, picker="other"))
    store.upsert(pool_v1alpha2("d", {"app": "d"}, picker="epp", namespace="ns2"))
    snap = store.snapshot()
    assert [p.meta.name for p in snap.pools_for_picker("epp", "default")] == ["a", "b"]
    assert [p.meta.name for p in snap.pools_for_picker("epp", "ns2")] == ["d"]


async def test_wait_for_change_wakes_on_write_from_another_thread() -> None:
    store = ObjectStore()
    start = store.snapshot().version
    waiter = asyncio.create_task(store.wait_for_change(start, timeout=30))
    await asyncio.sleep(0)
    assert not waiter.done()
    threading.Thread(target=store.upsert, args=(pool_v1alpha2("pool", {"app": "a"}),)).start()
    snap = await waiter
    assert snap.version > start
    assert "default/pool" in snap.pools


async def test_wait_for_change_returns_at_once_when_already_newer_and_on_timeout() -> None:
    store = ObjectStore()
    store.upsert(pool_v1alpha2("pool", {"app": "a"}))
    assert (await store.wait_for_change(0, timeout=30)).version == 1
    snap = await store.wait_for_change(1, timeout=0.01)
    assert snap.version == 1


def test_subscribers_get_each_change() -> None:
    store = ObjectStore()
    seen: list[Snapshot] = []
    unsubscribe = store.subscribe(seen.append)
    store.upsert(pool_v1alpha2("pool", {"app": "a"}))
    store.upsert(pool_v1alpha2("pool", {"app": "a"}))  # no change: no call
    assert [s.version for s in seen] == [1]
    unsubscribe()
    store.upsert(pool_v1alpha2("pool2", {"app": "a"}))
    assert len(seen) == 1


def test_both_sources_satisfy_the_source_protocol() -> None:
    from kubernetes.client import ApiClient, Configuration

    from api.sources import FileSource, KubernetesSource, Source

    api = ApiClient(Configuration(host="http://127.0.0.1:1"))
    try:
        assert isinstance(FileSource([]), Source)
        assert isinstance(KubernetesSource(api), Source)
    finally:
        api.close()
