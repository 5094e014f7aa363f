"""InferencePools used as HTTPRoute backendRefs: mark EG's cluster and route (Cluster and Route hooks)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.route.v3.route_components_pb2 import Route

from api.contract import MetadataKey, Role
from api.httproute import RuleBackends
from api.model import POOL_API_VERSIONS
from api.parse import KIND_POOL
from extserver.compile import metadata, naming
from extserver.compile.cache import CompileCache, plan_of
from extserver.compile.clusters import mark_backend_cluster
from extserver.compile.inputs import CompileInputs, CompileOptions
from extserver.compile.plan import PoolPlan
from extserver.compile.routes import ROUTE_TIMEOUT_SECONDS, apply_pool_settings, catch_all_metadata
from extserver.compile.weighted_pools import build_weighted_pools_route, rule_of


@dataclass(frozen=True)
class PoolReference:
    api_version: str
    namespace: str
    name: str


def find_pool_references(resources: Sequence[Mapping[str, Any]]) -> list[PoolReference]:
    """The InferencePools (any served version) among EG's extension/backend resources, in order."""
    found = []
    for resource in resources:
        if resource.get("kind") != KIND_POOL or resource.get("apiVersion") not in POOL_API_VERSIONS:
            continue
        meta = resource.get("metadata")
        if not isinstance(meta, Mapping) or not meta.get("name"):
            continue
        found.append(
            PoolReference(
                str(resource["apiVersion"]), str(meta.get("namespace") or "default"), str(meta["name"])
            )
        )
    return found


def find_pool_reference(resources: Sequence[Mapping[str, Any]]) -> PoolReference | None:
    """The first InferencePool among EG's extension/backend resources."""
    found = find_pool_references(resources)
    return found[0] if found else None


def _identity(ref: PoolReference, eg_name: str) -> dict[str, object]:
    # A pool we do not know (yet): mark it anyway so the Translation hook can report it.
    return {
        MetadataKey.ROLE: Role.BACKEND_REF,
        MetadataKey.POOL_NAMESPACE: ref.namespace,
        MetadataKey.POOL_NAME: ref.name,
        MetadataKey.SOURCE: naming.source(KIND_POOL, ref.namespace, ref.name),
        MetadataKey.EG_ROUTE: eg_name,
    }


def patch_cluster(
    cluster: Cluster,
    backend_resources: Sequence[Mapping[str, Any]],
    inputs: CompileInputs,
    options: CompileOptions,
    cache: CompileCache | None = None,
) -> Cluster | None:
    """EG's cluster for a pool backendRef becomes the pool catch-all, marked; None if not a pool's."""
    ref = find_pool_reference(backend_resources)
    if ref is None or _mixed(cluster.name, inputs):
        return None
    pool = plan_of(inputs, cache).pool(ref.namespace, ref.name)
    if pool is None:
        result = Cluster()
        result.CopyFrom(cluster)
        values = _identity(ref, cluster.name)
        del values[MetadataKey.EG_ROUTE]
        metadata.set_ours(result.metadata, values)
    else:
        result = mark_backend_cluster(cluster, pool, options)
    return None if result == cluster else result


def patch_route(
    route: Route,
    extension_resources: Sequence[Mapping[str, Any]],
    hostnames: Sequence[str],
    inputs: CompileInputs,
    options: CompileOptions,
    cache: CompileCache | None = None,
) -> Route | None:
    """Mark EG's route to a pool (the Translation hook expands it per model); None if not a pool's."""
    del hostnames  # the route already carries its virtual host's match; nothing host-specific to add
    refs = find_pool_references(extension_resources)
    if refs and not route.HasField("route"):
        route = _undo_mirror_refusal(route, inputs) or route
    if not refs or not route.HasField("route"):
        return None  # EG answers unresolved backends with a direct response: leave it
    if _mixed(route.name, inputs):
        return mixed_backends_route(route, refs[0])
    if len(refs) > 1:
        split = _weighted_split(route, refs, inputs, cache)
        if split is not None:
            return build_weighted_pools_route(route, split, options)
    ref = refs[0]
    result = Route()
    result.CopyFrom(route)
    pool = plan_of(inputs, cache).pool(ref.namespace, ref.name)
    if pool is None:
        metadata.set_ours(result.metadata, _identity(ref, route.name))
    else:
        values = catch_all_metadata(pool, Role.BACKEND_REF, eg_route=route.name)
        metadata.set_ours(result.metadata, values)
        apply_pool_settings(result, pool, options)
    return None if result == route else result


def _undo_mirror_refusal(route: Route, inputs: CompileInputs) -> Route | None:
    """EG v1.9 accepts only Services as RequestMirror backends and answers a rule that mirrors to an
    InferencePool with 500 (its HTTPRoute status says ResolvedRefs=False, InvalidKind). When that
    refusal is the only thing wrong with the rule, give the route its rule's cluster back; the
    Translation hook adds the mirror."""
    backends = _rule_backends(route.name, inputs)
    rule = rule_of(route.name)
    if (
        rule is None
        or backends is None
        or not backends.pool_mirrors
        or not backends.only_harmless_filters
        or route.direct_response.status != 500
    ):
        return None
    repaired = Route()
    repaired.CopyFrom(route)
    repaired.ClearField("direct_response")
    repaired.route.cluster = naming.eg_rule_cluster(*rule)
    repaired.route.timeout.seconds = ROUTE_TIMEOUT_SECONDS
    return repaired


def _rule_backends(eg_name: str, inputs: CompileInputs) -> RuleBackends | None:
    """The HTTPRoute rule EG named this route or cluster after, if the source reads HTTPRoutes."""
    rule = rule_of(eg_name)
    return None if rule is None or inputs.rules is None else inputs.rules.get(rule)


def _mixed(eg_name: str, inputs: CompileInputs) -> bool:
    """Whether that rule also sends to other backends (Services)."""
    backends = _rule_backends(eg_name, inputs)
    return backends is not None and backends.others > 0


def mixed_backends_route(route: Route, ref: PoolReference) -> Route:
    """A rule with pools and Services: a clear 500 instead of a silent mix (the pool's condition says why)."""
    result = Route()
    result.CopyFrom(route)
    result.ClearField("route")
    result.direct_response.status = 500
    result.direct_response.body.inline_string = (
        '{"error":{"message":"this HTTPRoute rule mixes InferencePools with other backendRefs, which is not '
        'supported","type":"server_error","code":500}}'
    )
    values = _identity(ref, route.name)
    values[MetadataKey.ROLE] = Role.MIXED_BACKENDS
    metadata.set_ours(result.metadata, values)
    return result


def _weighted_split(
    route: Route, refs: Sequence[PoolReference], inputs: CompileInputs, cache: CompileCache | None
) -> list[tuple[PoolPlan, int]] | None:
    """Each pool of the route's rule with its HTTPRoute weight (1 each when the rule is not known)."""
    plan = plan_of(inputs, cache)
    backends = _rule_backends(route.name, inputs)
    weights = {(ns, name): weight for ns, name, weight in backends.pools} if backends else {}
    split = []
    for ref in refs:
        pool = plan.pool(ref.namespace, ref.name)
        if pool is None:
            return None  # an unknown pool: the plain path reports it
        split.append((pool, weights.get((ref.namespace, ref.name), 1)))
    return split
