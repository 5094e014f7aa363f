"""PostTranslateModify: add pool clusters, model routes and filters to EG's full xDS lists."""

from __future__ import annotations

from api.egextension.service_pb2 import PostTranslateModifyRequest, PostTranslateModifyResponse
from extserver.compile import compile_translation
from extserver.hooks.context import HookContext, log


async def post_translate_modify(
    request: PostTranslateModifyRequest, ctx: HookContext
) -> PostTranslateModifyResponse:
    inputs = await ctx.inputs()
    output = compile_translation(request.clusters, request.listeners, request.routes, inputs, ctx.options)
    for problem in output.problems:
        log.warning(
            "compile problem",
            object=f"{problem.kind} {problem.namespace}/{problem.name}",
            reason=problem.reason,
            message=problem.message,
        )
    await ctx.status.report(output.problems)
    log.info(
        "translation hook",
        pools=len(inputs.pools),
        models=len(inputs.models),
        clusters_in=len(request.clusters),
        clusters_out=len(output.clusters),
        listeners=len(output.listeners),
        routes=len(output.routes),
        problems=len(output.problems),
    )
    # Every list EG sent must come back: a type left empty here would delete all of EG's resources of it.
    return PostTranslateModifyResponse(
        clusters=output.clusters,
        secrets=request.secrets,
        listeners=output.listeners,
        routes=output.routes,
    )
