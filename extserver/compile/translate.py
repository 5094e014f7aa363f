"""compile_translation: EG's whole xDS (listeners, route configs, clusters) + CRDs -> xDS with inference."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.config.route.v3.route_components_pb2 import Route, RouteMatch, VirtualHost
from envoy.config.route.v3.route_pb2 import RouteConfiguration

from api.contract import MetadataKey, Role
from api.parse import KIND_POOL
from extserver.compile import metadata, naming
from extserver.compile.attach import AttachAssignment, assign_attach_to, virtual_host_gateways
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
from extserver.compile.listeners import patch_listener_for_pools, route_config_names, strip_our_filters
from extserver.compile.mirror import MirrorUse, apply_mirrors
from extserver.compile.mirror_listener import (
    build_mirror_cluster,
    build_mirror_listener,
    build_mirror_route_config,
)
from extserver.compile.objectives import with_objective_variants
from extserver.compile.plan import Plan, PoolPlan
from extserver.compile.routes import (
    apply_pool_settings,
    build_catch_all_route,
    build_model_routes,
    build_models_list_route,
    catch_all_metadata,
    model_route_template,
)
from extserver.compile.weighted_pools import weighted_pools

# Roles of resources we generate (removed and rebuilt on every pass); backend-ref ones are EG's, marked.
_GENERATED_ROLES = frozenset(
    {
        Role.TARGET,
        Role.CATCH_ALL,
        Role.PICKER,
        Role.MODEL_ROUTE,
        Role.MODELS_LIST,
        Role.VIRTUAL_HOST,
        Role.MIRROR,
    }
)
# Envoy refuses direct-response bodies above this unless the route config raises it.
_DEFAULT_DIRECT_RESPONSE_LIMIT = 4096


@dataclass
class _BackendUse:
    """What expanding EG's routes to pools (HTTPRoute backendRefs) found."""

    route_configs: dict[str, list[PoolPlan]] = field(default_factory=dict)  # route config -> pools
    pools: dict[tuple[str, str], PoolPlan] = field(default_factory=dict)
    gateways: dict[tuple[str, str], set[str]] = field(default_factory=dict)  # pool -> "ns/name" Gateways
    problems: list[Problem] = field(default_factory=list)
    split: set[tuple[str, str]] = field(default_factory=set)  # pools of weighted-pools routes


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
            with_objective_variants(
                (
                    route
                    for m in pool.models
                    for route in build_model_routes(pool, m, _prefix_all(), options, template=template)
                ),
                pool,
            )
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
    use: _BackendUse,
    cache: CompileCache | None,
    listeners_of_rc: Sequence[Listener],
) -> None:
    """Each marked EG route to a pool: per-model routes in front, EG's route stays as the pool catch-all."""
    for vhost in route_config.virtual_hosts:
        expanded: list[Route] = []
        changed = False
        for route in _copy_all(list(vhost.routes)):
            role = metadata.role(route.metadata)
            if role == Role.WEIGHTED_POOLS:
                _use_weighted_pools(route, route_config.name, vhost, listeners_of_rc, plan, use)
            if role == Role.MIXED_BACKENDS:  # only its status parents
                rejected = (
                    str(metadata.string_field(route.metadata, MetadataKey.POOL_NAMESPACE)),
                    str(metadata.string_field(route.metadata, MetadataKey.POOL_NAME)),
                )
                for gateway in virtual_host_gateways(vhost, listeners_of_rc):
                    use.gateways.setdefault(rejected, set()).add(gateway)
            if role != Role.BACKEND_REF:
                expanded.append(route)
                continue
            ns = str(metadata.string_field(route.metadata, MetadataKey.POOL_NAMESPACE))
            name = str(metadata.string_field(route.metadata, MetadataKey.POOL_NAME))
            for gateway in virtual_host_gateways(vhost, listeners_of_rc):
                use.gateways.setdefault((ns, name), set()).add(gateway)
            pool = plan.pool(ns, name)
            if pool is None:
                use.problems.append(
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
            use.route_configs.setdefault(route_config.name, []).append(pool)
            use.pools[pool.key] = pool
            key = ("backend-routes", pool, options, route.SerializeToString(deterministic=True))
            expanded.extend(cached(cache, key, partial(_backend_pool_routes, route, pool, options)))
        if changed:
            del vhost.routes[:]
            vhost.routes.extend(expanded)
            _raise_direct_response_limit(route_config, expanded)


def _use_weighted_pools(
    route: Route,
    rc_name: str,
    vhost: VirtualHost,
    listeners_of_rc: Sequence[Listener],
    plan: Plan,
    use: _BackendUse,
) -> None:
    """A weighted-pools route stays as the Route hook made it; its pools need their filters and clusters."""
    for key in weighted_pools(route):
        for gateway in virtual_host_gateways(vhost, listeners_of_rc):
            use.gateways.setdefault(key, set()).add(gateway)
        pool = plan.pool(*key)
        if pool is None:
            continue
        use.route_configs.setdefault(rc_name, []).append(pool)
        use.pools[pool.key] = pool
        use.split.add(pool.key)


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
        with_objective_variants(
            (
                model_route
                for m in pool.models
                for model_route in build_model_routes(
                    pool, m, route.match, options, parent_route=catch_all, template=template
                )
            ),
            pool,
        )
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
    call_gateways: frozenset[str] = frozenset(),
) -> TranslationOutput:
    """Return EG's lists with our clusters, routes and filters added; a rerun on it changes nothing.

    `cache` (optional) reuses what earlier calls built for unchanged pools; the output is the same, but
    the clusters it built or marked are then shared with the cache: copy before changing them.
    `call_gateways`: the Gateways ("ns/name") EG says this call is for (extserver/revisions.py), which
    is how listeners named without their Gateway (XDSNameSchemeV2: `tcp-<port>`) are told apart.
    """
    plan = plan_of(inputs, cache)
    out_listeners = [lis for lis in _copy_all(listeners) if not _is_generated(metadata.role(lis.metadata))]
    out_routes = [rc for rc in _copy_all(routes) if not naming.is_mirror_name(rc.name)]
    out_clusters = [c for c in _copy_all(clusters) if not _is_generated(metadata.role(c.metadata))]
    out_clusters = _refresh_backend_clusters(out_clusters, plan, options, cache)
    for listener in out_listeners:
        strip_our_filters(listener)
    for route_config in out_routes:
        _strip_generated_routes(route_config)

    attached = assign_attach_to(plan, out_listeners, out_routes, call_gateways)
    out_routes.extend(_add_attach_routes(out_routes, attached, options, cache))
    # Route configuration -> its listeners (for the Gateways each virtual host serves), shared by both
    # passes below: patching the listeners' filters keeps their route configurations.
    listeners_by_rc = _listeners_by_route_config(out_listeners)
    backend = _expand_all_backend_routes(out_routes, listeners_by_rc, plan, options, cache)
    pools_by_rc = _pools_by_route_config(attached, backend)
    for listener in out_listeners:
        patch_listener_for_pools(listener, pools_by_rc, options)
    mirrors = _apply_all_mirrors(out_routes, listeners_by_rc, plan, inputs, naming.mirror_name(call_gateways))
    if mirrors.targets:
        shadow_pools = sorted(mirrors.pools.values(), key=lambda p: p.key)
        out_listeners.append(build_mirror_listener(mirrors.name, shadow_pools, options))
        out_routes.append(build_mirror_route_config(mirrors.name, list(mirrors.targets.values()), options))
        out_clusters.append(build_mirror_cluster(mirrors.name, options))
    # Shadow pools need every cluster an attached pool has (their catch-all included).
    with_catch_all = {**mirrors.pools, **attached.pools}
    out_clusters = _with_pool_clusters(
        out_clusters, with_catch_all, backend.pools, backend.split, options, cache
    )

    problems = [*plan.problems, *attached.problems, *backend.problems, *mirrors.problems]
    unique = {(p.kind, p.namespace, p.name, p.condition_type, p.reason, p.message): p for p in problems}
    gateways = {key: set(found) for key, found in backend.gateways.items()}
    for key, gateway in attached.gateways:
        gateways.setdefault(key, set()).add(gateway)
    for key, found in mirrors.gateways.items():
        gateways.setdefault(key, set()).update(found)
    return TranslationOutput(
        clusters=out_clusters,
        listeners=out_listeners,
        routes=out_routes,
        problems=sorted(unique.values(), key=lambda p: (p.kind, p.namespace, p.name, p.reason, p.message)),
        pool_gateways={key: tuple(sorted(gateways[key])) for key in sorted(gateways)},
    )


def _listeners_by_route_config(listeners: Sequence[Listener]) -> dict[str, list[Listener]]:
    found: dict[str, list[Listener]] = {}
    for listener in listeners:
        for rc_name in route_config_names(listener):
            found.setdefault(rc_name, []).append(listener)
    return found


def _apply_all_mirrors(
    routes: Sequence[RouteConfiguration],
    listeners_by_rc: Mapping[str, Sequence[Listener]],
    plan: Plan,
    inputs: CompileInputs,
    name: str,
) -> MirrorUse:
    """Mirror policies on every pool route (HTTPRoute RequestMirror filters, mirror annotations)."""
    use = MirrorUse(name)
    for route_config in routes:
        for vhost in route_config.virtual_hosts:
            gateways = sorted(virtual_host_gateways(vhost, listeners_by_rc.get(route_config.name, [])))
            for route in vhost.routes:
                if route.HasField("route"):
                    apply_mirrors(route, plan, inputs, gateways, use)
    return use


def _add_attach_routes(
    routes: Sequence[RouteConfiguration],
    attached: AttachAssignment,
    options: CompileOptions,
    cache: CompileCache | None,
) -> list[RouteConfiguration]:
    """Each attach-to pool's routes into its route configurations; returns the ones it had to create
    (EG sends no route configuration for a listener without routes: the pool brings its own)."""
    by_name = {rc.name: rc for rc in routes}
    created = []
    for rc_name, pool in attached.owners:
        if rc_name not in by_name:
            by_name[rc_name] = RouteConfiguration(name=rc_name, ignore_port_in_host_matching=True)
            created.append(by_name[rc_name])
        _attach_routes(by_name[rc_name], pool, options, cache)
    return created


def _expand_all_backend_routes(
    routes: Sequence[RouteConfiguration],
    listeners_by_rc: Mapping[str, Sequence[Listener]],
    plan: Plan,
    options: CompileOptions,
    cache: CompileCache | None,
) -> _BackendUse:
    use = _BackendUse()
    for route_config in routes:
        listeners_of_rc = listeners_by_rc.get(route_config.name, [])
        _expand_backend_routes(route_config, plan, options, use, cache, listeners_of_rc)
    return use


def _pools_by_route_config(attached: AttachAssignment, backend: _BackendUse) -> dict[str, list[PoolPlan]]:
    """Route configuration -> the pools it serves (attach-to and backendRef), by pool key."""
    merged: dict[str, dict[tuple[str, str], PoolPlan]] = {}
    for rc_name, pool in attached.owners:
        merged.setdefault(rc_name, {})[pool.key] = pool
    for rc_name, pools in backend.route_configs.items():
        merged.setdefault(rc_name, {}).update({p.key: p for p in pools})
    return {rc_name: [pools[k] for k in sorted(pools)] for rc_name, pools in merged.items()}


def _with_pool_clusters(
    clusters: list[Cluster],
    attached: dict[tuple[str, str], PoolPlan],
    backend: dict[tuple[str, str], PoolPlan],
    split: set[tuple[str, str]],
    options: CompileOptions,
    cache: CompileCache | None,
) -> list[Cluster]:
    """EG's clusters plus each served pool's (a catch-all cluster only for attach-to pools and pools of a
    weighted split: a plain backendRef's catch-all is EG's own cluster, marked)."""
    ours: dict[str, Cluster] = {}
    for key in sorted(set(attached) | set(backend)):
        pool = attached.get(key) or backend[key]
        with_catch_all = key in attached or key in split
        build = partial(build_pool_clusters, pool, options, with_catch_all)
        for cluster in cached(cache, ("clusters", pool, options, with_catch_all), build):
            ours[cluster.name] = cluster
    kept = [c for c in clusters if c.name not in ours]
    kept.extend(ours[name] for name in sorted(ours))
    return kept
