"""A reused EndpointSnapshot with live in-flight counts decides exactly as a fresh snapshot would."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.model import Criticality
from picker.scheduling import admission, build_scheduler
from picker.scheduling.types import (
    Decision,
    Endpoint,
    EndpointSnapshot,
    InferenceRequest,
    PodMetrics,
    Rejection,
    ServedModels,
)

SERVED = ServedModels(frozenset({"base"}), frozenset({"lora-a"}))


def ep(n: int, waiting: int = 0, running: int = 0, kv: float = 0.0, in_flight: int = 0) -> Endpoint:
    metrics = PodMetrics(running=running, waiting=waiting, kv_cache_usage=kv, max_loras=2)
    return Endpoint(f"10.0.{n // 256}.{n % 256}:8000", f"ns/p{n}", SERVED, metrics, 0.01, in_flight)


def request(model: str = "base", prompt: str = "") -> InferenceRequest:
    return InferenceRequest("r", model, model, prompt=prompt)


def with_counts(endpoints: list[Endpoint], counts: dict[str, int]) -> tuple[Endpoint, ...]:
    return tuple(
        Endpoint(e.address, e.pod, e.served, e.metrics, e.metrics_age_s, counts.get(e.address, 0))
        for e in endpoints
    )


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6), st.floats(0.0, 1.0)), min_size=1, max_size=40),
    st.lists(st.tuples(st.integers(0, 39), st.integers(0, 5)), max_size=40),
    st.sampled_from(["base", "lora-a"]),
    st.integers(0, 1000),
)
def test_live_counts_decide_like_counts_frozen_in_the_endpoints(
    loads: list[tuple[int, int, float]], busy: list[tuple[int, int]], model: str, seed: int
) -> None:
    endpoints = [ep(i, waiting, running, kv) for i, (waiting, running, kv) in enumerate(loads)]
    live: dict[str, int] = {}
    snapshot = EndpointSnapshot(endpoints, live)
    reused = build_scheduler(rng=random.Random(seed))
    fresh = build_scheduler(rng=random.Random(seed))
    prompt = "shared system prompt " * 20
    # Several decisions over the same snapshot while the counts change in between (sparse and dense).
    for step in range(len(busy) + 1):
        counts = dict(live)
        got = reused.schedule(request(model, prompt), snapshot)
        want = fresh.schedule(request(model, prompt), with_counts(endpoints, counts))
        assert got == want
        if isinstance(got, Decision):
            reused.record(got)
            fresh.record(got)
        if step < len(busy):
            index, extra = busy[step]
            address = endpoints[index % len(endpoints)].address
            live[address] = live.get(address, 0) + extra
            if not live[address]:
                del live[address]


def test_a_burst_over_one_reused_snapshot_spreads() -> None:
    live: dict[str, int] = {}
    snapshot = EndpointSnapshot([ep(1), ep(2), ep(3)], live)
    scheduler = build_scheduler(rng=random.Random(3))
    for _ in range(9):
        decision = scheduler.schedule(request(), snapshot)
        assert isinstance(decision, Decision)
        live[decision.primary] = live.get(decision.primary, 0) + 1
    assert sorted(live.values()) == [3, 3, 3]


def test_schedulers_sharing_a_snapshot_keep_their_own_memo() -> None:
    snapshot = EndpointSnapshot([ep(1), ep(2)], {})
    first = build_scheduler(rng=random.Random(0))
    assert isinstance(first.schedule(request("base"), snapshot), Decision)
    other = build_scheduler(rng=random.Random(0))
    other.filters = ()  # a differently configured scheduler: must not reuse `first`'s filter results
    assert isinstance(other.schedule(request("missing"), snapshot), Decision)
    missing = first.schedule(request("missing"), snapshot)
    assert isinstance(missing, Rejection) and missing.status == 404


def test_derived_snapshot_shares_the_live_counts() -> None:
    live = {"10.0.0.2:8000": 4}
    snapshot = EndpointSnapshot([ep(1), ep(2, in_flight=0), ep(3)], live)
    derived = snapshot.derive(snapshot[1:])
    assert derived.in_flight is live and derived.in_flight_of(derived[0]) == 4
    assert EndpointSnapshot([ep(5, in_flight=2)]).in_flight_of(ep(5, in_flight=2)) == 2


def test_admission_reads_the_live_counts() -> None:
    config = admission.AdmissionConfig(queue_threshold=2.0)
    shed = InferenceRequest("r", "base", "base", criticality=Criticality.SHEDDABLE)
    live: dict[str, int] = {}
    snapshot = EndpointSnapshot([ep(1), ep(2)], live)
    assert admission.check(shed, snapshot, config) is None
    live.update({"10.0.0.1:8000": 2, "10.0.0.2:8000": 2})
    rejected = admission.check(shed, snapshot, config)
    assert isinstance(rejected, Rejection) and rejected.status == 429
    assert admission.pool_saturation(snapshot, config) == admission.pool_saturation(
        with_counts(list(snapshot), live), config
    )


def test_datastore_reuses_the_pool_snapshot_until_something_changes() -> None:
    from api.sources.store import ObjectStore
    from picker.datastore import SNAPSHOT_MAX_AGE_SECONDS, Datastore

    now = [100.0]
    store = ObjectStore()
    pool = {
        "apiVersion": "inference.networking.x-k8s.io/v1alpha1",
        "kind": "InferencePool",
        "metadata": {"name": "pool", "namespace": "default"},
        "spec": {"targetPortNumber": 8000, "selector": {"app": "m"}, "extensionRef": {"name": "picker"}},
    }
    pods = [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"p{i}", "namespace": "default", "labels": {"app": "m"}},
            "status": {"podIP": f"10.0.0.{i}"},
        }
        for i in (1, 2)
    ]
    store.apply(upserts=[pool, *pods])
    datastore = Datastore("picker", "default", clock=lambda: now[0])
    datastore.sync(store.snapshot())
    for i in (1, 2):
        datastore.record_models(f"10.0.0.{i}:8000", SERVED)
        datastore.record_metrics(f"10.0.0.{i}:8000", PodMetrics())
    first = datastore.snapshot_for("default/pool")
    assert datastore.snapshot_for("default/pool") is first and len(first) == 2
    datastore.acquire("10.0.0.1:8000")  # in flight: live through the mapping, no rebuild
    assert datastore.snapshot_for("default/pool") is first
    assert first.in_flight_of(first[0]) == 1 and dict(datastore.in_flight_counts()) == {"10.0.0.1:8000": 1}
    datastore.release("10.0.0.1:8000")
    assert dict(datastore.in_flight_counts()) == {}
    datastore.record_metrics("10.0.0.2:8000", PodMetrics(waiting=3))  # new metrics: a new snapshot
    second = datastore.snapshot_for("default/pool")
    assert second is not first and second[1].metrics == PodMetrics(waiting=3)
    now[0] += SNAPSHOT_MAX_AGE_SECONDS + 1.0  # metric ages move on: rebuilt even without a change
    third = datastore.snapshot_for("default/pool")
    assert third is not second and third[0].metrics_age_s == pytest.approx(SNAPSHOT_MAX_AGE_SECONDS + 1.0)
