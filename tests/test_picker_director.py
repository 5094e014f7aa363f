"""The director on its own: a Datastore filled by hand, the real scheduler, no gRPC and no Envoy."""

from __future__ import annotations

import random
from collections.abc import Sequence

import orjson
import pytest

from api.contract import MetadataKey, Role
from api.model import Criticality
from api.sources.store import ObjectStore
from picker.datastore import Datastore
from picker.director import Director, Routed, RouteRequest
from picker.errors import PickerError
from picker.handlers.accesslog import Outcome
from picker.handlers.extproc.attributes import RequestAttributes
from picker.metrics import PickerMetrics
from picker.scheduling import build_scheduler
from picker.scheduling.types import (
    Decision,
    Endpoint,
    InferenceRequest,
    PodMetrics,
    Rejection,
    ServedModels,
)

NS = "default"
PORT = 8000
IPS = ("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4")


def _pool(name: str, app: str) -> dict[str, object]:
    return {
        "apiVersion": "inference.networking.x-k8s.io/v1alpha1",
        "kind": "InferencePool",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"targetPortNumber": PORT, "selector": {"app": app}, "extensionRef": {"name": "picker"}},
    }


def _pod(name: str, ip: str, app: str = "m") -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": app}},
        "status": {"podIP": ip},
    }


MODEL: dict[str, object] = {
    "apiVersion": "inference.networking.x-k8s.io/v1alpha1",
    "kind": "InferenceModel",
    "metadata": {"name": "lora", "namespace": NS},
    "spec": {
        "modelName": "lora-request",
        "poolRef": {"name": "pool"},
        "targetModels": [{"name": "ad-1", "weight": 1}],
    },
}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Rig:
    """Four endpoints serving `base` (the first two also adapter `ad-1`), all freshly scraped."""

    def __init__(self, *objects: dict[str, object]) -> None:
        self.clock = Clock()
        store = ObjectStore()
        store.apply(upserts=[_pool("pool", "m"), *(_pod(f"p{i}", ip) for i, ip in enumerate(IPS)), *objects])
        self.datastore = Datastore("picker", NS, clock=self.clock)
        self.datastore.sync(store.snapshot())
        for i, ip in enumerate(IPS):
            adapters = frozenset({"ad-1"}) if i < 2 else frozenset()
            self.datastore.record_models(f"{ip}:{PORT}", ServedModels(frozenset({"base"}), adapters))
            self.datastore.record_metrics(f"{ip}:{PORT}", PodMetrics(max_loras=4))
        self.metrics = PickerMetrics()
        self.director = Director(
            self.datastore, build_scheduler(rng=random.Random(7)), self.metrics, 1 << 20, rng=random.Random(7)
        )

    def route(
        self, model: str = "base", **request_fields: object
    ) -> tuple[Routed, tuple[str, ...], bytes | None]:
        request = RouteRequest(request_id="r1", path="/v1/completions", **request_fields)  # type: ignore[arg-type]
        routed = self.director.route(request, orjson.dumps({"model": model, "prompt": "hello"}))
        return routed, routed.endpoints, routed.body

    def in_flight(self) -> dict[str, int]:
        return {a: s.in_flight for a, s in self.datastore.endpoint_states().items() if s.in_flight}


def _target_cluster(target: str) -> RequestAttributes:
    return RequestAttributes(
        cluster_name=f"inference/{NS}/pool/{target}",
        cluster_metadata={
            MetadataKey.ROLE: Role.TARGET,
            MetadataKey.POOL_NAMESPACE: NS,
            MetadataKey.POOL_NAME: "pool",
            MetadataKey.TARGET_MODEL: target,
        },
    )


def test_routes_to_distinct_ready_endpoints_and_counts_in_flight() -> None:
    rig = Rig()
    routed, endpoints, body = rig.route()
    assert 1 <= len(endpoints) <= 3
    assert len(set(endpoints)) == len(endpoints)
    assert set(endpoints) <= {f"{ip}:{PORT}" for ip in IPS}
    assert body is None  # model unchanged: the body goes through as sent
    assert rig.in_flight() == {endpoints[0]: 1}
    routed.lease.release()
    routed.lease.release()  # a second end does not release twice
    assert rig.in_flight() == {}


def test_target_cluster_rewrites_the_model_and_picks_only_pods_serving_it() -> None:
    rig = Rig(MODEL)
    for _ in range(20):
        routed, endpoints, body = rig.route("lora-request", attributes=_target_cluster("ad-1"))
        assert set(endpoints) <= {f"{IPS[0]}:{PORT}", f"{IPS[1]}:{PORT}"}
        assert body is not None and orjson.loads(body) == {"model": "ad-1", "prompt": "hello"}
        routed.lease.release()


def test_catch_all_splits_by_the_inference_model() -> None:
    rig = Rig(MODEL)
    routed, _, body = rig.route("lora-request")
    assert routed.target == "ad-1"
    assert body is not None and orjson.loads(body)["model"] == "ad-1"


def test_unreachable_endpoint_is_never_chosen_until_scraped_again() -> None:
    rig = Rig()
    dead = f"{IPS[0]}:{PORT}"
    rig.datastore.record_unreachable(dead)
    for _ in range(30):
        routed, endpoints, _ = rig.route()
        assert dead not in endpoints  # neither primary nor fallback
        routed.lease.release()
    rig.datastore.record_metrics(dead, PodMetrics(max_loras=4))
    seen: set[str] = set()
    for _ in range(60):
        routed, endpoints, _ = rig.route()
        seen.update(endpoints)
        routed.lease.release()
    assert dead in seen


def test_stale_metrics_make_endpoints_ineligible() -> None:
    rig = Rig()
    rig.clock.now += 1.0
    fresh = f"{IPS[3]}:{PORT}"
    rig.datastore.record_metrics(fresh, PodMetrics(max_loras=4))
    rig.clock.now += 1.5  # the others are now 2.5 s old, beyond the 2 s limit
    _, endpoints, _ = rig.route()
    assert endpoints == (fresh,)
    rig.clock.now += 5
    with pytest.raises(PickerError) as caught:
        rig.route()
    assert caught.value.status == 503


def test_model_served_by_no_pod_is_404() -> None:
    rig = Rig()
    with pytest.raises(PickerError) as caught:
        rig.route("nobody-serves-this")
    assert caught.value.status == 404


def test_subset_hint_restricts_the_choice() -> None:
    rig = Rig()
    only = f"{IPS[2]}:{PORT}"
    _, endpoints, _ = rig.route(subset_hint=frozenset({only}))
    assert endpoints == (only,)
    with pytest.raises(PickerError) as caught:
        rig.route(subset_hint=frozenset({"10.9.9.9:8000"}))
    assert caught.value.status == 503


def test_pool_resolution_errors() -> None:
    rig = Rig()
    unknown = RequestAttributes(
        cluster_metadata={
            MetadataKey.POOL_NAMESPACE: NS,
            MetadataKey.POOL_NAME: "other",
            MetadataKey.ROLE: Role.CATCH_ALL,
        }
    )
    with pytest.raises(PickerError) as caught:
        rig.route(attributes=unknown)
    assert caught.value.status == 503
    store = ObjectStore()
    store.apply(upserts=[_pool("pool", "m"), _pool("pool2", "n"), _pod("a", IPS[0]), _pod("b", IPS[1], "n")])
    rig.datastore.sync(store.snapshot())
    with pytest.raises(PickerError) as caught:
        rig.route()  # no metadata and two pools: the picker cannot guess
    assert caught.value.status == 500


class _RepeatingScheduler:
    """Returns the same address several times (a misbehaving plugin)."""

    def schedule(self, request: InferenceRequest, endpoints: Sequence[Endpoint]) -> Decision | Rejection:
        first, second = endpoints[0].address, endpoints[1].address
        return Decision(endpoints=(first, first, second, first, second))

    def record(self, decision: Decision) -> None:
        pass


def test_fallbacks_are_distinct_even_if_the_scheduler_repeats() -> None:
    rig = Rig()
    rig.director.scheduler = _RepeatingScheduler()
    _, endpoints, _ = rig.route()
    assert len(endpoints) == 2 and len(set(endpoints)) == 2


def test_reject_counts_an_error_and_never_releases() -> None:
    rig = Rig()
    request = RouteRequest(request_id="r2", path="/v1/completions")
    with pytest.raises(PickerError) as caught:
        rig.director.route(request, b"{not json")
    rig.director.reject(caught.value)
    assert rig.in_flight() == {}
    assert b"inference_model_request_error_total" in rig.metrics.exposition()


def test_outcomes_from_the_access_log_count_errors_and_tokens_per_model_and_target() -> None:
    rig = Rig()
    registry = rig.metrics.registry
    labels = {"model_name": "alias", "target_model_name": "base", "pool": "default/pool"}

    def outcome(status: int | None, prompt: int | None, completion: int | None) -> Outcome:
        return Outcome("r", "default/pool", "alias", "base", "10.0.0.1:8000", status, prompt, completion)

    rig.director.record_outcome(outcome(200, 90, 16))
    rig.director.record_outcome(outcome(200, 10, None))
    rig.director.record_outcome(outcome(502, None, None))
    rig.director.record_outcome(outcome(None, None, None))  # client gone before a response: no error
    assert registry.get_sample_value("inference_model_input_tokens_sum", labels) == 100
    assert registry.get_sample_value("inference_model_input_tokens_count", labels) == 2
    assert registry.get_sample_value("inference_model_output_tokens_sum", labels) == 16
    errors = {**labels, "error_code": "ModelServerError"}
    assert registry.get_sample_value("inference_model_request_error_total", errors) == 1
    classes = {"2xx": 2, "5xx": 1, "client_gone": 1}
    for status_class, count in classes.items():
        responses = {**labels, "status_class": status_class}
        assert registry.get_sample_value("inference_model_response_total", responses) == count


class _RecordingScheduler:
    """Keeps the requests it is asked to schedule; answers with the first endpoint."""

    def __init__(self) -> None:
        self.requests: list[InferenceRequest] = []

    def schedule(self, request: InferenceRequest, endpoints: Sequence[Endpoint]) -> Decision | Rejection:
        self.requests.append(request)
        return Decision(endpoints=(endpoints[0].address,))

    def record(self, decision: Decision) -> None:
        pass


@pytest.mark.parametrize(
    ("route_md", "criticality", "priority"),
    [
        # An InferenceObjective variant of a model route: its priority and the criticality mapped from it.
        ({MetadataKey.PRIORITY: -5.0, MetadataKey.CRITICALITY: "Sheddable"}, Criticality.SHEDDABLE, -5),
        ({MetadataKey.PRIORITY: 10.0, MetadataKey.CRITICALITY: "Critical"}, Criticality.CRITICAL, 10),
        # The plain route (no objective named): the InferenceModel's criticality, priority 0.
        ({MetadataKey.CRITICALITY: "Critical"}, Criticality.CRITICAL, 0),
        ({}, Criticality.STANDARD, 0),
    ],
)
def test_priority_and_criticality_come_from_the_route(
    route_md: dict[str, object], criticality: Criticality, priority: int
) -> None:
    rig = Rig()
    scheduler = _RecordingScheduler()
    rig.director.scheduler = scheduler
    attributes = RequestAttributes(
        cluster_metadata=_target_cluster("base").cluster_metadata,
        route_metadata={MetadataKey.POOL_NAMESPACE: NS, MetadataKey.POOL_NAME: "pool", **route_md},
    )
    rig.route("base", attributes=attributes)
    (request,) = scheduler.requests
    assert (request.criticality, request.priority) == (criticality, priority)
