"""Shared by the compile tests: run a golden case (manifests -> EG-shaped xDS -> hooks -> compiler)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.config.route.v3.route_pb2 import RouteConfiguration
from google.protobuf.json_format import MessageToDict

from api.errors import ValidationError
from api.model import InferenceModel, InferencePool
from api.parse import describe, owns, parse_object
from api.rewrite import InferenceModelRewrite, InferenceObjective
from extserver.compile import (
    CompileInputs,
    CompileOptions,
    Problem,
    compile_translation,
    patch_cluster,
    patch_route,
)
from extserver.eg.call_order import find_cluster, find_route
from extserver.eg.resources import ClusterHookCall, EgXds, RouteHookCall
from extserver.eg.standin import build_eg_xds_by_gateway

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(p.stem for p in (GOLDEN / "in").glob("*.yaml"))
OPTIONS = CompileOptions()


def load_objects(case: str) -> list[dict[str, Any]]:
    with (GOLDEN / "in" / f"{case}.yaml").open() as f:
        return [doc for doc in yaml.safe_load_all(f) if isinstance(doc, dict)]


def compile_inputs(objects: Sequence[Mapping[str, Any]]) -> tuple[CompileInputs, list[str]]:
    """Parse the inference objects; validation errors are returned as text (the parser's concern)."""
    pools: list[InferencePool] = []
    models: list[InferenceModel] = []
    rewrites: list[InferenceModelRewrite] = []
    objectives: list[InferenceObjective] = []
    invalid: list[str] = []
    for obj in objects:
        if not owns(obj):
            continue
        try:
            parsed = parse_object(obj)
        except ValidationError as err:
            invalid.append(f"{describe(obj)}: {err}")
            continue
        if isinstance(parsed, InferencePool):
            pools.append(parsed)
        elif isinstance(parsed, InferenceModel):
            models.append(parsed)
        elif isinstance(parsed, InferenceModelRewrite):
            rewrites.append(parsed)
        else:
            objectives.append(parsed)
    inputs = CompileInputs(
        tuple(pools), tuple(models), rewrites=tuple(rewrites), objectives=tuple(objectives)
    )
    return inputs, invalid


def apply_hooks(eg: EgXds, inputs: CompileInputs, options: CompileOptions = OPTIONS) -> None:
    """Run the Route and Cluster hooks EG would call, in EG's order, in place."""
    for call in eg.hook_calls:
        if isinstance(call, RouteHookCall):
            route = find_route(eg, call)
            new = patch_route(route, call.extension_resources, call.hostnames, inputs, options)
            if new is not None:
                route.CopyFrom(new)
        elif isinstance(call, ClusterHookCall):
            cluster = find_cluster(eg, call.cluster_name)
            new_cluster = patch_cluster(cluster, call.backend_extension_resources, inputs, options)
            if new_cluster is not None:
                cluster.CopyFrom(new_cluster)


@dataclass
class GatewayResult:
    eg: EgXds
    clusters: list[Cluster]
    listeners: list[Listener]
    routes: list[RouteConfiguration]
    problems: list[Problem]


@dataclass
class CaseResult:
    inputs: CompileInputs
    invalid: list[str]
    gateways: dict[str, GatewayResult] = field(default_factory=dict)


def run_case(case: str) -> CaseResult:
    objects = load_objects(case)
    inputs, invalid = compile_inputs(objects)
    result = CaseResult(inputs, invalid)
    for gateway, eg in build_eg_xds_by_gateway(objects).items():
        apply_hooks(eg, inputs)
        out = compile_translation(eg.clusters, eg.listeners, eg.routes, inputs, OPTIONS)
        result.gateways[gateway] = GatewayResult(eg, out.clusters, out.listeners, out.routes, out.problems)
    return result


def as_dicts(messages: Sequence[Any]) -> list[dict[str, Any]]:
    return [MessageToDict(m) for m in messages]
