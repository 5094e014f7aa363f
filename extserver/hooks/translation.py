"""PostTranslateModify: add pool clusters, model routes and filters to EG's full xDS lists."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

from api.egextension.service_pb2 import PostTranslateModifyRequest, PostTranslateModifyResponse
from extserver import revisions
from extserver.compile import compile_translation
from extserver.hooks.context import HookContext, decode_resources, log
from extserver.hooks.status import StatusReport


async def post_translate_modify(
    request: PostTranslateModifyRequest, ctx: HookContext
) -> PostTranslateModifyResponse:
    inputs = await ctx.inputs()
    policies = decode_resources(request.post_translate_context.extension_resources, "Translation")
    gateways = revisions.gateways_of_call(policies)
    with gc_paused():
        output = compile_translation(
            request.clusters, request.listeners, request.routes, inputs, ctx.options, ctx.cache, gateways
        )
    for problem in output.problems:
        log.warning(
            "compile problem",
            object=f"{problem.kind} {problem.namespace}/{problem.name}",
            reason=problem.reason,
            message=problem.message,
        )
    await ctx.status.report(
        StatusReport(
            inputs.pools,
            inputs.models,
            tuple(output.problems),
            output.pool_gateways,
            gateways,
            inputs.rewrites + inputs.objectives,
        )
    )
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
    with gc_paused():
        return PostTranslateModifyResponse(
            clusters=output.clusters,
            secrets=request.secrets,
            listeners=output.listeners,
            routes=output.routes,
        )


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic GC while compiling: the compiler makes no cycles (refcounting frees everything), but its
    many short-lived objects trigger full collections that scan the whole heap (the object store
    included), which more than doubled the time of a 1,000-model translation."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
