"""parse_pod and Snapshot.pods_for_pool: readiness, termination, namespace and selector."""

from __future__ import annotations

import pytest

from api.sources import ObjectStore, parse_pod
from tests.k8s_fake_server import pod, pool_v1alpha2


def test_parse_pod_reads_ip_ready_ports_labels() -> None:
    p = parse_pod(pod("a", {"app": "x", "tier": "gpu"}, ip="10.1.2.3"))
    assert p.key == "default/a"
    assert p.ip == "10.1.2.3"
    assert p.ready and not p.terminating
    assert p.container_ports == (8000,)
    assert p.label_map == {"app": "x", "tier": "gpu"}


def test_parse_pod_terminating_and_not_ready() -> None:
    assert parse_pod(pod("a", {}, terminating=True)).terminating
    assert not parse_pod(pod("a", {}, ready=False)).ready


def test_local_manifest_with_only_pod_ip_is_ready() -> None:
    p = parse_pod(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "sim-0", "labels": {"app": "x"}},
            "status": {"podIP": "127.0.0.2"},
        }
    )
    assert p.ready and p.ip == "127.0.0.2" and p.meta.namespace == "default"
    pending = parse_pod({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sim-1"}, "status": {}})
    assert not pending.ready


def test_parse_pod_requires_name() -> None:
    with pytest.raises(ValueError, match=r"metadata\.name"):
        parse_pod({"apiVersion": "v1", "kind": "Pod", "metadata": {}})


def test_pods_for_pool_selects_ready_matching_pods_in_namespace() -> None:
    store = ObjectStore()
    store.upsert(pool_v1alpha2("pool", {"app": "vllm"}))
    store.upsert(pod("ok-b", {"app": "vllm", "extra": "1"}, ip="10.0.0.2"))
    store.upsert(pod("ok-a", {"app": "vllm"}, ip="10.0.0.1"))
    store.upsert(pod("not-ready", {"app": "vllm"}, ready=False))
    store.upsert(pod("terminating", {"app": "vllm"}, terminating=True))
    store.upsert(pod("other-labels", {"app": "other"}))
    store.upsert(pod("other-ns", {"app": "vllm"}, namespace="ns2"))
    store.upsert(pod("no-ip", {"app": "vllm"}, ip=""))
    snap = store.snapshot()
    chosen = snap.pods_for_pool(snap.pools["default/pool"])
    assert [p.meta.name for p in chosen] == ["ok-a", "ok-b"]


def test_pod_becoming_unready_leaves_the_pool() -> None:
    store = ObjectStore()
    store.upsert(pool_v1alpha2("pool", {"app": "vllm"}))
    store.upsert(pod("a", {"app": "vllm"}))
    pool = store.snapshot().pools["default/pool"]
    assert len(store.snapshot().pods_for_pool(pool)) == 1
    store.upsert(pod("a", {"app": "vllm"}, ready=False))
    assert store.snapshot().pods_for_pool(pool) == ()
