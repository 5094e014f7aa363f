"""gRPC access logs: each picker gets the status and token usage of the requests its pools routed."""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.accesslog.v3.accesslog_pb2 import AccessLog, AccessLogFilter
from envoy.config.core.v3.config_source_pb2 import ApiVersion
from envoy.extensions.access_loggers.grpc.v3.als_pb2 import HttpGrpcAccessLogConfig

from api import contract
from api.contract import PickerMetadataKey
from extserver.compile import naming
from extserver.compile.plan import PoolPlan


def pool_key(pool: PoolPlan) -> str:
    """The value the picker writes under PickerMetadataKey.POOL for requests of `pool`."""
    return f"{pool.namespace}/{pool.name}"


def _pool_filter(pool: PoolPlan, into: AccessLogFilter) -> None:
    metadata_filter = into.metadata_filter
    metadata_filter.matcher.filter = contract.PICKER_METADATA_NAMESPACE
    metadata_filter.matcher.path.add().key = PickerMetadataKey.POOL
    metadata_filter.matcher.value.string_match.exact = pool_key(pool)
    # Unset means "log": requests no picker marked (other routes, picker down) must not be sent.
    metadata_filter.match_if_key_not_found.value = False


def _build_access_log(cluster: str, pools: Sequence[PoolPlan]) -> AccessLog:
    picker = pools[0].picker
    assert picker is not None
    config = HttpGrpcAccessLogConfig()
    common = config.common_config
    common.log_name = contract.ACCESS_LOG_NAME
    common.grpc_service.envoy_grpc.cluster_name = cluster
    common.grpc_service.envoy_grpc.authority = picker.target_uri
    common.transport_api_version = ApiVersion.V3
    common.buffer_flush_interval.FromNanoseconds(int(contract.ACCESS_LOG_FLUSH_SECONDS * 1e9))
    access_log = AccessLog(name=naming.access_log(cluster))
    if len(pools) == 1:
        _pool_filter(pools[0], access_log.filter)
    else:
        # OrFilter needs two or more filters, hence the single-pool case above.
        for pool in pools:
            _pool_filter(pool, access_log.filter.or_filter.filters.add())
    access_log.typed_config.Pack(config, deterministic=True)
    return access_log


def build_access_logs(pools: Sequence[PoolPlan]) -> list[AccessLog]:
    """One access log per distinct picker cluster of `pools` (sorted), logging only its pools' requests.

    Only this project's picker serves the access log service; other EPPs get none."""
    by_cluster: dict[str, list[PoolPlan]] = {}
    for pool in sorted(pools, key=lambda p: p.key):
        if pool.picker is not None and pool.picker.serves_eds:
            by_cluster.setdefault(pool.picker.cluster, []).append(pool)
    return [_build_access_log(cluster, by_cluster[cluster]) for cluster in sorted(by_cluster)]


def is_ours(access_log: AccessLog) -> bool:
    return access_log.name.startswith(naming.ACCESS_LOG_PREFIX)


def place_access_logs(existing: Sequence[AccessLog], ours: Sequence[AccessLog]) -> list[AccessLog]:
    """EG's access logs (kept, first) followed by ours; old copies of ours are replaced."""
    return [*(a for a in existing if not is_ours(a)), *ours]
