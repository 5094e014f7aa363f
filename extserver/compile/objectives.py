"""InferenceObjective variants of model routes: requests naming an objective get its priority.

A variant is the model route plus an exact match on `x-gateway-inference-objective`, placed before the
plain route, whose metadata carries the objective's priority and the criticality mapped from it. A
header naming no objective of the pool matches no variant and falls through to the plain route.
"""

from __future__ import annotations

from collections.abc import Iterable

from envoy.config.route.v3.route_components_pb2 import Route

from api.contract import HEADER_INFERENCE_OBJECTIVE, MetadataKey
from extserver.compile import metadata, naming
from extserver.compile.plan import PoolPlan
from extserver.compile.plan_canary import ObjectivePlan


def objective_variant(route: Route, objective: ObjectivePlan) -> Route:
    variant = Route()
    variant.CopyFrom(route)
    variant.name = naming.objective_route(route.name, objective.name)
    header = variant.match.headers.add(name=HEADER_INFERENCE_OBJECTIVE)
    header.string_match.exact = objective.name
    fields = metadata.ours_struct(variant.metadata).fields
    fields[MetadataKey.PRIORITY].number_value = objective.priority
    fields[MetadataKey.CRITICALITY].string_value = objective.criticality
    fields[MetadataKey.OBJECTIVE].string_value = objective.name
    return variant


def with_objective_variants(routes: Iterable[Route], pool: PoolPlan) -> list[Route]:
    """Each route preceded by one variant per objective of the pool (none: the routes unchanged)."""
    out: list[Route] = []
    for route in routes:
        out.extend(objective_variant(route, objective) for objective in pool.objectives)
        out.append(route)
    return out
