"""Behaviour of the compiler beyond the golden files: purity, Gateway matching, names, metadata."""

from __future__ import annotations

from typing import Any

from envoy.config.route.v3.route_pb2 import RouteConfiguration

from api.contract import METADATA_NAMESPACE
from extserver.compile import CompileCache, compile_translation, naming
from extserver.compile.filters.lua import rewrite_code
from extserver.eg.standin import build_eg_xds_by_gateway
from tests.compile_cases import OPTIONS, apply_hooks, compile_inputs, load_objects, run_case

ATTACH_TO = "inference.networking.x-k8s.io/attach-to"


def test_inputs_are_not_mutated() -> None:
    objects = load_objects("seed-lora-canary")
    inputs, _ = compile_inputs(objects)
    eg = build_eg_xds_by_gateway(objects)["default/inference-gateway"]
    before = [m.SerializeToString(deterministic=True) for m in (*eg.clusters, *eg.listeners, *eg.routes)]
    compile_translation(eg.clusters, eg.listeners, eg.routes, inputs, OPTIONS)
    after = [m.SerializeToString(deterministic=True) for m in (*eg.clusters, *eg.listeners, *eg.routes)]
    assert before == after


def test_other_gateway_on_same_port_is_untouched() -> None:
    objects = load_objects("two-gateways-one-port")
    inputs, _ = compile_inputs(objects)
    result = run_case("two-gateways-one-port")
    untouched = build_eg_xds_by_gateway(objects)["default/gw-a"]
    apply_hooks(untouched, inputs)
    gw_a = result.gateways["default/gw-a"]
    assert [m.SerializeToString(deterministic=True) for m in gw_a.listeners] == [
        m.SerializeToString(deterministic=True) for m in untouched.listeners
    ]
    assert not any(naming.HEADER_MUTATION_FILTER in str(lis) for lis in gw_a.listeners)
    gw_b = result.gateways["default/gw-b"]
    patched = [
        lis.name
        for lis in gw_b.listeners
        if naming.HEADER_MUTATION_FILTER.encode() in lis.SerializeToString()
    ]
    assert patched == ["default/gw-b/http"]  # not gw-b's port 9091 listener


def test_privileged_port_is_found_shifted() -> None:
    result = run_case("privileged-port")
    (gateway,) = result.gateways.values()
    (listener,) = [lis for lis in gateway.listeners if lis.name == "llm/gw/web"]
    assert listener.address.socket_address.port_value == 10080
    assert listener.per_connection_buffer_limit_bytes.value == OPTIONS.max_body_bytes


def test_every_generated_cluster_and_route_carries_metadata() -> None:
    for case in ("seed-lora-canary", "backendref-ga-v1"):
        (gateway,) = run_case(case).gateways.values()
        ours = [c for c in gateway.clusters if c.name.startswith("inference/")]
        assert ours and all(METADATA_NAMESPACE in c.metadata.filter_metadata for c in ours)
        routes = [
            r for rc in gateway.routes for vh in rc.virtual_hosts for r in vh.routes if "inference/" in r.name
        ]
        assert routes and all(METADATA_NAMESPACE in r.metadata.filter_metadata for r in routes)


def test_lua_target_literal_is_escaped() -> None:
    code = rewrite_code('meta-llama/Llama "3" \\ %1')
    # json.dumps then Lua-escaped: quotes and backslashes cannot end the literal early.
    assert 'local target = "\\"meta-llama/Llama \\\\\\"3\\\\\\" \\\\\\\\ %1\\""' in code


def _two_gateways(port: int, service_route_on_b: bool = False) -> list[dict[str, Any]]:
    objects = load_objects("two-gateways-one-port")
    for obj in objects:
        if obj.get("kind") == "InferencePool":
            obj["metadata"]["annotations"][ATTACH_TO] = f"name: gw-b\nport: {port}\n"
    if service_route_on_b:
        objects.append(
            {
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "HTTPRoute",
                "metadata": {"name": "web", "namespace": "default"},
                "spec": {
                    "parentRefs": [{"name": "gw-b", "sectionName": "http"}],
                    "hostnames": ["web.example.com"],
                    "rules": [{"backendRefs": [{"name": "web", "port": 80}]}],
                },
            }
        )
    return objects


def test_attach_to_a_port_the_gateway_lacks_is_reported() -> None:
    objects = _two_gateways(port=7777)
    inputs, _ = compile_inputs(objects)
    by_gateway = build_eg_xds_by_gateway(objects)
    outputs = {}
    for key, eg in by_gateway.items():
        apply_hooks(eg, inputs)
        outputs[key] = compile_translation(eg.clusters, eg.listeners, eg.routes, inputs, OPTIONS)
    [problem] = outputs["default/gw-b"].problems
    assert (problem.kind, problem.name, problem.reason) == ("InferencePool", "pool", "NoMatchingListener")
    assert "7777" in problem.message and "[8081, 9091]" in problem.message
    assert outputs["default/gw-b"].pool_gateways == {("default", "pool"): ("default/gw-b",)}
    # gw-a's translation is not about gw-b: nothing to say there.
    assert outputs["default/gw-a"].problems == []
    assert outputs["default/gw-a"].pool_gateways == {}


def test_attach_to_a_merged_gateway_is_refused_with_a_problem() -> None:
    """EG mergeGateways: gw-a and gw-b share one Envoy listener on 8081, named after gw-a; gw-b only
    shows in its virtual hosts. The pool must not take over the shared listener."""
    objects = _two_gateways(port=8081, service_route_on_b=True)
    inputs, _ = compile_inputs(objects)
    by_gateway = build_eg_xds_by_gateway(objects)
    gw_a, gw_b = by_gateway["default/gw-a"], by_gateway["default/gw-b"]
    (shared,) = [lis for lis in gw_a.listeners if lis.name == "default/gw-a/http"]
    (b_routes,) = [rc for rc in gw_b.routes if rc.name == "default/gw-b/http"]
    merged_routes = RouteConfiguration()
    merged_routes.CopyFrom(b_routes)
    merged_routes.name = "default/gw-a/http"  # the first Gateway's name, as EG names merged listeners
    listeners = [shared, *(lis for lis in gw_b.listeners if lis.name != "default/gw-b/http")]
    out = compile_translation(gw_b.clusters, listeners, [merged_routes], inputs, OPTIONS)
    [problem] = out.problems
    assert problem.reason == "MergedGatewayUnsupported"
    assert "default/gw-a/http" in problem.message and "backendRef" in problem.message
    assert out.routes == [merged_routes]  # untouched: gw-a's traffic on 8081 keeps flowing as before
    assert out.pool_gateways == {("default", "pool"): ("default/gw-b",)}


def _serialized(out: Any) -> list[bytes]:
    return [m.SerializeToString(deterministic=True) for m in (*out.clusters, *out.listeners, *out.routes)]


def test_compile_cache_gives_the_same_output_and_never_a_stale_one() -> None:
    for case in ("seed-lora-canary", "backendref-ga-v1", "conflicts"):
        objects = load_objects(case)
        inputs, _ = compile_inputs(objects)
        for eg in build_eg_xds_by_gateway(objects).values():
            apply_hooks(eg, inputs)
            cache = CompileCache()
            expected = _serialized(compile_translation(eg.clusters, eg.listeners, eg.routes, inputs, OPTIONS))
            first = compile_translation(eg.clusters, eg.listeners, eg.routes, inputs, OPTIONS, cache)
            second = compile_translation(eg.clusters, eg.listeners, eg.routes, inputs, OPTIONS, cache)
            assert _serialized(first) == expected == _serialized(second)
            assert cache.hits > 0
    # A model's weights change: the cached pool must be rebuilt, not reused.
    objects = load_objects("seed-lora-canary")
    inputs, _ = compile_inputs(objects)
    eg = build_eg_xds_by_gateway(objects)["default/inference-gateway"]
    apply_hooks(eg, inputs)
    cache = CompileCache()
    original = _serialized(compile_translation(eg.clusters, eg.listeners, eg.routes, inputs, OPTIONS, cache))
    for obj in objects:
        if obj.get("kind") == "InferenceModel" and obj["spec"].get("targetModels"):
            obj["spec"]["targetModels"][0]["weight"] = 7
    changed, _ = compile_inputs(objects)
    expected = _serialized(compile_translation(eg.clusters, eg.listeners, eg.routes, changed, OPTIONS))
    assert expected != original
    assert (
        _serialized(compile_translation(eg.clusters, eg.listeners, eg.routes, changed, OPTIONS, cache))
        == expected
    )
