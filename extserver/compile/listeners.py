"""Listeners: their ports and route configurations, and putting our filters into their HCMs."""

from __future__ import annotations

from collections.abc import Iterator

from envoy.config.listener.v3.listener_components_pb2 import Filter
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2 import (
    HttpConnectionManager,
)

from extserver.compile import access_log, naming
from extserver.compile.filters.order import inference_filters, is_ours, place_filters
from extserver.compile.inputs import CompileOptions
from extserver.compile.plan import PoolPlan


def _hcm_filters(listener: Listener) -> Iterator[Filter]:
    for chain in listener.filter_chains:
        yield from (f for f in chain.filters if f.name == naming.HCM_FILTER)
    if listener.HasField("default_filter_chain"):
        yield from (f for f in listener.default_filter_chain.filters if f.name == naming.HCM_FILTER)


def _unpack(network_filter: Filter) -> HttpConnectionManager | None:
    hcm = HttpConnectionManager()
    if not network_filter.typed_config.Unpack(hcm):
        return None
    return hcm


def route_config_names(listener: Listener) -> list[str]:
    """RDS names of the listener's HCMs, in chain order, without repeats."""
    names: list[str] = []
    for network_filter in _hcm_filters(listener):
        hcm = _unpack(network_filter)
        if hcm is not None and hcm.HasField("rds") and hcm.rds.route_config_name not in names:
            names.append(hcm.rds.route_config_name)
    return names


def listener_port(listener: Listener) -> int | None:
    if listener.address.HasField("socket_address"):
        return int(listener.address.socket_address.port_value)
    return None


def strip_our_filters(listener: Listener) -> None:
    """Remove every filter and access log we inserted before (pools may have gone); in place."""
    for network_filter in _hcm_filters(listener):
        hcm = _unpack(network_filter)
        if hcm is None or not (
            any(is_ours(f) for f in hcm.http_filters) or any(access_log.is_ours(a) for a in hcm.access_log)
        ):
            continue
        kept = [f for f in hcm.http_filters if not is_ours(f)]
        del hcm.http_filters[:]
        hcm.http_filters.extend(kept)
        kept_logs = access_log.place_access_logs(list(hcm.access_log), [])
        del hcm.access_log[:]
        hcm.access_log.extend(kept_logs)
        network_filter.typed_config.Pack(hcm, deterministic=True)


def patch_listener_for_pools(
    listener: Listener, pools_by_route_config: dict[str, list[PoolPlan]], options: CompileOptions
) -> None:
    """Insert our filters and access logs into every HCM whose route config serves one of the pools; in
    place."""
    touched = False
    for network_filter in _hcm_filters(listener):
        hcm = _unpack(network_filter)
        if hcm is None or not hcm.HasField("rds"):
            continue
        pools = pools_by_route_config.get(hcm.rds.route_config_name)
        if not pools:
            continue
        placed = place_filters(list(hcm.http_filters), inference_filters(pools))
        del hcm.http_filters[:]
        hcm.http_filters.extend(placed)
        # EG's own access logs (e.g. its file log) stay; ours are replaced.
        logs = access_log.place_access_logs(list(hcm.access_log), access_log.build_access_logs(pools))
        del hcm.access_log[:]
        hcm.access_log.extend(logs)
        network_filter.typed_config.Pack(hcm, deterministic=True)
        touched = True
    if touched:
        # EG's 32 KiB would answer 413 to long prompts once a filter buffers the body.
        listener.per_connection_buffer_limit_bytes.value = max(
            listener.per_connection_buffer_limit_bytes.value, options.max_body_bytes
        )
