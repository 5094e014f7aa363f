"""The access log back to each picker, and the usage filter it reads, as compiled (no Envoy here)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

from envoy.config.accesslog.v3.accesslog_pb2 import AccessLog
from envoy.config.listener.v3.listener_components_pb2 import Filter
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.extensions.access_loggers.file.v3.file_pb2 import FileAccessLog
from envoy.extensions.access_loggers.grpc.v3.als_pb2 import HttpGrpcAccessLogConfig
from envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2 import (
    HttpConnectionManager,
)

from api import contract
from extserver.compile import build_plan, compile_translation, naming
from extserver.compile.access_log import build_access_logs
from extserver.compile.plan import PoolPlan
from extserver.eg.standin import build_eg_xds_by_gateway
from tests.compile_cases import OPTIONS, apply_hooks, compile_inputs, load_objects, run_case

CASE = "backendref-root-prefix"


def _pools(case: str = CASE) -> tuple[PoolPlan, ...]:
    return build_plan(run_case(case).inputs).pools


def _hcm_filters(listener: Listener) -> Iterator[tuple[Filter, HttpConnectionManager]]:
    chains = [*listener.filter_chains]
    if listener.HasField("default_filter_chain"):
        chains.append(listener.default_filter_chain)
    for chain in chains:
        for network_filter in chain.filters:
            hcm = HttpConnectionManager()
            if network_filter.name == naming.HCM_FILTER and network_filter.typed_config.Unpack(hcm):
                yield network_filter, hcm


def _hcms(listener: Listener) -> list[HttpConnectionManager]:
    return [hcm for _, hcm in _hcm_filters(listener)]


def test_one_pool_logs_only_the_requests_its_picker_marked() -> None:
    (pool,) = _pools()
    (log,) = build_access_logs([pool])
    assert log.name == naming.access_log(pool.picker.cluster)
    matcher = log.filter.metadata_filter.matcher
    assert matcher.filter == contract.PICKER_METADATA_NAMESPACE
    assert [p.key for p in matcher.path] == [contract.PickerMetadataKey.POOL]
    assert matcher.value.string_match.exact == f"{pool.namespace}/{pool.name}"
    assert log.filter.metadata_filter.match_if_key_not_found.value is False
    config = HttpGrpcAccessLogConfig()
    assert log.typed_config.Unpack(config)
    common = config.common_config
    assert common.log_name == contract.ACCESS_LOG_NAME
    assert common.grpc_service.envoy_grpc.cluster_name == pool.picker.cluster
    assert common.grpc_service.envoy_grpc.authority == pool.picker.target_uri
    assert common.buffer_flush_interval.ToNanoseconds() == int(contract.ACCESS_LOG_FLUSH_SECONDS * 1e9)


def test_pools_sharing_a_picker_cluster_share_one_log_with_an_or_filter() -> None:
    (pool,) = _pools()
    other = replace(pool, name="other")
    apart = replace(pool, name="apart", picker=replace(pool.picker, cluster="inference/default/apart/picker"))
    logs = build_access_logs([other, apart, pool])
    assert [log.name for log in logs] == [
        naming.access_log("inference/default/apart/picker"),
        naming.access_log(pool.picker.cluster),
    ]
    shared = logs[1].filter.or_filter.filters
    assert [f.metadata_filter.matcher.value.string_match.exact for f in shared] == [
        "default/other",
        "default/pool",
    ]


def test_eg_access_logs_stay_and_ours_are_replaced_on_retranslation() -> None:
    objects = load_objects(CASE)
    inputs, _ = compile_inputs(objects)
    (eg,) = build_eg_xds_by_gateway(objects).values()
    apply_hooks(eg, inputs)
    eg_log = AccessLog(name="envoy.access_loggers.file")
    eg_log.typed_config.Pack(FileAccessLog(path="/dev/stdout"))
    listeners = []
    for listener in eg.listeners:
        copy = Listener()
        copy.CopyFrom(listener)
        for network_filter, hcm in _hcm_filters(copy):
            hcm.access_log.append(eg_log)
            network_filter.typed_config.Pack(hcm)
        listeners.append(copy)
    first = compile_translation(eg.clusters, listeners, eg.routes, inputs, OPTIONS)
    again = compile_translation(first.clusters, first.listeners, first.routes, inputs, OPTIONS)
    (pool,) = _pools()
    expected = ["envoy.access_loggers.file", naming.access_log(pool.picker.cluster)]
    for out in (first, again):
        patched = [h for lis in out.listeners for h in _hcms(lis) if any(f.disabled for f in h.http_filters)]
        assert patched
        for hcm in patched:
            assert [log.name for log in hcm.access_log] == expected
    # With the pool gone, ours go and EG's stays.
    gone = compile_translation(
        first.clusters, first.listeners, first.routes, replace(inputs, pools=()), OPTIONS
    )
    for listener in gone.listeners:
        for hcm in _hcms(listener):
            assert [log.name for log in hcm.access_log] == ["envoy.access_loggers.file"]
            assert naming.USAGE_FILTER not in [f.name for f in hcm.http_filters]


def test_usage_filter_is_on_exactly_where_the_picker_is() -> None:
    for case in ("backendref-root-prefix", "seed-lora-canary", "conflicts"):
        for gateway in run_case(case).gateways.values():
            for route_config in gateway.routes:
                for host in route_config.virtual_hosts:
                    for route in host.routes:
                        keys = set(route.typed_per_filter_config)
                        picker = any(k.startswith(naming.EXT_PROC_FILTER_PREFIX) for k in keys)
                        assert picker == (naming.USAGE_FILTER in keys), (case, route.name)
