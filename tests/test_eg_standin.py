"""extserver.eg.standin builds the xDS Envoy Gateway would: checked against real EG v1.9 output."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import json_format

from api.yamlio import load_documents
from extserver.eg.facts import READY_LISTENER, container_port
from extserver.eg.resources import ClusterHookCall, RouteHookCall, parse_config_dump
from extserver.eg.standin import build_eg_xds, build_eg_xds_by_gateway

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "config" / "samples"
EG_REFERENCE = ROOT / "tests" / "fixtures" / "eg-reference"
REFERENCE = EG_REFERENCE


def _reference() -> dict[str, Any]:
    dump = yaml.safe_load((REFERENCE / "out-from-gateway-api-to-xds.all.yaml").read_text())
    return dict(dump["xds"]["default/eg"])


def _drop_access_logs(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_access_logs(v) for k, v in value.items() if k != "accessLog"}
    if isinstance(value, list):
        return [_drop_access_logs(v) for v in value]
    return value


def _as_dict(message: Any) -> dict[str, Any]:
    result: dict[str, Any] = json_format.MessageToDict(message)
    return result


@pytest.fixture(scope="module")
def reference() -> Any:
    return parse_config_dump(_reference())


@pytest.fixture(scope="module")
def built() -> Any:
    return build_eg_xds(load_documents(REFERENCE / "in-from-gateway-api-to-xds.yaml"))


def test_http_cluster_matches_reference_exactly(reference: Any, built: Any) -> None:
    ref = {c.name: c for c in reference.clusters}
    assert [c.name for c in built.clusters] == ["httproute/default/backend/rule/0"]
    assert _as_dict(built.clusters[0]) == _as_dict(ref["httproute/default/backend/rule/0"])


def test_http_route_config_matches_reference_exactly(reference: Any, built: Any) -> None:
    ref = {r.name: r for r in reference.routes}
    mine = {r.name: r for r in built.routes}
    assert _as_dict(mine["default/eg/http"]) == _as_dict(ref["default/eg/http"])


def test_http_listener_matches_reference_except_access_logs(reference: Any, built: Any) -> None:
    ref = {lis.name: lis for lis in reference.listeners}
    mine = {lis.name: lis for lis in built.listeners}
    assert _as_dict(mine["default/eg/http"]) == _drop_access_logs(_as_dict(ref["default/eg/http"]))
    assert _as_dict(mine[READY_LISTENER]) == _as_dict(ref[READY_LISTENER])
    listener = mine["default/eg/http"]
    assert listener.address.socket_address.port_value == 10080
    assert listener.per_connection_buffer_limit_bytes.value == 32768


def test_privileged_ports_shift_by_10000() -> None:
    assert container_port(80) == 10080
    assert container_port(1023) == 11023
    assert container_port(1024) == 1024
    assert container_port(8081) == 8081


@pytest.mark.parametrize("sample", ["seed-lora-canary.yaml", "seed-base-model-canary.yaml"])
def test_seed_samples_give_an_empty_gateway_listener(sample: str) -> None:
    xds = build_eg_xds(load_documents(SAMPLES / sample))
    names = [lis.name for lis in xds.listeners]
    assert names == ["default/inference-gateway/llm-gw", READY_LISTENER]
    assert xds.listeners[0].address.socket_address.port_value == 8081
    assert [r.name for r in xds.routes] == ["default/inference-gateway/llm-gw"]
    assert not xds.routes[0].virtual_hosts
    assert xds.clusters == [] and xds.hook_calls == []


GATEWAY = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: ai}
spec:
  gatewayClassName: eg
  listeners:
  - {name: http, protocol: HTTP, port: 80}
"""

POOLS = {
    "inference.networking.x-k8s.io/v1alpha1": "spec: {selector: {app: m}, targetPortNumber: 8000, "
    "extensionRef: {name: picker}}",
    "inference.networking.x-k8s.io/v1alpha2": "spec: {selector: {app: m}, targetPortNumber: 8000, "
    "extensionRef: {name: picker}}",
    "inference.networking.k8s.io/v1": "spec: {selector: {matchLabels: {app: m}}, "
    "targetPorts: [{number: 8000}], "
    "endpointPickerRef: {name: picker, port: {number: 9002}}}",
}


def _route_to_pool(group: str, pool: str = "pool") -> str:
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: llm, namespace: ai}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [api.example.com]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /v1}}}}, {{path: {{type: Exact, value: /health}}}}]
    backendRefs: [{{group: {group}, kind: InferencePool, name: {pool}}}]
"""


@pytest.mark.parametrize("api_version", sorted(POOLS))
def test_inference_pool_backend_gives_custom_backend_cluster_and_hook_inputs(api_version: str) -> None:
    group = api_version.rpartition("/")[0]
    pool = yaml.safe_load(
        f"apiVersion: {api_version}\nkind: InferencePool\nmetadata: {{name: pool, namespace: ai}}\n"
        + POOLS[api_version]
    )
    objects = [*yaml.safe_load_all(GATEWAY), yaml.safe_load(_route_to_pool(group)), pool]
    xds = build_eg_xds_by_gateway(objects)["ai/gw"]

    assert [lis.name for lis in xds.listeners] == ["ai/gw/http", READY_LISTENER]
    assert xds.listeners[0].address.socket_address.port_value == 10080
    vhost = xds.routes[0].virtual_hosts[0]
    assert vhost.name == "ai/gw/http/api_example_com"
    assert list(vhost.domains) == ["api.example.com"]
    # EG orders the exact match ahead of the prefix.
    assert [r.name for r in vhost.routes] == [
        "httproute/ai/llm/rule/0/match/1/api_example_com",
        "httproute/ai/llm/rule/0/match/0/api_example_com",
    ]
    assert vhost.routes[1].match.path_separated_prefix == "/v1"
    assert all(r.route.cluster == "httproute/ai/llm/rule/0" for r in vhost.routes)

    cluster = xds.clusters[0]
    assert cluster.name == "httproute/ai/llm/rule/0"
    assert cluster.eds_cluster_config.service_name == cluster.name
    assert cluster.load_balancing_policy.policies[0].typed_extension_config.name == (
        "envoy.load_balancing_policies.least_request"
    )

    # EG's order: route hook per route, the cluster hook once, right after the first route that uses it.
    calls = xds.hook_calls
    assert [type(c) for c in calls] == [RouteHookCall, ClusterHookCall, RouteHookCall]
    assert isinstance(calls[0], RouteHookCall)
    assert calls[0].route_name == "httproute/ai/llm/rule/0/match/0/api_example_com"
    assert calls[0].hostnames == ("api.example.com",)
    (resource,) = calls[0].extension_resources
    assert resource["apiVersion"] == api_version and resource["kind"] == "InferencePool"
    assert resource["metadata"]["name"] == "pool" and resource["metadata"]["namespace"] == "ai"
    assert xds.cluster_extension_resources["httproute/ai/llm/rule/0"] == (resource,)
    assert set(xds.route_extension_resources) == {r.name for r in vhost.routes}


def test_missing_pool_gives_direct_response_500_and_no_hooks() -> None:
    objects = [
        *yaml.safe_load_all(GATEWAY),
        yaml.safe_load(_route_to_pool("inference.networking.k8s.io", "nope")),
    ]
    xds = build_eg_xds(objects)
    routes = xds.routes[0].virtual_hosts[0].routes
    assert all(r.direct_response.status == 500 for r in routes)
    assert xds.clusters == [] and xds.hook_calls == []


def test_route_on_other_namespace_or_section_does_not_attach() -> None:
    route = yaml.safe_load(_route_to_pool("inference.networking.k8s.io"))
    route["metadata"]["namespace"] = "elsewhere"
    route["spec"]["parentRefs"][0]["namespace"] = "ai"
    wrong_section = yaml.safe_load(_route_to_pool("inference.networking.k8s.io"))
    wrong_section["spec"]["parentRefs"][0]["sectionName"] = "https"
    xds = build_eg_xds([*yaml.safe_load_all(GATEWAY), route, wrong_section])
    assert not xds.routes[0].virtual_hosts


def test_gateways_of_other_controllers_are_skipped() -> None:
    objects = [
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GatewayClass",
            "metadata": {"name": "eg"},
            "spec": {"controllerName": "example.com/other"},
        },
        *yaml.safe_load_all(GATEWAY),
    ]
    assert build_eg_xds_by_gateway(objects) == {}
