"""Admission: pool saturation and who gets shed."""

from __future__ import annotations

import pytest

from api.model import Criticality
from picker.scheduling import admission
from picker.scheduling.admission import AdmissionConfig, endpoint_saturation, pool_saturation
from picker.scheduling.types import Endpoint, InferenceRequest, PodMetrics


def ep(
    waiting: int = 0,
    kv: float = 0.0,
    age: float = 0.05,
    metrics: bool = True,
    in_flight: int = 0,
    running: int = 0,
) -> Endpoint:
    pod = PodMetrics(running=running, waiting=waiting, kv_cache_usage=kv) if metrics else None
    return Endpoint("10.0.0.1:8000", "ns/p", None, pod, age, in_flight)


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        (ep(), 0.0),
        (ep(waiting=5), 1.0),
        (ep(waiting=2, kv=0.4), 0.5),
        (ep(waiting=1, kv=0.8), 1.0),
        (ep(waiting=10), 2.0),
        (ep(waiting=1, in_flight=5), 1.0),  # 4 sent since the scrape: may all be queued
        (ep(running=5, in_flight=5), 0.0),  # in flight and running: not queued
        (ep(running=4, waiting=1, in_flight=7), 0.6),  # 2 beyond the scrape + 1 waiting
        (ep(age=2.5), 1.0),  # stale: beyond the one 2 s limit (was 0.5 under admission's own 0.2 s)
        (ep(metrics=False), 1.0),
    ],
)
def test_endpoint_saturation(endpoint: Endpoint, expected: float) -> None:
    assert endpoint_saturation(endpoint) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("endpoints", "expected"),
    [
        ([], 1.0),
        ([ep(waiting=5), ep()], 0.5),
        ([ep(waiting=10), ep()], 1.0),
        ([ep(age=9.0), ep(kv=0.8)], 1.0),
    ],
)
def test_pool_saturation_is_the_mean(endpoints: list[Endpoint], expected: float) -> None:
    assert pool_saturation(endpoints) == pytest.approx(expected)


SATURATED = [ep(waiting=10), ep(kv=0.9)]
IDLE = [ep(), ep(waiting=1)]


@pytest.mark.parametrize(
    ("criticality", "endpoints", "config", "shed"),
    [
        (Criticality.CRITICAL, SATURATED, AdmissionConfig(shed_standard=True), False),
        (Criticality.SHEDDABLE, SATURATED, AdmissionConfig(), True),
        (Criticality.SHEDDABLE, IDLE, AdmissionConfig(), False),
        (Criticality.STANDARD, SATURATED, AdmissionConfig(), False),
        (Criticality.STANDARD, SATURATED, AdmissionConfig(shed_standard=True), True),
        (Criticality.STANDARD, IDLE, AdmissionConfig(shed_standard=True), False),
        (Criticality.SHEDDABLE, [], AdmissionConfig(), True),
    ],
)
def test_check(
    criticality: Criticality, endpoints: list[Endpoint], config: AdmissionConfig, shed: bool
) -> None:
    request = InferenceRequest("r", "m", "m", criticality=criticality)
    result = admission.check(request, endpoints, config)
    if shed:
        assert result is not None and (result.status, result.code) == (429, "pool_saturated")
        assert "m" in result.message
    else:
        assert result is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"queueThreshold": 0}, r"admission\.queueThreshold: must be >"),
        ({"kvCacheThreshold": 1.5}, r"admission\.kvCacheThreshold: must be <="),
        ({"shedStandard": "yes"}, r"admission\.shedStandard: expected true or false"),
        ({"bogus": 1}, r"admission\.bogus: unknown parameter"),
    ],
)
def test_admission_config_errors(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AdmissionConfig.from_mapping(data)
