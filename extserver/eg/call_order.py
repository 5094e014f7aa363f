"""Envoy Gateway's hook call order: the Route and Cluster hooks per resource, then the Translation hook,
over what the stand-in (extserver.eg.standin) built, against in-process hooks or a gRPC stub."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.route.v3.route_components_pb2 import Route

from api.egextension.context_pb2 import PostClusterExtensionContext, PostRouteExtensionContext
from api.egextension.service_pb2 import (
    PostClusterModifyRequest,
    PostClusterModifyResponse,
    PostRouteModifyRequest,
    PostRouteModifyResponse,
    PostTranslateModifyRequest,
    PostTranslateModifyResponse,
)
from extserver.eg.resources import ClusterHookCall, EgXds, RouteHookCall
from extserver.hooks.cluster import post_cluster_modify
from extserver.hooks.context import HookContext, encode_resource
from extserver.hooks.route import post_route_modify
from extserver.hooks.translation import post_translate_modify


def route_request(xds: EgXds, call: RouteHookCall) -> PostRouteModifyRequest:
    """The PostRouteModify request EG would send for this call."""
    return PostRouteModifyRequest(
        route=find_route(xds, call),
        post_route_context=PostRouteExtensionContext(
            extension_resources=[encode_resource(r) for r in call.extension_resources],
            hostnames=list(call.hostnames),
        ),
    )


def cluster_request(xds: EgXds, call: ClusterHookCall) -> PostClusterModifyRequest:
    """The PostClusterModify request EG would send for this call."""
    return PostClusterModifyRequest(
        cluster=find_cluster(xds, call.cluster_name),
        post_cluster_context=PostClusterExtensionContext(
            backend_extension_resources=[encode_resource(r) for r in call.backend_extension_resources]
        ),
    )


def translate_request(xds: EgXds) -> PostTranslateModifyRequest:
    """The PostTranslateModify request EG sends with listener/route/cluster includeAll and no secrets."""
    return PostTranslateModifyRequest(clusters=xds.clusters, listeners=xds.listeners, routes=xds.routes)


RouteHook = Callable[[PostRouteModifyRequest], Awaitable[PostRouteModifyResponse]]
ClusterHook = Callable[[PostClusterModifyRequest], Awaitable[PostClusterModifyResponse]]
TranslateHook = Callable[[PostTranslateModifyRequest], Awaitable[PostTranslateModifyResponse]]


async def run_hooks(xds: EgXds, ctx: HookContext) -> EgXds:
    """Route hook per route and Cluster hook per cluster (in EG's order), then the Translation hook.

    Mutates `xds` in place with the Route/Cluster answers (as EG does) and returns the Translation result.
    """
    return await run_hooks_via(
        xds,
        lambda request: post_route_modify(request, ctx),
        lambda request: post_cluster_modify(request, ctx),
        lambda request: post_translate_modify(request, ctx),
    )


async def run_hooks_via(
    xds: EgXds, route_hook: RouteHook, cluster_hook: ClusterHook, translate_hook: TranslateHook
) -> EgXds:
    """EG's call sequence against any hook implementation: in-process functions or a gRPC stub."""
    await _run_hooks_before_translation(xds, route_hook, cluster_hook)
    answer = await translate_hook(translate_request(xds))
    return EgXds(
        listeners=list(answer.listeners),
        routes=list(answer.routes),
        clusters=list(answer.clusters),
        cluster_extension_resources=dict(xds.cluster_extension_resources),
        route_extension_resources=dict(xds.route_extension_resources),
        hook_calls=list(xds.hook_calls),
    )


async def run_hooks_before_translation(xds: EgXds, ctx: HookContext) -> None:
    """The Route and Cluster hooks in EG's order, applying each answer to `xds` in place as EG does."""
    await _run_hooks_before_translation(
        xds,
        lambda request: post_route_modify(request, ctx),
        lambda request: post_cluster_modify(request, ctx),
    )


async def _run_hooks_before_translation(xds: EgXds, route_hook: RouteHook, cluster_hook: ClusterHook) -> None:
    for call in xds.hook_calls:
        if isinstance(call, RouteHookCall):
            route_answer = await route_hook(route_request(xds, call))
            if route_answer.HasField("route"):
                find_route(xds, call).CopyFrom(route_answer.route)
        else:
            cluster_answer = await cluster_hook(cluster_request(xds, call))
            if cluster_answer.HasField("cluster"):
                find_cluster(xds, call.cluster_name).CopyFrom(cluster_answer.cluster)


def find_route(xds: EgXds, call: RouteHookCall) -> Route:
    """The route a Route hook call is about (EG applies the answer to it in place)."""
    for config in xds.routes:
        if config.name != call.route_config:
            continue
        for vhost in config.virtual_hosts:
            if vhost.name != call.virtual_host:
                continue
            for route in vhost.routes:
                if route.name == call.route_name:
                    return route
    raise KeyError(f"route {call.route_name} not in {call.route_config}/{call.virtual_host}")


def find_cluster(xds: EgXds, name: str) -> Cluster:
    """The cluster a Cluster hook call is about."""
    for cluster in xds.clusters:
        if cluster.name == name:
            return cluster
    raise KeyError(f"cluster {name} not found")
