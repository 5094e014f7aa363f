"""What the compiler makes of a pool whose picker is not ours, has no picker, or is missing; pool endpoints
from Pods; h2c; an HTTPRoute rule weighted over two pools (docs/xds.md, "Endpoint pickers")."""

from __future__ import annotations

from dataclasses import replace

from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.route.v3.route_components_pb2 import Route
from envoy.extensions.clusters.aggregate.v3.cluster_pb2 import ClusterConfig
from envoy.extensions.filters.http.ext_proc.v3.ext_proc_pb2 import ExternalProcessor
from envoy.extensions.filters.http.ext_proc.v3.processing_mode_pb2 import ProcessingMode
from envoy.extensions.filters.http.header_mutation.v3.header_mutation_pb2 import HeaderMutation
from envoy.extensions.upstreams.http.v3.http_protocol_options_pb2 import HttpProtocolOptions

from api import contract
from api.httproute import RuleBackends, rule_backends
from extserver.compile import compile_translation, naming
from extserver.compile.backend_ref import patch_route
from extserver.compile.inputs import CompileInputs, Reason
from extserver.compile.listeners import _hcm_filters, _unpack
from extserver.compile.plan import build_plan
from extserver.eg.standin import build_eg_xds_by_gateway
from tests.compile_cases import OPTIONS, apply_hooks, compile_inputs, load_objects

OURS = {contract.ANNOTATION_PICKER_PROTOCOL: contract.PICKER_PROTOCOL_OURS}
ENDPOINTS = ("10.0.0.1:8000", "10.0.0.2:8000")


def _inputs(services: dict[str, dict[str, str]], **changes: object) -> CompileInputs:
    inputs, _ = compile_inputs(load_objects("backendref-ga-v1"))
    return replace(inputs, endpoints={"ai/pool": ENDPOINTS}, services=services, **changes)  # type: ignore[arg-type]


def _translate(inputs: CompileInputs) -> tuple[list[Cluster], list[ExternalProcessor]]:
    (eg,) = build_eg_xds_by_gateway(load_objects("backendref-ga-v1")).values()
    apply_hooks(eg, inputs)
    out = compile_translation(eg.clusters, eg.listeners, eg.routes, inputs, OPTIONS)
    ext_procs = []
    for listener in out.listeners:
        for network_filter in _hcm_filters(listener):
            manager = _unpack(network_filter)
            for http_filter in manager.http_filters if manager is not None else ():
                if http_filter.name.startswith(naming.EXT_PROC_FILTER_PREFIX):
                    config = ExternalProcessor()
                    http_filter.typed_config.Unpack(config)
                    ext_procs.append(config)
    return out.clusters, ext_procs


def _cluster(clusters: list[Cluster], suffix: str) -> Cluster:
    (found,) = [c for c in clusters if c.name.endswith(suffix) or c.name == suffix]
    return found


def test_a_picker_service_without_our_annotation_gets_gie_protocol() -> None:
    clusters, (ext_proc,) = _translate(_inputs({"ai/llm-picker": {}}))
    mode = ext_proc.processing_mode
    assert mode.request_header_mode == ProcessingMode.SEND
    assert mode.request_body_mode == ProcessingMode.STREAMED
    assert mode.response_header_mode == ProcessingMode.SEND
    assert ext_proc.send_body_without_waiting_for_header_response
    assert list(ext_proc.metadata_options.forwarding_namespaces.untyped) == [contract.LB_METADATA_NAMESPACE]
    picker = _cluster(clusters, "/picker")
    assert picker.transport_socket.name == "envoy.transport_sockets.tls" and not picker.health_checks
    target = _cluster(clusters, "/pool/llama-3-8b")  # a target cluster: the pool's Pods, not EDS
    assert target.type == Cluster.STATIC
    addresses = [e.endpoint.address.socket_address for e in target.load_assignment.endpoints[0].lb_endpoints]
    assert [f"{a.address}:{a.port_value}" for a in addresses] == list(ENDPOINTS)


def test_our_annotated_picker_keeps_its_protocol_and_eds() -> None:
    clusters, (ext_proc,) = _translate(_inputs({"ai/llm-picker": OURS}))
    assert ext_proc.processing_mode.request_header_mode == ProcessingMode.SKIP
    assert ext_proc.processing_mode.request_body_mode == ProcessingMode.BUFFERED
    assert _cluster(clusters, "/picker").health_checks
    # FailOpen: the target cluster falls over from the picker's EDS to the pool's Pods while EDS is empty.
    target = _cluster(clusters, "/pool/llama-3-8b")
    assert target.cluster_type.name == "envoy.clusters.aggregate"
    children = ClusterConfig()
    target.cluster_type.typed_config.Unpack(children)
    assert list(children.clusters) == ["inference/ai/pool/llama-3-8b#picker-eds", "inference/ai/pool"]
    assert _cluster(clusters, "/pool/llama-3-8b#picker-eds").type == Cluster.EDS
    assert _cluster(clusters, "inference/ai/pool").type == Cluster.STATIC
    # The backendRef's catch-all (EG's cluster, marked) holds the pool's Pods for any picker.
    (backend,) = [c for c in clusters if c.name.startswith("httproute/ai/llm/rule/0")]
    assert backend.type == Cluster.STATIC and len(backend.load_assignment.endpoints[0].lb_endpoints) == 2


def test_a_missing_picker_service_is_invalid_but_the_pool_stays() -> None:
    plan = build_plan(_inputs({}))
    (problem,) = [p for p in plan.problems if p.name == "pool"]
    assert (problem.condition_type, problem.reason) == ("ResolvedRefs", Reason.INVALID_EXTENSION_REF)
    assert "ai/llm-picker not found" in problem.message
    assert plan.pool("ai", "pool") is not None  # its routes stay and fail as FailClose/FailOpen says


def test_a_pool_without_picker_has_no_ext_proc_and_h2c_speaks_http2() -> None:
    inputs = _inputs({})
    (pool,) = inputs.pools
    inputs = replace(inputs, pools=(replace(pool, picker=None, app_protocol=contract.APP_PROTOCOL_H2C),))
    clusters, ext_procs = _translate(inputs)
    assert ext_procs == [] and not any(c.name.endswith("/picker") for c in clusters)
    options = HttpProtocolOptions()
    _cluster(clusters, "/pool/llama-3-8b").typed_extension_protocol_options[
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ].Unpack(options)
    assert options.explicit_http_config.HasField("http2_protocol_options")


def test_client_sent_rewrite_headers_are_stripped_under_both_names() -> None:
    from extserver.compile.filters.header_mutation import build_header_mutation_filter

    config = HeaderMutation()
    build_header_mutation_filter().typed_config.Unpack(config)
    removed = {m.remove for m in config.mutations.request_mutations}
    assert {"x-gateway-model-name-rewrite", "x-llm-d-model-name-rewrite"} <= removed


HTTPROUTE = {
    "metadata": {"name": "split", "namespace": "ai"},
    "spec": {
        "rules": [
            {
                "backendRefs": [
                    {
                        "group": "inference.networking.k8s.io",
                        "kind": "InferencePool",
                        "name": "pool",
                        "weight": 70,
                    },
                    {
                        "group": "inference.networking.k8s.io",
                        "kind": "InferencePool",
                        "name": "b",
                        "weight": 30,
                    },
                    {
                        "group": "inference.networking.k8s.io",
                        "kind": "InferencePool",
                        "name": "c",
                        "weight": 0,
                    },
                ]
            }
        ]
    },
}


def test_rule_backends_reads_weights() -> None:
    assert rule_backends([HTTPROUTE]) == {
        ("ai", "split", 0): RuleBackends((("ai", "pool", 70), ("ai", "b", 30), ("ai", "c", 0)), 0)
    }


def test_a_rule_over_three_pools_becomes_weighted_clusters_each_with_its_picker() -> None:
    inputs = _inputs({"ai/llm-picker": {}})
    (pool,) = inputs.pools
    others = tuple(replace(pool, meta=replace(pool.meta, name=name)) for name in ("b", "c"))
    inputs = replace(inputs, pools=(pool, *others), rules=rule_backends([HTTPROUTE]))
    route = Route(name="httproute/ai/split/rule/0/match/0/*")
    route.route.cluster = "httproute/ai/split/rule/0"
    resources = [
        {
            "apiVersion": "inference.networking.k8s.io/v1",
            "kind": "InferencePool",
            "metadata": {"namespace": "ai", "name": n},
        }
        for n in ("pool", "b", "c")
    ]
    patched = patch_route(route, resources, ["*"], inputs, OPTIONS)
    assert patched is not None
    entries = patched.route.weighted_clusters.clusters
    assert [(e.name, e.weight.value) for e in entries] == [("inference/ai/pool", 70), ("inference/ai/b", 30)]
    for entry, name in zip(entries, ("pool", "b"), strict=True):
        assert naming.ext_proc_filter("ai", name) in entry.typed_per_filter_config  # its own picker only
        assert (
            len([k for k in entry.typed_per_filter_config if k.startswith(naming.EXT_PROC_FILTER_PREFIX)])
            == 1
        )
    assert not any(k.startswith(naming.EXT_PROC_FILTER_PREFIX) for k in patched.typed_per_filter_config)


def test_a_rule_mixing_a_pool_and_a_service_is_a_problem_and_a_500() -> None:
    mixed = {
        "metadata": {"name": "mix", "namespace": "ai"},
        "spec": {
            "rules": [
                {
                    "backendRefs": [
                        {"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": "pool"},
                        {"name": "docs", "port": 80},
                    ]
                }
            ]
        },
    }
    inputs = replace(_inputs({"ai/llm-picker": {}}), rules=rule_backends([mixed]))
    (problem,) = [p for p in build_plan(inputs).problems if p.reason == Reason.MIXED_BACKENDS]
    assert (problem.name, problem.condition_type) == ("pool", "ResolvedRefs")
    route = Route(name="httproute/ai/mix/rule/0/match/0/*")
    route.route.cluster = "httproute/ai/mix/rule/0"
    resource = {
        "apiVersion": "inference.networking.k8s.io/v1",
        "kind": "InferencePool",
        "metadata": {"namespace": "ai", "name": "pool"},
    }
    patched = patch_route(route, [resource], ["*"], inputs, OPTIONS)
    assert patched is not None and patched.direct_response.status == 500
    assert not patched.HasField("route")
