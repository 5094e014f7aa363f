"""What the compiler makes of mirrors: RequestMirror filters on HTTPRoute rules (to pools and Services),
the mirror annotation, the mirror listener, and a condition for every mirror it refuses."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from envoy.config.route.v3.route_components_pb2 import Route

from api import contract
from api.httproute import rule_backends
from api.sources.store import Snapshot
from extserver.compile import compile_translation, naming
from extserver.compile.inputs import CompileInputs, Problem, TranslationOutput
from extserver.compile.listeners import _hcm_filters, _unpack
from extserver.eg.standin import build_eg_xds_by_gateway
from tests.compile_cases import OPTIONS, apply_hooks, compile_inputs

SAMPLE = Path(__file__).resolve().parent.parent / "config" / "samples" / "mirror-into-pool.yaml"
GATEWAY = "default/mirror-gateway"
MIRROR = naming.mirror_name(frozenset({GATEWAY}))

Edit = Callable[[list[dict[str, Any]]], None]


def _objects(edit: Edit | None = None) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(SAMPLE.read_text()) if d]
    if edit is not None:
        edit(docs)
    return docs


def _doc(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def _mirror_filter(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return _doc(docs, "HTTPRoute", "chat-route")["spec"]["rules"][0]["filters"][0]["requestMirror"]  # type: ignore[no-any-return]


def _inputs(objects: list[dict[str, Any]], **changes: Any) -> CompileInputs:
    inputs, invalid = compile_inputs(objects)
    assert not invalid
    rules = rule_backends(o for o in objects if o["kind"] == "HTTPRoute")
    return replace(inputs, rules=rules, **changes)


def _compile(edit: Edit | None = None, **changes: Any) -> TranslationOutput:
    objects = _objects(edit)
    inputs = _inputs(objects, **changes)
    (eg,) = build_eg_xds_by_gateway(objects).values()
    apply_hooks(eg, inputs)
    return compile_translation(
        eg.clusters, eg.listeners, eg.routes, inputs, OPTIONS, call_gateways=frozenset({GATEWAY})
    )


def _routes(out: TranslationOutput, route_config: str | None = None) -> list[Route]:
    return [
        r
        for rc in out.routes
        if route_config is None or rc.name == route_config
        for vh in rc.virtual_hosts
        for r in vh.routes
    ]


def _model_route(out: TranslationOutput) -> Route:
    (found,) = [
        r for r in _routes(out) if r.name.endswith("/inference/default/chat") and "mirror" not in r.name
    ]
    return found


def _reasons(out: TranslationOutput) -> list[tuple[str, str]]:
    return [(p.name, p.reason) for p in out.problems]


def test_the_pool_mirror_eg_refuses_becomes_a_policy_to_the_mirror_listener() -> None:
    objects = _objects()
    (eg,) = build_eg_xds_by_gateway(objects).values()
    refused = [r for rc in eg.routes for vh in rc.virtual_hosts for r in vh.routes]
    assert all(r.direct_response.status == 500 for r in refused)  # EG v1.9: "Group is invalid"
    out = _compile()
    route = _model_route(out)
    assert route.route.weighted_clusters.clusters[0].name == "inference/default/prod-pool/llama-3-8b"
    (policy,) = route.route.request_mirror_policies
    assert policy.cluster == MIRROR
    fraction = policy.runtime_fraction.default_value
    assert (fraction.numerator, fraction.denominator) == (500_000, fraction.MILLION)
    assert policy.disable_shadow_host_suffix_append
    headers = {m.append.header.key: m.append.header.value for m in policy.request_headers_mutations}
    assert headers == {
        contract.HEADER_MIRROR_TARGET: "pool/default/shadow-pool",
        contract.HEADER_CLIENT_MODEL: "%DYNAMIC_METADATA(inference.networking.x-k8s.io.body:model)%",
    }
    # The pool catch-all (EG's route, repaired) mirrors too; the models list answers directly.
    catch_all = [r for r in _routes(out) if r.name.startswith("httproute/") and "/inference/" not in r.name]
    assert catch_all and all(r.route.request_mirror_policies for r in catch_all)
    assert not out.problems


def test_the_mirror_listener_routes_copies_through_the_shadow_pool() -> None:
    out = _compile()
    (listener,) = [lis for lis in out.listeners if lis.name == MIRROR]
    address = listener.address.socket_address
    assert (address.address, address.port_value) == ("127.0.0.1", contract.MIRROR_LISTENER_PORT)
    (hcm,) = [_unpack(f) for f in _hcm_filters(listener)]
    assert hcm is not None
    names = [f.name for f in hcm.http_filters]
    assert names[0] == naming.MIRROR_RESTORE_FILTER  # before json_to_metadata reads `model`
    assert names.index(naming.JSON_TO_METADATA_FILTER) < names.index(
        naming.ext_proc_filter("default", "shadow-pool")
    )
    assert hcm.rds.route_config_name == MIRROR
    assert [a.name for a in hcm.access_log] == [naming.access_log("inference/default/shadow-pool/picker")]
    routes = _routes(out, MIRROR)
    assert [r.name for r in routes] == [
        f"{MIRROR}/pool/default/shadow-pool/inference/default/chat-shadow",
        f"{MIRROR}/pool/default/shadow-pool",
    ]
    assert (
        routes[0].route.weighted_clusters.clusters[0].name
        == "inference/default/shadow-pool/llama-3-8b-candidate"
    )
    clusters = {c.name: c for c in out.clusters}
    assert {"inference/default/shadow-pool", "inference/default/shadow-pool/picker", MIRROR} <= set(clusters)
    endpoint = clusters[MIRROR].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert (endpoint.address, endpoint.port_value) == ("127.0.0.1", contract.MIRROR_LISTENER_PORT)
    assert out.pool_gateways[("default", "shadow-pool")] == (GATEWAY,)


def test_a_rerun_on_its_own_output_changes_nothing() -> None:
    objects = _objects()
    inputs = _inputs(objects)
    (eg,) = build_eg_xds_by_gateway(objects).values()
    apply_hooks(eg, inputs)
    gateways = frozenset({GATEWAY})
    first = compile_translation(eg.clusters, eg.listeners, eg.routes, inputs, OPTIONS, call_gateways=gateways)
    second = compile_translation(
        first.clusters, first.listeners, first.routes, inputs, OPTIONS, call_gateways=gateways
    )
    assert second.clusters == first.clusters
    assert second.listeners == first.listeners
    assert second.routes == first.routes


def _set_mirror(**fields: Any) -> Edit:
    def edit(docs: list[dict[str, Any]]) -> None:
        mirror = _mirror_filter(docs)
        mirror.pop("percent", None)
        mirror.update(copy.deepcopy(fields))

    return edit


@pytest.mark.parametrize(
    ("fields", "numerator"),
    [
        ({"fraction": {"numerator": 1, "denominator": 8}}, 125_000),
        ({"fraction": {"numerator": 3}}, 30_000),  # denominator defaults to 100
        ({}, 1_000_000),  # neither: every request
        ({"percent": 0}, 0),
    ],
)
def test_percent_and_fraction(fields: dict[str, Any], numerator: int) -> None:
    (policy,) = _model_route(
        _compile(_set_mirror(backendRef=_shadow_ref(), **fields))
    ).route.request_mirror_policies
    assert policy.runtime_fraction.default_value.numerator == numerator


def _shadow_ref(name: str = "shadow-pool") -> dict[str, str]:
    return {"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": name}


def _attach_shadow_elsewhere(docs: list[dict[str, Any]]) -> None:
    meta = _doc(docs, "InferencePool", "shadow-pool")["metadata"]
    meta["annotations"] = {contract.ANNOTATION_ATTACH_TO: "name: other-gateway\nport: 9000\n"}


@pytest.mark.parametrize(
    ("edit", "reason", "says"),
    [
        (
            _set_mirror(backendRef=_shadow_ref("gone")),
            "MirrorPoolNotFound",
            "InferencePool default/gone not found",
        ),
        (_set_mirror(backendRef=_shadow_ref(), percent=150), "InvalidMirrorPercent", "percent: must be"),
        (
            _set_mirror(backendRef=_shadow_ref(), fraction={"numerator": 5, "denominator": 4}),
            "InvalidMirrorPercent",
            "numerator must not exceed denominator",
        ),
        (_attach_shadow_elsewhere, "MirrorPoolOnOtherGateway", "serves Gateway default/other-gateway"),
    ],
)
def test_every_refused_mirror_is_a_condition_and_the_route_keeps_serving(
    edit: Edit, reason: str, says: str
) -> None:
    out = _compile(edit)
    (problem,) = out.problems
    assert (problem.kind, problem.name, problem.condition_type, problem.reason) == (
        "InferencePool",
        "prod-pool",
        "ResolvedRefs",
        reason,
    )
    assert says in problem.message and "HTTPRoute default/chat-route" in problem.message
    route = _model_route(out)
    assert route.route.weighted_clusters.clusters and not route.route.request_mirror_policies
    assert all(lis.name != MIRROR for lis in out.listeners)


def _service_mirror(docs: list[dict[str, Any]]) -> None:
    _mirror_filter(docs)["backendRef"] = {"name": "shadow-svc", "port": 8000}


def test_a_service_mirror_goes_through_the_mirror_listener_to_egs_cluster() -> None:
    out = _compile(_service_mirror)
    (policy,) = _model_route(out).route.request_mirror_policies  # EG's own copy is replaced
    assert policy.cluster == MIRROR
    (route,) = _routes(out, MIRROR)
    assert route.route.cluster == "httproute/default/chat-route/rule/0-mirror-0"
    missing = _compile(_service_mirror, services={"default/inference-gateway-ext-proc": {}})
    assert _reasons(missing) == [("prod-pool", "MirrorServiceNotFound")]


def test_a_rule_with_another_failing_filter_keeps_egs_500() -> None:
    def extension_filter(docs: list[dict[str, Any]]) -> None:
        rule = _doc(docs, "HTTPRoute", "chat-route")["spec"]["rules"][0]
        rule["filters"].append(
            {"type": "ExtensionRef", "extensionRef": {"group": "x", "kind": "Y", "name": "z"}}
        )

    out = _compile(extension_filter)
    eg_routes = [r for r in _routes(out) if r.name.startswith("httproute/")]
    assert eg_routes and all(r.direct_response.status == 500 for r in eg_routes)


def _annotate(kind: str, name: str, text: str) -> Edit:
    def edit(docs: list[dict[str, Any]]) -> None:
        route = _doc(docs, "HTTPRoute", "chat-route")
        route["spec"]["rules"][0].pop("filters")
        _doc(docs, kind, name)["metadata"]["annotations"] = {contract.ANNOTATION_MIRROR: text}

    return edit


ANNOTATION = (
    "backendRef: {group: inference.networking.k8s.io, kind: InferencePool, name: shadow-pool}\npercent: 25\n"
)


@pytest.mark.parametrize(("kind", "name"), [("InferencePool", "prod-pool"), ("InferenceModel", "chat")])
def test_the_mirror_annotation_on_a_pool_or_a_model(kind: str, name: str) -> None:
    out = _compile(_annotate(kind, name, ANNOTATION))
    (policy,) = _model_route(out).route.request_mirror_policies
    assert policy.runtime_fraction.default_value.numerator == 250_000
    catch_all = [r for r in _routes(out) if r.name.startswith("httproute/") and "/inference/" not in r.name]
    assert catch_all
    # A model's annotation mirrors that model's requests only; the pool's, all of them.
    assert all(bool(r.route.request_mirror_policies) == (kind == "InferencePool") for r in catch_all)
    assert not out.problems


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("backendRef: [", "not valid YAML"),
        ("percent: 10\n", "backendRef.name: required"),
        # Not a mapping: its message names percent, yet the percent is not what is wrong.
        ("just text\n", "must be a mapping with backendRef"),
        ("backendRef: {name: svc, port: 80}\n", "from an HTTPRoute rule only"),
    ],
)
def test_an_invalid_annotation_is_a_condition(text: str, says: str) -> None:
    out = _compile(_annotate("InferencePool", "prod-pool", text))
    problems: list[Problem] = list(out.problems)
    assert [(p.name, p.reason) for p in problems] == [("prod-pool", "InvalidMirror")]
    assert says in problems[0].message and "InferencePool default/prod-pool" in problems[0].message


def test_a_mirror_annotation_edit_changes_the_revision_digest() -> None:
    """Annotations bump no generation, yet the mirror one is compiled: EG must re-translate on its edit."""
    from extserver.revisions import gateway_digests

    objects = _objects()
    inputs = _inputs(objects)
    learned = {("default", "prod-pool"): (GATEWAY,)}

    def digest(annotations: tuple[tuple[str, str], ...]) -> str:
        pools = {
            p.key: replace(p, meta=replace(p.meta, annotations=annotations))
            if p.meta.name == "prod-pool"
            else p
            for p in inputs.pools
        }
        snapshot = Snapshot(pools=pools, models={m.key: m for m in inputs.models})
        return gateway_digests(snapshot, learned)[("default", "mirror-gateway")]

    original = digest(())
    assert digest((("example.com/note", "x"),)) == original
    assert digest(((contract.ANNOTATION_MIRROR, ANNOTATION),)) != original


def test_an_httproute_edit_changes_the_revision_digest_of_its_gateway() -> None:
    """EG's own output is the same whichever pool a refused mirror names, so EG would not call the hooks
    after such an edit; the digest of the route's Gateway changes and makes it."""
    from extserver.revisions import gateway_digests

    objects = _objects()
    inputs = _inputs(objects)

    def digest(route: dict[str, Any]) -> str:
        pools = {p.key: p for p in inputs.pools}
        snapshot = Snapshot(pools=pools, models={m.key: m for m in inputs.models}, others=(route,))
        return gateway_digests(snapshot, {})[("default", "mirror-gateway")]

    route = copy.deepcopy(_doc(objects, "HTTPRoute", "chat-route"))
    route["metadata"]["generation"] = 1
    first = digest(route)
    route["metadata"]["generation"] = 2
    assert digest(route) != first
