"""compile_translation: EG's whole xDS (listeners, route configs, clusters) + CRDs -> xDS with inference."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.config.route.v3.route_components_pb2 import Route, RouteMatch, VirtualHost
from envoy.config.route.v3.route_pb2 import RouteConfiguration

from api.contract import MetadataKey, Role
from api.model import AttachTo
from api.parse import KIND_POOL
from extserver.compile import metadata, naming
from extserver.compile.cache import CompileCache, cached, plan_of
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
    listener_port,
    patch_listener_for_pools,
    route_config_names,
    strip_our_filters,
)
from extserver.compile.plan import Plan, PoolPlan
from extserver.compile.routes import (
    apply_pool_settings,
    build_catch_all_route,
    build_model_route,
    build_models_list_route,
    catch_all_metadata,
    model_route_template,
)
from extserver.eg import facts as eg

# Roles of resources we generate (removed and rebuilt on every pass); backend-ref ones are EG's, marked.
_GENERATED_ROLES = frozenset(
    {Role.TARGET, Role.CATCH_ALL, Role.PICKER, Role.MODEL_ROUTE, Role.MODELS_LIST, Role.VIRTUAL_HOST}
)
# EG's metadata namespace on its resources (a list of source objects under "resources").
# Envoy refuses direct-response bodies above this unless the route config raises it.
_DEFAULT_DIRECT_RESPONSE_LIMIT = 4096


@dataclass
class _Usage:
    """Which pools this translation serves, and where."""

    attach: dict[str, list[PoolPlan]] = field(default_factory=dict)  # route config -> attach-to pools
    backend: dict[str, list[PoolPlan]] = field(default_factory=dict)  # route config -> backendRef pools
    attached_pools: dict[tuple[str, str], PoolPlan] = field(default_factory=dict)
    backend_pools: dict[tuple[str, str], PoolPlan] = field(default_factory=dict)
    gateways: dict[tuple[str, str], set[str]] = field(default_factory=dict)  # pool -> "ns/name" Gateways

    def add_gateway(self, pool: tuple[str, str], gateway: str) -> None:
        self.gateways.setdefault(pool, set()).add(gateway)


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


def _assign_attach_to(
    plan: Plan,
    listeners: list[Listener],
    routes: Sequence[RouteConfiguration],
    usage: _Usage,
    problems: list[Problem],
) -> None:
    """Each attach-to pool to its Gateway listener; one pool per listener, the oldest."""
    owner: dict[str, PoolPlan] = {}
    for pool in sorted(plan.pools, key=lambda p: (p.created or "~", p.namespace, p.name)):
        if pool.attach_to is None:
            continue
        found = find_gateway_listeners(listeners, pool.attach_to)
        if not found:
            missing = _missing_listener_problem(pool, pool.attach_to, listeners, routes)
            if missing is not None:
                problems.append(missing)
                usage.add_gateway(pool.key, _gateway_key(pool.attach_to))
            continue
        usage.add_gateway(pool.key, _gateway_key(pool.attach_to))
        for index in found:
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


def _gateway_key(attach: AttachTo) -> str:
    return f"{attach.gateway_namespace}/{attach.gateway_name}"


def _missing_listener_problem(
    pool: PoolPlan, attach: AttachTo, listeners: Sequence[Listener], routes: Sequence[RouteConfiguration]
) -> Problem | None:
    """Why an attach-to pool found no listener, when this translation is about its Gateway; else None.

    EG translates each Gateway on its own (one call per Gateway): a Gateway absent from this call is
    served by another call, and says nothing here.
    """
    prefix = eg.DEFAULT_NAMES.listener_prefix(attach.gateway_namespace, attach.gateway_name)
    port = eg.container_port(attach.port)
    gateway = _gateway_key(attach)
    # With EG's mergeGateways, one Envoy listener per port carries every Gateway of the class and is
    # named after the first; the other Gateways show up only in its virtual hosts (EG metadata). A catch-all
    # there would take over the other Gateways' traffic on that port, so the pool is refused instead.
    merged_into = sorted(
        {
            lis.name
            for lis in listeners
            if listener_port(lis) == port
            for rc in routes
            if rc.name in route_config_names(lis)
            and any(gateway in _vhost_gateways(vh, []) for vh in rc.virtual_hosts)
        }
    )
    if merged_into:
        return Problem(
            KIND_POOL,
            pool.namespace,
            pool.name,
            Condition.ACCEPTED,
            Reason.MERGED_GATEWAY,
            f"Gateway {_gateway_key(attach)} shares Envoy listener {merged_into[0]} with other Gateways "
            "(EnvoyProxy mergeGateways): attaching a pool to a whole listener is not supported there; "
            "route to the pool with an HTTPRoute backendRef instead",
        )
    own = [lis for lis in listeners if lis.name.startswith(prefix)]
    if own:
        ports = sorted({p for p in (listener_port(lis) for lis in own) if p is not None})
        return Problem(
            KIND_POOL,
            pool.namespace,
            pool.name,
            Condition.ACCEPTED,
            Reason.NO_MATCHING_LISTENER,
            f"Gateway {_gateway_key(attach)} has no HTTP listener on port {attach.port} "
            f"(Envoy port {port}; its listeners use {ports})",
        )
    return None


def _vhost_gateways(vhost: VirtualHost, listeners_of_rc: Sequence[Listener]) -> set[str]:
    """Gateways ("ns/name") a virtual host serves: EG's metadata on it names its Gateway (any naming
    scheme, merged Gateways too); else the `<ns>/<gw>/` prefix of the listeners using its route config."""
    named = _eg_metadata_gateways(vhost)
    if named:
        return named
    return {"/".join(lis.name.split("/")[:2]) for lis in listeners_of_rc if lis.name.count("/") >= 2}


def _eg_metadata_gateways(vhost: VirtualHost) -> set[str]:
    if eg.METADATA_NAMESPACE not in vhost.metadata.filter_metadata:
        return set()
    resources = vhost.metadata.filter_metadata[eg.METADATA_NAMESPACE].fields.get("resources")
    if resources is None:
        return set()
    out = set()
    for item in resources.list_value.values:
        fields = item.struct_value.fields
        if "kind" in fields and fields["kind"].string_value == "Gateway" and "name" in fields:
            namespace = fields["namespace"].string_value if "namespace" in fields else ""
            out.add(f"{namespace}/{fields['name'].string_value}")
    return out


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


def _attach_routes(
    route_config: RouteConfiguration, pool: PoolPlan, options: CompileOptions, cache: CompileCache | None
) -> None:
    """The pool serves every request on the listener: /v1/models, its models, then its catch-all."""

    def build() -> list[Route]:
        template = model_route_template(pool, _prefix_all(), options)
        built = [build_models_list_route([pool], naming.models_list_route(pool.namespace, pool.name))]
        built.extend(
            build_model_route(pool, m, _prefix_all(), options, template=template) for m in pool.models
        )
        built.append(build_catch_all_route(pool, options))
        return built

    routes = cached(cache, ("attach-routes", pool, options), build)
    wildcard = next((vh for vh in route_config.virtual_hosts if "*" in vh.domains), None)
    if wildcard is None:
        vhost = VirtualHost(name=naming.pool_virtual_host(pool.namespace, pool.name), domains=["*"])
        metadata.set_ours(vhost.metadata, catch_all_metadata(pool, Role.VIRTUAL_HOST))
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
    cache: CompileCache | None,
    listeners_of_rc: Sequence[Listener],
) -> None:
    """Each marked EG route to a pool: per-model routes in front, EG's route stays as the pool catch-all."""
    for vhost in route_config.virtual_hosts:
        expanded: list[Route] = []
        changed = False
        for route in _copy_all(list(vhost.routes)):
            if metadata.role(route.metadata) != Role.BACKEND_REF:
                expanded.append(route)
                continue
            ns = str(metadata.string_field(route.metadata, MetadataKey.POOL_NAMESPACE))
            name = str(metadata.string_field(route.metadata, MetadataKey.POOL_NAME))
            for gateway in _vhost_gateways(vhost, listeners_of_rc):
                usage.add_gateway((ns, name), gateway)
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
            key = ("backend-routes", pool, options, route.SerializeToString(deterministic=True))
            expanded.extend(cached(cache, key, partial(_backend_pool_routes, route, pool, options)))
        if changed:
            del vhost.routes[:]
            vhost.routes.extend(expanded)
            _raise_direct_response_limit(route_config, expanded)


def _backend_pool_routes(route: Route, pool: PoolPlan, options: CompileOptions) -> list[Route]:
    """EG's route to a pool becomes: GET /v1/models (on a "/" prefix), one route per model, the catch-all."""
    values = metadata.ours(route.metadata) or {}
    eg_route = str(values.get(MetadataKey.EG_ROUTE) or route.name)
    catch_all = Route()
    catch_all.CopyFrom(route)
    metadata.set_ours(catch_all.metadata, catch_all_metadata(pool, Role.BACKEND_REF, eg_route))
    apply_pool_settings(catch_all, pool, options)
    routes = []
    if route.match.prefix == "/" and not route.match.headers and not route.match.query_parameters:
        routes.append(
            build_models_list_route([pool], naming.models_list_route(pool.namespace, pool.name, eg_route))
        )
    template = model_route_template(pool, route.match, options, parent_route=catch_all)
    routes.extend(
        build_model_route(pool, m, route.match, options, parent_route=catch_all, template=template)
        for m in pool.models
    )
    routes.append(catch_all)
    return routes


def _mark_backend_cluster(cluster: Cluster, pool: PoolPlan, options: CompileOptions) -> list[Cluster]:
    return [mark_backend_cluster(cluster, pool, options)]


def _refresh_backend_clusters(
    clusters: list[Cluster], plan: Plan, options: CompileOptions, cache: CompileCache | None
) -> list[Cluster]:
    refreshed = []
    for cluster in clusters:
        if metadata.role(cluster.metadata) == Role.BACKEND_REF:
            pool = plan.pool(
                str(metadata.string_field(cluster.metadata, MetadataKey.POOL_NAMESPACE)),
                str(metadata.string_field(cluster.metadata, MetadataKey.POOL_NAME)),
            )
            if pool is not None:
                key = ("backend-cluster", pool, options, cluster.SerializeToString(deterministic=True))
                build = partial(_mark_backend_cluster, cluster, pool, options)
                (cluster,) = cached(cache, key, build)
        refreshed.append(cluster)
    return refreshed


def compile_translation(
    clusters: Sequence[Cluster],
    listeners: Sequence[Listener],
    routes: Sequence[RouteConfiguration],
    inputs: CompileInputs,
    options: CompileOptions,
    cache: CompileCache | None = None,
) -> TranslationOutput:
    """Return EG's lists with our clusters, routes and filters added; a rerun on it changes nothing.

    `cache` (optional) reuses what earlier calls built for unchanged pools; the output is the same, but
    the clusters it built or marked are then shared with the cache: copy before changing them.
    """
    plan = plan_of(inputs, cache)
    problems = list(plan.problems)
    out_listeners = _copy_all(listeners)
    out_routes = _copy_all(routes)
    out_clusters = [c for c in _copy_all(clusters) if not _is_generated(metadata.role(c.metadata))]
    out_clusters = _refresh_backend_clusters(out_clusters, plan, options, cache)

    for listener in out_listeners:
        strip_our_filters(listener)
    for route_config in out_routes:
        _strip_generated_routes(route_config)

    usage = _Usage()
    _assign_attach_to(plan, out_listeners, out_routes, usage, problems)
    by_name = {rc.name: rc for rc in out_routes}
    for rc_name in sorted(usage.attach):
        if rc_name not in by_name:
            # EG sends no route config for a listener without routes: the pool brings its own.
            by_name[rc_name] = RouteConfiguration(name=rc_name, ignore_port_in_host_matching=True)
            out_routes.append(by_name[rc_name])
        for pool in usage.attach[rc_name]:
            _attach_routes(by_name[rc_name], pool, options, cache)
    listeners_by_rc: dict[str, list[Listener]] = {}
    for listener in out_listeners:
        for rc_name in route_config_names(listener):
            listeners_by_rc.setdefault(rc_name, []).append(listener)
    for route_config in out_routes:
        listeners_of_rc = listeners_by_rc.get(route_config.name, [])
        _expand_backend_routes(route_config, plan, options, usage, problems, cache, listeners_of_rc)

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
        with_catch_all = key in usage.attached_pools
        build = partial(build_pool_clusters, pool, options, with_catch_all)
        for cluster in cached(cache, ("clusters", pool, options, with_catch_all), build):
            ours[cluster.name] = cluster
    out_clusters = [c for c in out_clusters if c.name not in ours]
    out_clusters.extend(ours[name] for name in sorted(ours))
    unique = {(p.kind, p.namespace, p.name, p.condition_type, p.reason, p.message): p for p in problems}
    return TranslationOutput(
        clusters=out_clusters,
        listeners=out_listeners,
        routes=out_routes,
        problems=sorted(unique.values(), key=lambda p: (p.kind, p.namespace, p.name, p.reason, p.message)),
        pool_gateways={key: tuple(sorted(usage.gateways[key])) for key in sorted(usage.gateways)},
    )
