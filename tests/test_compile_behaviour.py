"""Behaviour of the compiler beyond the golden files: purity, Gateway matching, names, metadata."""

from __future__ import annotations

from api.contract import METADATA_NAMESPACE
from extserver.compile import compile_translation, naming
from extserver.compile.filters.lua import rewrite_code
from extserver.egxds import build_eg_xds_by_gateway
from tests.compile_cases import OPTIONS, apply_hooks, compile_inputs, load_objects, run_case


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
