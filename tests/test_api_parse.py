"""api/parse.py: seeds, defaults, version mapping, round-trips and out-of-range mutations (hypothesis)."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.contract import ANNOTATION_ATTACH_TO
from api.errors import ValidationError
from api.model import (
    V1,
    V1ALPHA1,
    V1ALPHA2,
    AttachTo,
    Criticality,
    FailureMode,
    InferenceModel,
    InferencePool,
    PickerRef,
    PoolRef,
    TargetModel,
)
from api.parse import describe, owns, parse_object, to_dict
from api.yamlio import load_documents

SAMPLES = Path(__file__).resolve().parent.parent / "config" / "samples"


def _owned(name: str) -> list[dict[str, Any]]:
    return [d for d in load_documents(SAMPLES / name) if owns(d)]


def test_lora_seed_parses_with_defaults() -> None:
    pool_doc, model_doc = _owned("seed-lora-canary.yaml")
    pool = parse_object(pool_doc)
    assert isinstance(pool, InferencePool)
    assert pool.key == "default/vllm-llama2-7b-pool"
    assert pool.selector == (("app", "vllm-llama2-7b-pool"),)
    assert pool.target_ports == (8000,)
    assert pool.picker == PickerRef("inference-gateway-ext-proc", 9002, "", "Service", FailureMode.FAIL_CLOSE)
    assert pool.attach_to == AttachTo("default", "inference-gateway", 8081)
    model = parse_object(model_doc)
    assert isinstance(model, InferenceModel)
    assert model.model_name == "lora-request"
    assert model.criticality is None and model.effective_criticality is Criticality.STANDARD
    assert model.target_models == (TargetModel("tweet-summary", 50), TargetModel("sql-lora", 50))
    assert model.pool_ref == PoolRef("vllm-llama2-7b-pool")


def test_base_model_seed_parses() -> None:
    pool_doc, model_doc = _owned("seed-base-model-canary.yaml")
    pool = parse_object(pool_doc)
    model = parse_object(model_doc)
    assert isinstance(pool, InferencePool) and isinstance(model, InferenceModel)
    assert pool.key == "default/reasoning-pool" and pool.selector == (("app", "custom-serving"),)
    assert model.criticality is Criticality.CRITICAL
    assert [t.name for t in model.weighted_targets()] == ["qwq-32b", "deepseek-r1"]


def test_owns_only_served_kinds() -> None:
    assert owns({"apiVersion": V1, "kind": "InferencePool"})
    assert owns({"apiVersion": V1ALPHA2, "kind": "InferenceModel"})
    assert not owns({"apiVersion": V1, "kind": "InferenceModel"})
    assert not owns({"apiVersion": "apps/v1", "kind": "Deployment"})
    with pytest.raises(ValidationError, match="not an inference kind this project serves"):
        parse_object({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}})


def test_metadata_is_copied() -> None:
    doc = {
        "apiVersion": V1ALPHA2,
        "kind": "InferenceModel",
        "metadata": {
            "name": "m",
            "namespace": "ns",
            "uid": "1234",
            "resourceVersion": "77",
            "generation": 3,
            "creationTimestamp": "2025-01-02T03:04:05Z",
            "labels": {"b": "2", "a": "1"},
            "annotations": {"note": "x"},
            "managedFields": [{"manager": "kubectl"}],
        },
        "spec": {"modelName": "m", "poolRef": {"name": "p"}},
    }
    meta = parse_object(doc).meta
    assert (meta.namespace, meta.name, meta.uid, meta.resource_version) == ("ns", "m", "1234", "77")
    assert meta.generation == 3 and meta.creation_timestamp == "2025-01-02T03:04:05Z"
    assert meta.labels == (("a", "1"), ("b", "2")) and meta.annotations == (("note", "x"),)


def test_versions_map_onto_one_model() -> None:
    x1: dict[str, Any] = {
        "apiVersion": V1ALPHA1,
        "kind": "InferencePool",
        "metadata": {"name": "p"},
        "spec": {
            "selector": {"a": "b"},
            "targetPortNumber": 8000,
            "extensionRef": {"name": "e", "targetPortNumber": 1},
        },
    }
    x2: dict[str, Any] = copy.deepcopy(x1) | {"apiVersion": V1ALPHA2}
    x2["spec"]["extensionRef"] = {"name": "e", "portNumber": 1}
    ga = {
        "apiVersion": V1,
        "kind": "InferencePool",
        "metadata": {"name": "p"},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "targetPorts": [{"number": 8000}],
            "endpointPickerRef": {"name": "e", "port": {"number": 1}},
        },
    }
    pools = [parse_object(d) for d in (x1, x2, ga)]
    assert all(isinstance(p, InferencePool) for p in pools)
    assert {
        (p.selector, p.target_ports, p.picker, p.app_protocol) for p in pools if isinstance(p, InferencePool)
    } == {((("a", "b"),), (8000,), PickerRef("e", 1), "http")}


def test_all_errors_are_listed_with_object_and_path() -> None:
    doc = {
        "apiVersion": V1ALPHA1,
        "kind": "InferenceModel",
        "metadata": {"name": "foo"},
        "spec": {
            "modelName": "",
            "targetModels": [{"name": "a", "weight": 1}, {"name": "b", "weight": 2_000_000}],
        },
    }
    with pytest.raises(ValidationError) as caught:
        parse_object(doc)
    assert caught.value.errors == [
        "InferenceModel default/foo: spec.modelName: must not be empty",
        "InferenceModel default/foo: spec.targetModels[1].weight: must be between 0 and 1000000",
        "InferenceModel default/foo: spec.poolRef: required",
    ]
    assert str(caught.value).count("\n") == 2


def test_to_dict_rejects_what_the_version_cannot_hold() -> None:
    (pool_doc, _) = _owned("seed-lora-canary.yaml")
    pool = parse_object(pool_doc)
    assert isinstance(pool, InferencePool)
    from dataclasses import replace

    with pytest.raises(ValueError, match="exactly one target port"):
        to_dict(replace(pool, target_ports=(1, 2)))
    rendered = to_dict(replace(pool, meta=replace(pool.meta, annotations=())))
    assert ANNOTATION_ATTACH_TO in rendered["metadata"]["annotations"]
    reparsed = parse_object(rendered)
    assert isinstance(reparsed, InferencePool) and reparsed.attach_to == pool.attach_to


# --- hypothesis: valid objects of every kind and version

dns_label = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,8}[a-z0-9])?", fullmatch=True)
label_key = st.from_regex(
    r"([a-z0-9]{1,4}\.[a-z]{1,3}/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,6}[A-Za-z0-9])?", fullmatch=True
)
label_value = st.from_regex(r"(([A-Za-z0-9][-A-Za-z0-9_.]{0,6})?[A-Za-z0-9])?", fullmatch=True)
labels = st.dictionaries(label_key, label_value, min_size=1, max_size=5)
port = st.integers(1, 65535)
kind = st.from_regex(r"[a-zA-Z]([-a-zA-Z0-9]{0,6}[a-zA-Z0-9])?", fullmatch=True)
group = st.one_of(st.just(""), st.from_regex(r"[a-z0-9]{1,5}(\.[a-z0-9]{1,5}){0,2}", fullmatch=True))
name = st.text(min_size=1, max_size=20)


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


@st.composite
def metadata(draw: st.DrawFn, attach: bool = False) -> dict[str, Any]:
    meta = {
        "name": draw(dns_label),
        "namespace": draw(st.none() | dns_label),
        "uid": draw(st.none() | st.uuids().map(str)),
        "resourceVersion": draw(st.none() | st.integers(1, 10**9).map(str)),
        "generation": draw(st.none() | st.integers(1, 1000)),
        "labels": draw(st.none() | labels),
    }
    if attach and draw(st.booleans()):
        text = f"name: {draw(dns_label)}\nport: {draw(port)}\n"
        if draw(st.booleans()):
            text += f"namespace: {draw(dns_label)}\n"
        meta["annotations"] = {ANNOTATION_ATTACH_TO: text}
    return _drop_none(meta)


@st.composite
def pools_x(draw: st.DrawFn, api_version: str) -> dict[str, Any]:
    port_key = "targetPortNumber" if api_version == V1ALPHA1 else "portNumber"
    ref = {
        "name": draw(name),
        "group": draw(st.none() | group),
        "kind": draw(st.none() | kind),
        port_key: draw(st.none() | port),
        "failureMode": draw(st.none() | st.sampled_from(["FailOpen", "FailClose"])),
    }
    spec = {"selector": draw(labels), "targetPortNumber": draw(port), "extensionRef": _drop_none(ref)}
    return {
        "apiVersion": api_version,
        "kind": "InferencePool",
        "metadata": draw(metadata(True)),
        "spec": spec,
    }


@st.composite
def pools_ga(draw: st.DrawFn) -> dict[str, Any]:
    picker_kind = draw(st.none() | kind)
    needs_port = picker_kind in (None, "Service")
    ref = {
        "name": draw(name),
        "group": draw(st.none() | group),
        "kind": picker_kind,
        "port": {"number": draw(port)} if needs_port or draw(st.booleans()) else None,
        "failureMode": draw(st.none() | st.sampled_from(["FailOpen", "FailClose"])),
    }
    ports = draw(st.lists(port, min_size=1, max_size=8, unique=True))
    spec = {
        "selector": {"matchLabels": draw(labels)},
        "targetPorts": [{"number": p} for p in ports],
        "appProtocol": draw(st.none() | st.sampled_from(["http", "kubernetes.io/h2c"])),
        "endpointPickerRef": _drop_none(ref),
    }
    return {
        "apiVersion": V1,
        "kind": "InferencePool",
        "metadata": draw(metadata(True)),
        "spec": _drop_none(spec),
    }


@st.composite
def models(draw: st.DrawFn, api_version: str, weighted: bool | None = None) -> dict[str, Any]:
    min_weight = 0 if api_version == V1ALPHA1 else 1
    with_weights = draw(st.booleans()) if weighted is None else weighted
    count = draw(st.integers(1 if weighted else 0, 10))
    targets = [
        _drop_none(
            {"name": draw(name), "weight": draw(st.integers(min_weight, 1_000_000)) if with_weights else None}
        )
        for _ in range(count)
    ]
    keep_empty = draw(st.booleans())
    pool_ref = {"name": draw(name), "group": draw(st.none() | group), "kind": draw(st.none() | kind)}
    spec: dict[str, Any] = {
        "modelName": draw(st.text(min_size=1, max_size=256)),
        "criticality": draw(st.none() | st.sampled_from(["Critical", "Standard", "Sheddable"])),
        "targetModels": targets if targets or keep_empty else None,  # [] and absent both mean none
        "poolRef": _drop_none(pool_ref),
    }
    return {
        "apiVersion": api_version,
        "kind": "InferenceModel",
        "metadata": draw(metadata()),
        "spec": _drop_none(spec),
    }


any_object = st.one_of(pools_x(V1ALPHA1), pools_x(V1ALPHA2), pools_ga(), models(V1ALPHA1), models(V1ALPHA2))


@settings(max_examples=300, deadline=None)
@given(any_object)
def test_every_accepted_object_round_trips(doc: dict[str, Any]) -> None:
    obj = parse_object(doc)
    again = parse_object(to_dict(obj))
    assert again == obj
    assert to_dict(again) == to_dict(obj)


# --- hypothesis: one field out of range is rejected with exactly that field's path


def _ints_outside(lo: int, hi: int) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.integers(max_value=lo - 1), st.integers(min_value=hi + 1), st.booleans(), st.text(max_size=4)
    )


bad_port = _ints_outside(1, 65535)
bad_name = st.one_of(st.just(""), st.text(min_size=254, max_size=300), st.integers())
bad_kind = st.one_of(
    st.just(""), st.from_regex(r"[0-9-][a-z]{0,5}", fullmatch=True), st.text("a", min_size=64)
)
bad_group = st.one_of(st.from_regex(r"[A-Z_][a-z]{0,5}", fullmatch=True), st.text("a", min_size=254))
bad_label_value = st.one_of(st.from_regex(r"[-_.][a-z]{0,5}", fullmatch=True), st.text("a", min_size=64))
bad_dns = st.one_of(st.from_regex(r"[A-Z_][a-z]{0,5}", fullmatch=True), st.just(""))


def _bad_enum(allowed: tuple[str, ...]) -> st.SearchStrategy[Any]:
    return st.one_of(st.text(max_size=12).filter(lambda s: s not in allowed), st.integers())


# (object strategy, path template, bad value strategy); `{i}` is an index into the list named before it,
# `{key}` a key of the map named before it.
Mutation = tuple[st.SearchStrategy[dict[str, Any]], str, st.SearchStrategy[Any]]
MUTATIONS: dict[str, Mutation] = {
    "v1alpha1 target port": (pools_x(V1ALPHA1), "spec.targetPortNumber", bad_port),
    "v1alpha1 picker port": (pools_x(V1ALPHA1), "spec.extensionRef.targetPortNumber", bad_port),
    "v1alpha2 picker port": (pools_x(V1ALPHA2), "spec.extensionRef.portNumber", bad_port),
    "picker name": (pools_x(V1ALPHA2), "spec.extensionRef.name", bad_name),
    "picker kind": (pools_x(V1ALPHA1), "spec.extensionRef.kind", bad_kind),
    "picker group": (pools_x(V1ALPHA1), "spec.extensionRef.group", bad_group),
    "failure mode": (
        pools_x(V1ALPHA1),
        "spec.extensionRef.failureMode",
        _bad_enum(("FailOpen", "FailClose")),
    ),
    "selector value": (pools_x(V1ALPHA1), "spec.selector[{key}]", bad_label_value),
    "metadata name": (pools_x(V1ALPHA1), "metadata.name", bad_dns),
    "metadata namespace": (models(V1ALPHA2), "metadata.namespace", bad_dns),
    "GA target port": (pools_ga(), "spec.targetPorts[{i}].number", bad_port),
    "GA picker port": (pools_ga(), "spec.endpointPickerRef.port.number", bad_port),
    "GA picker name": (pools_ga(), "spec.endpointPickerRef.name", bad_name),
    "GA app protocol": (pools_ga(), "spec.appProtocol", _bad_enum(("http", "kubernetes.io/h2c"))),
    "GA matchLabels value": (pools_ga(), "spec.selector.matchLabels[{key}]", bad_label_value),
    "model name": (models(V1ALPHA1), "spec.modelName", st.one_of(st.just(""), st.text(min_size=257))),
    "criticality": (models(V1ALPHA1), "spec.criticality", _bad_enum(("Critical", "Standard", "Sheddable"))),
    "v1alpha1 weight": (
        models(V1ALPHA1, weighted=True),
        "spec.targetModels[{i}].weight",
        _ints_outside(0, 10**6),
    ),
    "v1alpha2 weight": (
        models(V1ALPHA2, weighted=True),
        "spec.targetModels[{i}].weight",
        _ints_outside(1, 10**6),
    ),
    "target name": (models(V1ALPHA2, weighted=True), "spec.targetModels[{i}].name", bad_name),
    "pool ref name": (models(V1ALPHA2), "spec.poolRef.name", bad_name),
    "pool ref kind": (models(V1ALPHA1), "spec.poolRef.kind", bad_kind),
}


def _resolve(doc: dict[str, Any], template: str, draw: Callable[[st.SearchStrategy[Any]], Any]) -> str:
    """Fill `{i}`/`{key}` with an index/key that exists in `doc`."""
    path = template
    while "{" in path:
        head = path[: path.index("{")].rstrip("[")
        container: Any = doc
        for token in _tokens(head):
            container = container[_key(container, token)]
        choice = draw(
            st.sampled_from(sorted(container) if isinstance(container, dict) else range(len(container)))
        )
        path = path.replace("{key}" if isinstance(container, dict) else "{i}", str(choice), 1)
    return path


@pytest.mark.parametrize("mutation", list(MUTATIONS), ids=str)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_out_of_range_field_is_rejected_with_its_path(mutation: str, data: st.DataObject) -> None:
    strategy, template, bad = MUTATIONS[mutation]
    doc = data.draw(strategy)
    path = _resolve(doc, template, data.draw)
    *parents, last = _tokens(path)
    target: Any = doc
    for token in parents:
        target = target.setdefault(token, {}) if isinstance(target, dict) else target[_key(target, token)]
    target[_key(target, last)] = data.draw(bad)
    with pytest.raises(ValidationError) as caught:
        parse_object(doc)
    prefix = f"{describe(doc)}: {path}: "
    assert len(caught.value.errors) == 1 and caught.value.errors[0].startswith(prefix), caught.value.errors


def _tokens(path: str) -> list[str]:
    """Path segments; `[x]` keeps x as written (label keys have dots, and may look like numbers)."""
    return [
        key if bracket else name for bracket, key, name in re.findall(r"(\[([^\]]*)\])|([^.\[\]]+)", path)
    ]


def _key(container: Any, token: str) -> Any:
    """A list takes `[i]` as an index; a map takes it as a key, even when it looks like a number ("00")."""
    return int(token) if isinstance(container, list) else token
