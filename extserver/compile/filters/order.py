"""The one place that fixes the order of our HTTP filters, all placed just before EG's router."""

from __future__ import annotations

from collections.abc import Sequence

from envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2 import HttpFilter

from extserver.compile import naming
from extserver.compile.filters.ext_proc import build_ext_proc_filter
from extserver.compile.filters.header_mutation import build_header_mutation_filter
from extserver.compile.filters.json_to_metadata import build_json_to_metadata_filter
from extserver.compile.filters.lua import build_lua_filter
from extserver.compile.filters.usage import build_usage_filter
from extserver.compile.plan import PoolPlan


def inference_filters(pools: Sequence[PoolPlan]) -> list[HttpFilter]:
    """Our filters for a listener serving `pools`, in order."""
    filters = [
        # 1. drop client-sent destination headers first, so nothing later can trust them
        build_header_mutation_filter(),
        # 2. body `model` -> dynamic metadata; Envoy re-matches routes so the model route is chosen
        build_json_to_metadata_filter(),
    ]
    # 3. the pickers (one per pool, sorted): they see the chosen weighted cluster as an attribute
    filters.extend(
        build_ext_proc_filter(pool) for pool in sorted(pools, key=lambda p: p.key) if pool.picker is not None
    )
    # 4. FailOpen fallback after the pickers: rewrites `model` only when no destination was set
    filters.append(build_lua_filter())
    # 5. token usage, response only. Envoy runs response filters in reverse order, so being last here
    #    it sees the upstream's body first, before any filter above could change it; on requests it
    #    does nothing, so the request-side order is unchanged.
    filters.append(build_usage_filter())
    return filters


def is_ours(http_filter: HttpFilter) -> bool:
    return http_filter.name in (
        naming.HEADER_MUTATION_FILTER,
        naming.JSON_TO_METADATA_FILTER,
        naming.LUA_FILTER,
        naming.USAGE_FILTER,
    ) or http_filter.name.startswith(naming.EXT_PROC_FILTER_PREFIX)


def place_filters(existing: Sequence[HttpFilter], ours: Sequence[HttpFilter]) -> list[HttpFilter]:
    """EG's filters with ours (old copies removed) inserted just before the router, or at the end."""
    kept = [f for f in existing if not is_ours(f)]
    router = next((i for i, f in enumerate(kept) if f.name == naming.ROUTER_FILTER), len(kept))
    return [*kept[:router], *ours, *kept[router:]]
