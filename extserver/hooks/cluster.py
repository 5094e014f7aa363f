"""PostClusterModify: mark EG's custom-backend cluster for an InferencePool (work in extserver.compile)."""

from __future__ import annotations

from api.egextension.service_pb2 import PostClusterModifyRequest, PostClusterModifyResponse
from extserver.compile import patch_cluster
from extserver.hooks.context import HookContext, decode_resources, describe, log


async def post_cluster_modify(
    request: PostClusterModifyRequest, ctx: HookContext
) -> PostClusterModifyResponse:
    resources = decode_resources(request.post_cluster_context.backend_extension_resources, "Cluster")
    inputs = await ctx.inputs()
    patched = patch_cluster(request.cluster, resources, inputs, ctx.options, ctx.cache)
    log.info(
        "cluster hook",
        cluster=request.cluster.name,
        decision="unchanged" if patched is None else "patched",
        resources=describe(resources),
    )
    if patched is None:
        return PostClusterModifyResponse()
    return PostClusterModifyResponse(cluster=patched)
