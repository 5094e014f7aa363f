"""compile_translation: EG's whole xDS (listeners, route configs, clusters) + CRDs -> xDS with inference."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.config.route.v3.route_components_pb2 import Route, RouteMatch, VirtualHost
from envoy.config.route.v3.route_pb2 import RouteConfiguration

from api.contract import CompileMetadataKey, CompileRole, MetadataKey, Role
from extserver.compile import metadata, naming
from extserver.compile.clusters import build_pool_clusters, mark_backend_cluster
from extserver.compile.inputs import (
    CompileInputs,
    CompileOptions,
    Condition,
    Problem,
    Reason,
    TranslationOutput,
)
from extserver.compile.listeners import (
    find_gateway_listeners,
    patch_listener_for_pools,
    route_config_names,
    strip_our_filters,
)
from extserver.compile.plan import KIND_POOL, Plan, PoolPlan, build_plan
from extserver.compile.routes import (
    apply_pool_settings,
    build_catch_all_route,
    build_model_route,
    build_models_list_route,
    catch_all_metadata,
)

# Roles of resources we generate (removed and rebuilt on every pass); backend-ref ones are EG's, marked.
_GENERATED_ROLES = frozenset(
    {Role.TARGET, Role.CATCH_ALL, Role.PICKER, Role.MODEL_ROUTE, Role.MODELS_LIST, CompileRole.VIRTUAL_HOST}
)
# Envoy refuses direct-response bodies above this unless the route config raises it.
_DEFAULT_DIRECT_RESPONSE_LIMIT = 4096


@dataclass
class _Usage:
    """Which pools this translation serves, and where."""

    attach: dict[str, list[PoolPlan]] = field(default_factory=dict)  # route config -> attach-to pools
    backend: dict[str, list[PoolPlan]] = field(default_factory=dict)  # route config -> backendRef pools
    attached_pools: dict[tuple[str, str], PoolPlan] = field(default_factory=dict)
    backend_pools: dict[tuple[str, str], PoolPlan] = field(default_factory=dict)


_Message = TypeVar("_Message", Cluster, Listener, RouteConfiguration, Route, VirtualHost)


def _copy_all(items: Sequence[_Message]) -> list[_Message]:
    """Fresh copies: the inputs stay untouched, and repeated-field edits never alias removed elements."""
    copies = []
    for item in items:
        copy = type(item)()
        copy.CopyFrom(item)
        copies.append(copy)
    return copies


def _is_generated(role: str | None) -> bool:
    return role in _GENERATED_ROLES


def _assign_attach_to(plan: Plan, listeners: list[Listener], usage: _Usage, problems: list[Problem]) -> None:
    """Each attach-to pool to its Gateway listener; one pool per listener, the oldest."""
    owner: dict[str, PoolPlan] = {}
    for pool in sorted(plan.pools, key=lambda p: (p.created or "~", p.namespace, p.name)):
        if pool.attach_to is None:
            continue
        for index in find_gateway_listeners(listeners, pool.attach_to):
            for rc_name in route_config_names(listeners[index]):
                holder = owner.get(rc_name)
                if holder is not None:
                    problems.append(
                        Problem(
                            KIND_POOL,
                            pool.namespace,
                            pool.name,
                            Condition.ACCEPTED,
                            Reason.LISTENER_IN_USE,
                            f"listener {listeners[index].name} already serves the older InferencePool "
                            f"{holder.namespace}/{holder.name}",
                        )
                    )
                    continue
                owner[rc_name] = pool
                usage.attach.setdefault(rc_name, []).append(pool)
                usage.attached_pools[pool.key] = pool


def _strip_generated_routes(route_config: RouteConfiguration) -> None:
    kept_hosts = [vh for vh in route_config.virtual_hosts if not _is_generated(metadata.role(vh.metadata))]
    for vhost in kept_hosts:
        kept = _copy_all([r for r in vhost.routes if not _is_generated(metadata.role(r.metadata))])
        if len(kept) != len(vhost.routes):
            del vhost.routes[:]
            vhost.routes.extend(kept)
    if len(kept_hosts) != len(route_config.virtual_hosts):
        copies = _copy_all(kept_hosts)
        del route_config.virtual_hosts[:]
        route_config.virtual_hosts.extend(copies)


def _raise_direct_response_limit(route_config: RouteConfiguration, routes: Sequence[Route]) -> None:
    needed = max(
        (len(r.direct_response.body.inline_string.encode()) for r in routes if r.HasField("direct_response")),
        default=0,
    )
    current = route_config.max_direct_response_body_size_bytes.value or _DEFAULT_DIRECT_RESPONSE_LIMIT
    if needed > current:
        route_config.max_direct_response_body_size_bytes.value = needed


def _attach_routes(route_config: RouteConfiguration, pool: PoolPlan, options: CompileOptions) -> None:
    """The pool serves every request on the listener: /v1/models, its models, then its catch-all."""
    routes = [build_models_list_route([pool], naming.models_list_route(pool.namespace, pool.name))]
    routes.extend(build_model_route(pool, m, _prefix_all(), options) for m in pool.models)
    routes.append(build_catch_all_route(pool, options))
    wildcard = next((vh for vh in route_config.virtual_hosts if "*" in vh.domains), None)
    if wildcard is None:
        vhost = VirtualHost(name=naming.pool_virtual_host(pool.namespace, pool.name), domains=["*"])
        metadata.set_ours(vhost.metadata, catch_all_metadata(pool, CompileRole.VIRTUAL_HOST))
        vhost.routes.extend(routes)
        route_config.virtual_hosts.append(vhost)
    else:
        existing = _copy_all(list(wildcard.routes))
        del wildcard.routes[:]
        wildcard.routes.extend([*routes, *existing])
    _raise_direct_response_limit(route_config, routes)


def _prefix_all() -> RouteMatch:
    return RouteMatch(prefix="/")


def _expand_backend_routes(
    route_config: RouteConfiguration,
    plan: Plan,
    options: CompileOptions,
    usage: _Usage,
    problems: list[Problem],
) -> None:
    """Each marked EG route to a pool: per-model routes in front, EG's route stays as the pool catch-all."""
    for vhost in route_config.virtual_hosts:
        expanded: list[Route] = []
        changed = False
        for route in _copy_all(list(vhost.routes)):
            values = metadata.ours(route.metadata)
            if values is None or values.get(MetadataKey.ROLE) != CompileRole.BACKEND_REF:
                expanded.append(route)
                continue
            ns, name = str(values.get(MetadataKey.POOL_NAMESPACE)), str(values.get(MetadataKey.POOL_NAME))
            pool = plan.pool(ns, name)
            if pool is None:
                problems.append(
                    Problem(
                        KIND_POOL,
                        ns,
                        name,
                        Condition.RESOLVED_REFS,
                        Reason.POOL_NOT_FOUND,
                        f"HTTPRoute backendRef (route {route.name}) names an InferencePool that is not known "
                        "or not valid",
                    )
                )
                expanded.append(route)
                continue
            changed = True
            usage.backend.setdefault(route_config.name, []).append(pool)
            usage.backend_pools[pool.key] = pool
            eg_route = str(values.get(CompileMetadataKey.EG_ROUTE) or route.name)
            catch_all = Route()
            catch_all.CopyFrom(route)
            metadata.set_ours(catch_all.metadata, catch_all_metadata(pool, CompileRole.BACKEND_REF, eg_route))
            apply_pool_settings(catch_all, pool, options)
            if route.match.prefix == "/" and not route.match.headers and not route.match.query_parameters:
                expanded.append(
                    build_models_list_route(
                        [pool], naming.models_list_route(pool.namespace, pool.name, eg_route)
                    )
                )
            expanded.extend(
                build_model_route(pool, m, route.match, options, parent_route=catch_all) for m in pool.models
            )
            expanded.append(catch_all)
        if changed:
            del vhost.routes[:]
            vhost.routes.extend(expanded)
            _raise_direct_response_limit(route_config, expanded)


def _refresh_backend_clusters(clusters: list[Cluster], plan: Plan, options: CompileOptions) -> list[Cluster]:
    refreshed = []
    for cluster in clusters:
        values = metadata.ours(cluster.metadata)
        if values is not None and values.get(MetadataKey.ROLE) == CompileRole.BACKEND_REF:
            pool = plan.pool(
                str(values.get(MetadataKey.POOL_NAMESPACE)), str(values.get(MetadataKey.POOL_NAME))
            )
            if pool is not None:
                cluster = mark_backend_cluster(cluster, pool, options)
        refreshed.append(cluster)
    return refreshed


def compile_translation(
    clusters: Sequence[Cluster],
    listeners: Sequence[Listener],
    routes: Sequence[RouteConfiguration],
    inputs: CompileInputs,
    options: CompileOptions,
) -> TranslationOutput:
    """Return EG's lists with our clusters, routes and filters added; a rerun on it changes nothing."""
    plan = build_plan(inputs)
    problems = list(plan.problems)
    out_listeners = _copy_all(listeners)
    out_routes = _copy_all(routes)
    out_clusters = [c for c in _copy_all(clusters) if not _is_generated(metadata.role(c.metadata))]
    out_clusters = _refresh_backend_clusters(out_clusters, plan, options)

    for listener in out_listeners:
        strip_our_filters(listener)
    for route_config in out_routes:
        _strip_generated_routes(route_config)

    usage = _Usage()
    _assign_attach_to(plan, out_listeners, usage, problems)
    by_name = {rc.name: rc for rc in out_routes}
    for rc_name in sorted(usage.attach):
        if rc_name not in by_name:
            # EG sends no route config for a listener without routes: the pool brings its own.
            by_name[rc_name] = RouteConfiguration(name=rc_name, ignore_port_in_host_matching=True)
            out_routes.append(by_name[rc_name])
        for pool in usage.attach[rc_name]:
            _attach_routes(by_name[rc_name], pool, options)
    for route_config in out_routes:
        _expand_backend_routes(route_config, plan, options, usage, problems)

    pools_by_rc: dict[str, list[PoolPlan]] = {}
    for source in (usage.attach, usage.backend):
        for rc_name, pools in source.items():
            merged = {p.key: p for p in pools_by_rc.get(rc_name, [])}
            merged.update({p.key: p for p in pools})
            pools_by_rc[rc_name] = [merged[k] for k in sorted(merged)]
    for listener in out_listeners:
        patch_listener_for_pools(listener, pools_by_rc, options)

    ours: dict[str, Cluster] = {}
    for key in sorted(set(usage.attached_pools) | set(usage.backend_pools)):
        pool = usage.attached_pools.get(key) or usage.backend_pools[key]
        for cluster in build_pool_clusters(pool, options, with_catch_all=key in usage.attached_pools):
            ours[cluster.name] = cluster
    out_clusters = [c for c in out_clusters if c.name not in ours]
    out_clusters.extend(ours[name] for name in sorted(ours))
    unique = {(p.kind, p.namespace, p.name, p.condition_type, p.reason, p.message): p for p in problems}
    return TranslationOutput(
        clusters=out_clusters,
        listeners=out_listeners,
        routes=out_routes,
        problems=sorted(unique.values(), key=lambda p: (p.kind, p.namespace, p.name, p.reason, p.message)),
    )
