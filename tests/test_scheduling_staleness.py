"""One metrics staleness limit, configured once, used by routing, admission and the ready-pods gauge.

Built as the picker builds itself (PickerServer from a scheduler config file), so the limit is the
one the running picker would use, not one a test passed by hand.
"""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from api.sources.files import FileSource
from picker.director import RouteRequest
from picker.scheduling import parse_config
from picker.scheduling.params import ConfigError
from picker.scheduling.types import PodMetrics, ServedModels
from picker.server import PickerConfig, PickerServer

NS = "default"
PORT = 8000
ADDRESS = f"10.0.0.1:{PORT}"
OBJECTS: list[dict[str, object]] = [
    {
        "apiVersion": "inference.networking.x-k8s.io/v1alpha1",
        "kind": "InferencePool",
        "metadata": {"name": "pool", "namespace": NS},
        "spec": {"targetPortNumber": PORT, "selector": {"app": "m"}, "extensionRef": {"name": "picker"}},
    },
    {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p0", "namespace": NS, "labels": {"app": "m"}},
        "status": {"podIP": "10.0.0.1"},
    },
    {
        "apiVersion": "inference.networking.x-k8s.io/v1alpha1",
        "kind": "InferenceModel",
        "metadata": {"name": "batch", "namespace": NS},
        "spec": {"modelName": "batch", "criticality": "Sheddable", "poolRef": {"name": "pool"}},
    },
]


def _picker(tmp_path: Path, scheduler_yaml: str | None, metrics_age_s: float) -> PickerServer:
    """A picker (not started) with one idle pod serving `base` and `batch`, scraped `metrics_age_s` ago."""
    config_path = None
    if scheduler_yaml is not None:
        config_path = tmp_path / "scheduler.yaml"
        config_path.write_text(scheduler_yaml, encoding="utf-8")
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    config = PickerConfig(
        service_name="picker", namespace=NS, scheduler_config=config_path, metrics_port=None
    )
    server = PickerServer(config, source=FileSource([manifests]))
    server.store.apply(upserts=OBJECTS)
    server.datastore.sync(server.store.snapshot())
    server.datastore.record_models(ADDRESS, ServedModels(frozenset({"base", "batch"})))
    server.datastore.record_metrics(ADDRESS, PodMetrics(max_loras=4))
    server.datastore.endpoint_states()[ADDRESS].metrics_at = time.monotonic() - metrics_age_s
    return server


def _route(server: PickerServer, model: str) -> tuple[str, ...]:
    request = RouteRequest(request_id="r1", path="/v1/completions")
    return server.director.route(request, orjson.dumps({"model": model, "prompt": "hello"})).endpoints


async def test_the_readiness_filters_max_age_is_the_limit_routing_uses(tmp_path: Path) -> None:
    """maxMetricsAgeSeconds: 5 lets a pod scraped 3 s ago take requests (the old fixed 2 s refused it)."""
    server = _picker(
        tmp_path,
        "plugins:\n  - type: readiness-filter\n    parameters: {maxMetricsAgeSeconds: 5}\n",
        metrics_age_s=3.0,
    )
    assert _route(server, "base") == (ADDRESS,)
    assert server.datastore.staleness_s == 5.0  # the ready-pods gauge counts it too


async def test_admission_does_not_count_a_routable_pod_full_for_its_age(tmp_path: Path) -> None:
    """Metrics 0.5 s old: the pod may take requests, so an idle pool must not shed (was 429 at 0.2 s)."""
    server = _picker(tmp_path, None, metrics_age_s=0.5)
    assert _route(server, "batch") == (ADDRESS,)


def test_one_staleness_in_the_config() -> None:
    readiness = {"type": "readiness-filter", "parameters": {"maxMetricsAgeSeconds": 4}}
    config = parse_config({"plugins": [readiness]})
    assert config.staleness_s == 4.0 and config.admission.staleness_s == 4.0
    assert parse_config({}).staleness_s == 2.0
    with pytest.raises(ConfigError, match=r"admission\.metricsStalenessSeconds"):
        parse_config({"admission": {"metricsStalenessSeconds": 0.2}})
