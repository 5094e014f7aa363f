"""One ext_proc filter per pool (the picker), off by default and switched on by that pool's routes."""

from __future__ import annotations

from envoy.config.route.v3.route_components_pb2 import FilterConfig
from envoy.extensions.filters.http.ext_proc.v3.ext_proc_pb2 import ExternalProcessor, ExtProcPerRoute
from envoy.extensions.filters.http.ext_proc.v3.processing_mode_pb2 import ProcessingMode
from envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2 import HttpFilter
from google.protobuf.any_pb2 import Any as AnyProto

from api import contract
from api.contract import ExtProcMode, GieExtProcMode
from extserver.compile.plan import PoolPlan


def processing_mode(ours: bool = True) -> ProcessingMode:
    modes = ExtProcMode if ours else GieExtProcMode
    mode = ProcessingMode()
    mode.request_header_mode = ProcessingMode.HeaderSendMode.Value(modes.REQUEST_HEADER)
    mode.request_body_mode = ProcessingMode.BodySendMode.Value(modes.REQUEST_BODY)
    mode.request_trailer_mode = ProcessingMode.HeaderSendMode.Value(modes.REQUEST_TRAILER)
    mode.response_header_mode = ProcessingMode.HeaderSendMode.Value(modes.RESPONSE_HEADER)
    mode.response_body_mode = ProcessingMode.BodySendMode.Value(modes.RESPONSE_BODY)
    mode.response_trailer_mode = ProcessingMode.HeaderSendMode.Value(modes.RESPONSE_TRAILER)
    return mode


def build_ext_proc_filter(pool: PoolPlan) -> HttpFilter:
    picker = pool.picker
    assert picker is not None, "a pool without a picker has no ext_proc filter"
    config = ExternalProcessor()
    grpc = config.grpc_service.envoy_grpc
    grpc.cluster_name = picker.cluster
    grpc.authority = picker.target_uri
    config.failure_mode_allow = picker.failure_mode_allow
    config.processing_mode.CopyFrom(processing_mode(picker.serves_eds))
    config.message_timeout.FromNanoseconds(int(contract.EXT_PROC_MESSAGE_TIMEOUT_SECONDS * 1e9))
    if picker.serves_eds:
        config.request_attributes.extend(contract.REQUEST_ATTRIBUTES)
        # Envoy drops ext_proc dynamic metadata in namespaces not listed here; the picker's mark is what
        # the access log filters on and reports back (the response itself never goes to the picker).
        # envoy.lb carries the destination (request headers are SKIPped: header mutations are dropped).
        config.metadata_options.receiving_namespaces.untyped.extend(
            [contract.LB_METADATA_NAMESPACE, contract.PICKER_METADATA_NAMESPACE]
        )
    else:
        config.send_body_without_waiting_for_header_response = True
        config.metadata_options.receiving_namespaces.untyped.append(contract.LB_METADATA_NAMESPACE)
        # The served endpoint (set by the Lua filter on the response) goes back to the EPP.
        config.metadata_options.forwarding_namespaces.untyped.append(contract.LB_METADATA_NAMESPACE)
    # The weighted cluster was chosen before the picker ran; re-matching after its header mutation
    # could pick another target than the one the picker chose endpoints (and rewrote the body) for.
    config.route_cache_action = ExternalProcessor.RETAIN
    http_filter = HttpFilter(name=pool.ext_proc_filter, disabled=True)
    http_filter.typed_config.Pack(config, deterministic=True)
    return http_filter


def enable_on_route() -> AnyProto:
    """typed_per_filter_config value that turns the pool's (disabled-by-default) filter on for a route."""
    per_route = ExtProcPerRoute()
    per_route.overrides.SetInParent()
    wrapper = FilterConfig(disabled=False)
    wrapper.config.Pack(per_route, deterministic=True)
    packed = AnyProto()
    packed.Pack(wrapper, deterministic=True)
    return packed
