"""PostRouteModify: mark EG's route to an InferencePool backend (pure work in extserver.compile)."""

from __future__ import annotations

from api.egextension.service_pb2 import PostRouteModifyRequest, PostRouteModifyResponse
from extserver.compile import patch_route
from extserver.hooks.context import HookContext, decode_resources, describe, log


async def post_route_modify(request: PostRouteModifyRequest, ctx: HookContext) -> PostRouteModifyResponse:
    resources = decode_resources(request.post_route_context.extension_resources, "Route")
    hostnames = list(request.post_route_context.hostnames)
    inputs = await ctx.inputs()
    patched = patch_route(request.route, resources, hostnames, inputs, ctx.options, ctx.cache)
    log.info(
        "route hook",
        route=request.route.name,
        decision="unchanged" if patched is None else "patched",
        resources=describe(resources),
        hostnames=hostnames,
    )
    if patched is None:
        return PostRouteModifyResponse()
    return PostRouteModifyResponse(route=patched)
