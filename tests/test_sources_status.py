"""Status conditions: the pure placement rules per kind/version, and KubernetesConditionWriter against the
fake API server (tests/k8s_fake_server.py: no kube-apiserver can run here, the fake speaks the real
GET + merge-patch status protocol)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog.testing

from api.sources import (
    ConditionUpdate,
    KubernetesConditionWriter,
    LogConditionWriter,
    ParentRef,
    with_condition,
)
from api.sources.status import PoolRef
from tests.k8s_fake_server import FakeKubeApi, model_v1alpha2, pool_v1alpha2

X1 = "inference.networking.x-k8s.io/v1alpha1"
X2 = "inference.networking.x-k8s.io/v1alpha2"
GA = "inference.networking.k8s.io/v1"
NOW = "2025-01-01T00:00:00Z"
LATER = "2025-01-02T00:00:00Z"
GW = ParentRef(name="gw", namespace="default")


def cond(
    status: str = "True", reason: str = "Accepted", message: str = "ok", gen: int = 1
) -> dict[str, object]:
    return {
        "type": "Accepted",
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": gen,
    }


def test_model_condition_goes_to_status_conditions_and_replaces_the_pending_default() -> None:
    status = {
        "conditions": [{"type": "Ready", "status": "Unknown", "reason": "Pending", "message": "Waiting"}]
    }
    out = with_condition(status, "InferenceModel", X2, cond(), None, None, NOW)
    assert out == {"conditions": [{**cond(), "lastTransitionTime": NOW}]}


def test_unchanged_condition_gives_none_and_transition_time_moves_only_on_status_change() -> None:
    first = with_condition({}, "InferenceModel", X1, cond(), None, None, NOW)
    assert first is not None
    assert with_condition(first, "InferenceModel", X1, cond(), None, None, LATER) is None
    msg = with_condition(first, "InferenceModel", X1, cond(message="other"), None, None, LATER)
    assert msg is not None and msg["conditions"][0]["lastTransitionTime"] == NOW
    flipped = with_condition(first, "InferenceModel", X1, cond("False", "ModelNameInUse"), None, None, LATER)
    assert flipped is not None and flipped["conditions"][0]["lastTransitionTime"] == LATER


def test_v1alpha2_pool_uses_status_parent_and_drops_the_placeholder() -> None:
    status = {"parent": [{"parentRef": {"kind": "Status", "name": "default"}, "conditions": []}]}
    out = with_condition(status, "InferencePool", X2, cond(), GW, None, NOW)
    assert out == {
        "parent": [{"parentRef": GW.as_dict(), "conditions": [{**cond(), "lastTransitionTime": NOW}]}]
    }


def test_v1_pool_uses_status_parents_with_controller_name_and_keeps_other_parents() -> None:
    other = {
        "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "x"},
        "conditions": [],
    }
    out = with_condition({"parents": [other]}, "InferencePool", GA, cond(), GW, "example.com/ctl", NOW)
    assert out is not None
    assert out["parents"][0] == other
    assert out["parents"][1]["controllerName"] == "example.com/ctl"
    assert out["parents"][1]["parentRef"] == GW.as_dict()


def test_v1_pool_needs_a_parent() -> None:
    with pytest.raises(ValueError, match="parent"):
        with_condition({}, "InferencePool", GA, cond(), None, None, NOW)


@pytest.fixture
def fake() -> Iterator[FakeKubeApi]:
    server = FakeKubeApi()
    server.serve(X2, "inferencepools")
    server.serve(X2, "inferencemodels")
    server.start()
    server.put(pool_v1alpha2("pool", {"app": "vllm"}))
    server.put(model_v1alpha2("m1", "llama", "pool"))
    yield server
    server.stop()


NAME_IN_USE = ConditionUpdate(
    "InferenceModel",
    X2,
    "default",
    "m1",
    "Accepted",
    "False",
    "ModelNameInUse",
    "modelName llama is used by m0",
    1,
)


async def test_kubernetes_writer_patches_status_once(fake: FakeKubeApi) -> None:
    api = fake.api_client()
    try:
        writer = KubernetesConditionWriter(api)
        path = f"/apis/{X2}/namespaces/default/inferencemodels/m1/status"
        await writer.set_condition(NAME_IN_USE)
        stored = fake.get(X2, "inferencemodels", "default", "m1")
        [condition] = stored["status"]["conditions"]
        assert (condition["type"], condition["status"], condition["reason"]) == (
            "Accepted",
            "False",
            "ModelNameInUse",
        )
        assert fake.count("PATCH", path) == 1
        await writer.set_condition(NAME_IN_USE)
        assert fake.count("PATCH", path) == 1  # nothing changed: no write
        # A fresh writer (e.g. after a restart) reads the object and still writes nothing.
        await KubernetesConditionWriter(api).set_condition(NAME_IN_USE)
        assert fake.count("PATCH", path) == 1

        await writer.set_condition(
            ConditionUpdate(
                "InferencePool", X2, "default", "pool", "Accepted", "True", "Accepted", "", 1, parent=GW
            )
        )
        pool = fake.get(X2, "inferencepools", "default", "pool")
        assert pool["status"]["parent"][0]["parentRef"] == GW.as_dict()
        assert pool["status"]["parent"][0]["conditions"][0]["status"] == "True"
    finally:
        api.close()


async def test_kubernetes_writer_ignores_deleted_objects(fake: FakeKubeApi) -> None:
    api = fake.api_client()
    try:
        await KubernetesConditionWriter(api).set_condition(
            ConditionUpdate("InferenceModel", X2, "default", "gone", "Accepted", "True", "Accepted", "", 1)
        )
        assert fake.count("PATCH", f"/apis/{X2}/namespaces/default/inferencemodels/gone/status") == 0
    finally:
        api.close()


async def test_log_writer_logs_each_change_once() -> None:
    writer = LogConditionWriter()
    with structlog.testing.capture_logs() as logs:
        await writer.set_condition(
            ConditionUpdate("InferenceModel", X2, "default", "m1", "Accepted", "True", "Accepted", "", 1)
        )
        await writer.set_condition(
            ConditionUpdate("InferenceModel", X2, "default", "m1", "Accepted", "True", "Accepted", "", 1)
        )
        await writer.set_condition(
            ConditionUpdate(
                "InferenceModel", X2, "default", "m1", "Accepted", "False", "ModelNameInUse", "", 1
            )
        )
    assert [(e["object"], e["status"], e["log_level"]) for e in logs] == [
        ("InferenceModel default/m1", "True", "info"),
        ("InferenceModel default/m1", "False", "warning"),
    ]


async def test_a_gateway_that_no_longer_routes_to_a_pool_leaves_its_status(fake: FakeKubeApi) -> None:
    api = fake.api_client()
    try:
        writer = KubernetesConditionWriter(api)
        other = ParentRef(name="other", namespace="default")
        for parent in (GW, other):
            await writer.set_condition(
                ConditionUpdate(
                    "InferencePool",
                    X2,
                    "default",
                    "pool",
                    "Accepted",
                    "True",
                    "Accepted",
                    "",
                    1,
                    parent=parent,
                )
            )
        await writer.remove_parent(PoolRef(X2, "default", "pool"), GW)
        pool = fake.get(X2, "inferencepools", "default", "pool")
        assert [p["parentRef"]["name"] for p in pool["status"]["parent"]] == ["other"]
        # A parent this writer never wrote (another controller's) is not touched.
        await KubernetesConditionWriter(api).remove_parent(PoolRef(X2, "default", "pool"), other)
        pool = fake.get(X2, "inferencepools", "default", "pool")
        assert [p["parentRef"]["name"] for p in pool["status"]["parent"]] == ["other"]
    finally:
        api.close()
