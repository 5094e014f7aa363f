"""InferenceRollout: parse, defaults, field-path errors, round-trip; the store and sources keep it."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import pytest

from api.errors import ValidationError
from api.parse import parse_object, to_dict
from api.rollout import InferenceRollout
from api.sources import ROLLOUT_KIND, FileSource, KubernetesSource, ObjectStore
from api.yamlio import load_documents
from tests.k8s_fake_server import FakeKubeApi
from tests.test_sources_kubernetes import wait_for

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "config" / "samples" / "rollout-lora-canary.yaml"


def rollout(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "target": {"kind": "InferenceModel", "name": "m"},
        "stable": "a",
        "candidate": "b",
        "steps": [{"weight": 20, "analysis": {"interval": "1m30s"}}, {"weight": 100}],
    }
    base.update(spec)
    return {
        "apiVersion": "extension.inference-gateway.io/v1alpha1",
        "kind": "InferenceRollout",
        "metadata": {"name": "r", "namespace": "team"},
        "spec": base,
    }


def errors_of(obj: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationError) as info:
        parse_object(obj)
    return [e.split(": ", 1)[1] for e in info.value.errors]


def test_the_sample_parses_with_its_steps_and_analysis() -> None:
    (doc,) = load_documents(SAMPLE)
    r = parse_object(doc)
    assert isinstance(r, InferenceRollout)
    assert (r.target.kind, r.target.name, r.target.group) == (
        "InferenceModel", "inferencemodel-sample", "inference.networking.x-k8s.io",
    )  # fmt: skip
    assert (r.stable, r.candidate) == ("tweet-summary", "sql-lora")
    assert [s.weight for s in r.steps] == [10, 25, 50, 100]
    assert [s.analysis_interval_s for s in r.steps] == [300.0, 300.0, 300.0, None]
    assert r.analysis.inconclusive_deadline_s == 1800.0
    assert [m.name for m in r.analysis.metrics if m.critical] == ["ttft_p90", "error_rate"]


def test_defaults_follow_the_judgement_module() -> None:
    r = parse_object(rollout())
    assert isinstance(r, InferenceRollout)
    a = r.analysis
    assert (a.min_samples, a.min_requests, a.failure_limit, a.alpha, a.metrics) == (50, 300, 2, 0.01, ())
    assert (r.paused, r.abort, r.promote) == (False, False, None)
    assert r.steps[0].analysis_interval_s == 90.0


@pytest.mark.parametrize(
    ("target", "group"),
    [
        ({"kind": "InferenceModelRewrite", "name": "rw", "rule": 2}, "llm-d.ai"),
        (
            {
                "kind": "InferenceModelRewrite",
                "name": "rw",
                "rule": 0,
                "group": "inference.networking.x-k8s.io",
            },
            "inference.networking.x-k8s.io",
        ),
        ({"kind": "HTTPRoute", "name": "route", "rule": 1}, "gateway.networking.k8s.io"),
    ],
)
def test_each_target_kind_gets_its_group(target: dict[str, Any], group: str) -> None:
    r = parse_object(rollout(target=target))
    assert isinstance(r, InferenceRollout)
    assert (r.target.group, r.target.rule) == (group, target["rule"])


def test_round_trip_of_a_full_spec() -> None:
    obj = rollout(
        steps=[{"weight": 0, "pause": {"duration": "2m"}}, {"weight": 40, "pause": {}}, {"weight": 100}],
        analysis={
            "metrics": [{"name": "tpot_p90", "relativeLimit": 1.5, "absoluteLimit": 0.2}],
            "inconclusiveDeadline": "1h30m",
            "webhook": {"url": "https://eval.example/judge", "timeout": "500ms"},
            "prometheus": {"address": "http://prom:9090", "queries": {"ttft_p90": "up"}},
        },
        paused=True,
    )
    obj["metadata"]["annotations"] = {"extension.inference-gateway.io/promote": "full"}
    r = parse_object(obj)
    assert isinstance(r, InferenceRollout)
    assert parse_object(to_dict(r)) == r
    assert r.promote == "full" and r.paused
    assert [(s.pause, s.pause_s) for s in r.steps] == [(True, 120.0), (True, None), (False, None)]
    assert r.analysis.webhook is not None and r.analysis.webhook.timeout_s == 0.5
    assert to_dict(r)["spec"]["analysis"]["inconclusiveDeadline"] == "1h30m"


def _steps(*steps: dict[str, Any]) -> dict[str, Any]:
    return rollout(steps=list(steps))


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (
            _steps({"weight": 30, "pause": {}}, {"weight": 30, "pause": {}}),
            "spec.steps: step weights must increase",
        ),
        (_steps({"weight": 30}), "spec.steps[0]: a step needs a pause or an analysis"),
        (
            _steps({"weight": 0, "analysis": {"interval": "1m"}}),
            "spec.steps[0]: an analysis step needs a weight",
        ),
        (
            _steps({"weight": 5, "pause": {}, "analysis": {"interval": "1m"}}),
            "spec.steps[0]: a step has a pause",
        ),
        (
            _steps({"weight": 5, "pause": {"duration": "1d"}}),
            "spec.steps[0].pause.duration: '1d' does not match",
        ),
        (rollout(candidate="a"), "spec: stable and candidate must differ"),
        (rollout(target={"kind": "HTTPRoute", "name": "r"}), "spec.target: rule is required"),
        (
            rollout(target={"kind": "InferenceModel", "name": "m", "group": "llm-d.ai"}),
            "spec.target: group must",
        ),
        (rollout(analysis={"alpha": 0}), "spec.analysis.alpha: must be between 0.0001 and 0.5"),
        (
            rollout(analysis={"minRequests": True}),
            "spec.analysis.minRequests: must be an integer, got boolean",
        ),
        (
            rollout(analysis={"metrics": [{"name": "shed_rate", "absoluteLimit": 1}]}),
            "spec.analysis.metrics[0]: a",
        ),
        (
            rollout(analysis={"prometheus": {"address": "http://p", "queries": {"p99": "x"}}}),
            "spec.analysis.prometheus.queries.p99: unknown field",
        ),
        (rollout(abort="yes"), "spec.abort: must be a boolean, got string"),
    ],
)
def test_invalid_specs_name_the_field(obj: dict[str, Any], expected: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_object(obj)
    assert len(info.value.errors) == 1, info.value.errors
    assert info.value.errors[0].startswith(f"InferenceRollout team/r: {expected}")


def test_every_problem_is_reported_at_once() -> None:
    obj = rollout(stable="", steps=[{"weight": 101}], analysis={"failureLimit": 0})
    assert errors_of(obj) == [
        "spec.stable: must not be empty",
        "spec.steps[0].weight: must be between 0 and 100",
        "spec.analysis.failureLimit: must be between 1 and 100",
    ]


def test_store_keeps_rollouts_by_namespace_and_name() -> None:
    store = ObjectStore()
    store.upsert(rollout())
    broken = copy.deepcopy(rollout())
    broken["metadata"]["name"] = "bad"
    del broken["spec"]["steps"]
    store.upsert(broken)
    snap = store.snapshot()
    assert set(snap.rollouts) == {"team/r"}
    assert snap.invalid == {"InferenceRollout team/bad": ("InferenceRollout team/bad: spec.steps: required",)}
    assert not snap.others


def test_file_source_loads_the_sample_rollout() -> None:
    source = FileSource([SAMPLE])
    source.refresh()
    snap = source.store.snapshot()
    assert list(snap.rollouts) == ["default/lora-canary"] and not snap.invalid


async def test_kubernetes_source_watches_rollouts_when_asked() -> None:
    fake = FakeKubeApi()
    fake.serve(ROLLOUT_KIND.api_version, ROLLOUT_KIND.plural)
    fake.start()
    api = fake.api_client()
    try:
        fake.put(rollout(), ROLLOUT_KIND.plural)
        source = KubernetesSource(api, kinds=(ROLLOUT_KIND,), backoff_initial=0.05, request_timeout=10)
        task = asyncio.create_task(source.run())
        try:
            await asyncio.wait_for(source.wait_synced(), 30)
            assert set(source.store.snapshot().rollouts) == {"team/r"}
            edited = rollout(paused=True)
            fake.put(edited, ROLLOUT_KIND.plural)
            snap = await wait_for(source, lambda s: "team/r" in s.rollouts and s.rollouts["team/r"].paused)
            assert snap.rollouts["team/r"].meta.generation == 2
        finally:
            source.stop()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        api.close()
        fake.stop()
