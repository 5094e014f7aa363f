"""One HTTPRoute rule with backendRefs to several InferencePools: a weighted split, each pool its own picker.

Envoy Gateway turns such a rule into one cluster and hands both pools to the hooks with no weights
(docs/xds.md, "Weighted pools"). The weights come from the HTTPRoute itself, which the extension server
reads; the route becomes `weighted_clusters` over each pool's catch-all cluster, and every entry switches
on that pool's picker alone, so Envoy draws the pool first and only its picker is asked.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from envoy.config.route.v3.route_components_pb2 import Route

from api.contract import MetadataKey, Role
from api.httproute import RuleKey
from api.parse import KIND_POOL
from extserver.compile import metadata, naming
from extserver.compile.inputs import CompileOptions
from extserver.compile.plan import PoolPlan
from extserver.compile.routes import apply_pool_settings, pool_entry_settings, served_upstream_header

_EG_RULE_ROUTE = re.compile(r"^httproute/(?P<ns>[^/]+)/(?P<name>[^/]+)/rule/(?P<rule>\d+)(/|$)")


def rule_of(route_name: str) -> RuleKey | None:
    """The HTTPRoute rule EG built a route for, from its name (`httproute/<ns>/<name>/rule/<i>/...`)."""
    found = _EG_RULE_ROUTE.match(route_name)
    return None if found is None else (found["ns"], found["name"], int(found["rule"]))


def build_weighted_pools_route(
    route: Route, pools: Sequence[tuple[PoolPlan, int]], options: CompileOptions
) -> Route:
    """EG's route with its single cluster replaced by the pools' catch-all clusters and their weights."""
    result = Route()
    result.CopyFrom(route)
    apply_pool_settings(result, pools[0][0], options, per_route_picker=False)
    weighted = result.route.weighted_clusters
    result.route.ClearField("cluster")
    weighted.SetInParent()
    entries: list[dict[str, object]] = []
    for pool, weight in pools:
        entries.append(
            {
                MetadataKey.POOL_NAMESPACE: pool.namespace,
                MetadataKey.POOL_NAME: pool.name,
                MetadataKey.WEIGHT: weight,
                MetadataKey.CLUSTER: pool.catch_all_cluster,
            }
        )
        if weight <= 0:
            continue  # HTTPRoute weight 0: the pool gets nothing
        entry = weighted.clusters.add(name=pool.catch_all_cluster)
        entry.weight.value = weight
        pool_entry_settings(entry.typed_per_filter_config, pool)
        served_upstream_header(entry.response_headers_to_add, pool)
    metadata.set_ours(
        result.metadata,
        {
            MetadataKey.ROLE: Role.WEIGHTED_POOLS,
            MetadataKey.SOURCE: ",".join(naming.source(KIND_POOL, p.namespace, p.name) for p, _ in pools),
            MetadataKey.EG_ROUTE: route.name,
            MetadataKey.POOLS: entries,
        },
    )
    return result


def weighted_pools(route: Route) -> list[tuple[str, str]]:
    """The pools ("ns", "name") a weighted-pools route sends to (from its metadata)."""
    values = metadata.ours(route.metadata) or {}
    return [
        (str(e[MetadataKey.POOL_NAMESPACE]), str(e[MetadataKey.POOL_NAME]))
        for e in values.get(MetadataKey.POOLS) or []
        if isinstance(e, Mapping)
    ]
