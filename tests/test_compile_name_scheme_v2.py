"""EG's XDSNameSchemeV2 names listeners `tcp-<port>` and route configurations `http-<port>`, without the
Gateway. Real EG v1.9 sends our InferenceGatewayRevision (a policy targeting the Gateway) in the
Translation call's context: that names the one Gateway the call is for."""

from __future__ import annotations

import json

from envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2 import (
    HttpConnectionManager,
)

from api.egextension.context_pb2 import ExtensionResource
from api.egextension.service_pb2 import PostTranslateModifyRequest
from extserver import revisions
from extserver.compile import build_plan, compile_translation
from extserver.compile.attach import assign_attach_to
from tests.compile_cases import OPTIONS, run_case

GATEWAY = "default/inference-gateway"


def _v2_names() -> tuple[list, list, object]:  # type: ignore[type-arg]
    """The seed's EG output renamed as XDSNameSchemeV2 names it."""
    result = run_case("seed-lora-canary")
    eg = result.gateways[GATEWAY].eg
    listeners = [type(lis)() for lis in eg.listeners]
    for out, lis in zip(listeners, eg.listeners, strict=True):
        out.CopyFrom(lis)
    routes = [type(rc)() for rc in eg.routes]
    for out, rc in zip(routes, eg.routes, strict=True):
        out.CopyFrom(rc)
    for listener in listeners:
        if listener.name.startswith(f"{GATEWAY}/"):
            port = listener.address.socket_address.port_value
            listener.name = f"tcp-{port}"
            for chain in [*listener.filter_chains, listener.default_filter_chain]:
                for network_filter in chain.filters:
                    hcm = HttpConnectionManager()
                    if network_filter.typed_config.Unpack(hcm) and hcm.HasField("rds"):
                        for rc in routes:
                            if rc.name == hcm.rds.route_config_name:
                                rc.name = f"http-{port}"
                        hcm.rds.route_config_name = f"http-{port}"
                        network_filter.typed_config.Pack(hcm)
    return listeners, routes, result.inputs


def test_the_revision_in_the_call_names_the_gateway_of_v2_listeners() -> None:
    listeners, routes, inputs = _v2_names()
    plan = build_plan(inputs)  # type: ignore[arg-type]
    attached = assign_attach_to(plan, listeners, routes, frozenset({GATEWAY}))
    assert attached.to_dict()["routeConfigs"] == {"http-8081": "default/vllm-llama2-7b-pool"}
    assert not attached.problems


def test_without_it_or_with_two_gateways_a_v2_listener_is_nobodys() -> None:
    listeners, routes, inputs = _v2_names()
    plan = build_plan(inputs)  # type: ignore[arg-type]
    for call in (frozenset(), frozenset({GATEWAY, "default/other"})):
        attached = assign_attach_to(plan, listeners, routes, call)
        assert attached.to_dict()["routeConfigs"] == {}, call


def test_the_translation_compiles_the_pool_onto_v2_names() -> None:
    listeners, routes, inputs = _v2_names()
    eg = run_case("seed-lora-canary").gateways[GATEWAY].eg
    out = compile_translation(eg.clusters, listeners, routes, inputs, OPTIONS, None, frozenset({GATEWAY}))  # type: ignore[arg-type]
    (rc,) = [r for r in out.routes if r.name == "http-8081"]
    assert any(
        route.name == "inference/default/inferencemodel-sample"
        for vh in rc.virtual_hosts
        for route in vh.routes
    )


def test_gateways_of_call_reads_revisions_only() -> None:
    revision = revisions.revision_object(("default", "inference-gateway"), "abc")
    other = {
        "apiVersion": "example.io/v1",
        "kind": "Policy",
        "metadata": {"namespace": "default"},
        "spec": {},
    }
    request = PostTranslateModifyRequest()
    for obj in (revision, other):
        request.post_translate_context.extension_resources.append(
            ExtensionResource(unstructured_bytes=json.dumps(obj).encode())
        )
    decoded = [json.loads(r.unstructured_bytes) for r in request.post_translate_context.extension_resources]
    assert revisions.gateways_of_call(decoded) == frozenset({GATEWAY})
