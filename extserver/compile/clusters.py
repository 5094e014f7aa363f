"""Clusters: per-target clusters (override_host), the pool catch-all (the pool's Pods), the picker."""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.cluster.v3.circuit_breaker_pb2 import CircuitBreakers
from envoy.config.cluster.v3.cluster_pb2 import Cluster, LoadBalancingPolicy
from envoy.config.core.v3.address_pb2 import Address, SocketAddress
from envoy.config.core.v3.base_pb2 import TransportSocket
from envoy.config.core.v3.config_source_pb2 import ApiConfigSource, ApiVersion, ConfigSource
from envoy.config.core.v3.grpc_service_pb2 import GrpcService
from envoy.config.core.v3.health_check_pb2 import HealthCheck
from envoy.config.core.v3.protocol_pb2 import Http2ProtocolOptions
from envoy.config.endpoint.v3.endpoint_components_pb2 import Endpoint, LbEndpoint, LocalityLbEndpoints
from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment
from envoy.extensions.clusters.aggregate.v3.cluster_pb2 import ClusterConfig
from envoy.extensions.load_balancing_policies.least_request.v3.least_request_pb2 import LeastRequest
from envoy.extensions.load_balancing_policies.override_host.v3.override_host_pb2 import OverrideHost
from envoy.extensions.transport_sockets.tls.v3.tls_pb2 import UpstreamTlsContext
from envoy.extensions.upstreams.http.v3.http_protocol_options_pb2 import HttpProtocolOptions

from api import contract
from api.contract import MetadataKey, Role
from extserver.compile import metadata, naming
from extserver.compile.inputs import CompileOptions
from extserver.compile.plan import ModelPlan, PoolPlan, TargetPlan
from extserver.compile.resilience import outlier_detection

CONNECT_TIMEOUT_SECONDS = 10
# Envoy's default circuit breakers (1024) overflow under inference load; effectively unlimited here.
HIGH_THRESHOLD = 1_000_000
HTTP_PROTOCOL_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
UPSTREAM_IDLE_TIMEOUT_SECONDS = 4  # below vLLM's keep-alive timeout (uvicorn's default, 5 s)
OVERRIDE_HOST_POLICY = "envoy.load_balancing_policies.override_host"
LEAST_REQUEST_POLICY = "envoy.load_balancing_policies.least_request"
PICKER_HEALTH_INTERVAL_SECONDS = 5
PICKER_HEALTH_TIMEOUT_SECONDS = 1
TLS_TRANSPORT_SOCKET = "envoy.transport_sockets.tls"
AGGREGATE_CLUSTER = "envoy.clusters.aggregate"


def high_circuit_breakers() -> CircuitBreakers:
    breakers = CircuitBreakers()
    threshold = breakers.thresholds.add()
    threshold.max_connections.value = HIGH_THRESHOLD
    threshold.max_pending_requests.value = HIGH_THRESHOLD
    threshold.max_requests.value = HIGH_THRESHOLD
    threshold.max_retries.value = HIGH_THRESHOLD
    return breakers


def _picker_eds_source(pool: PoolPlan) -> ConfigSource:
    # google_grpc, not envoy_grpc: Envoy requires an envoy_grpc xDS cluster to be static in the bootstrap,
    # and under EG every cluster (the picker's too) arrives over CDS.
    assert pool.picker is not None
    grpc = GrpcService()
    grpc.google_grpc.target_uri = pool.picker.target_uri
    grpc.google_grpc.stat_prefix = f"inference_eds_{pool.namespace}_{pool.name}"
    source = ConfigSource(resource_api_version=ApiVersion.V3)
    source.initial_fetch_timeout.FromNanoseconds(int(contract.EDS_INITIAL_FETCH_TIMEOUT_SECONDS * 1e9))
    api = source.api_config_source
    api.api_type = ApiConfigSource.GRPC
    api.transport_api_version = ApiVersion.V3
    api.grpc_services.append(grpc)
    return source


def _override_host_policy() -> LoadBalancingPolicy:
    override = OverrideHost()
    override.override_host_sources.add().header = contract.HEADER_DESTINATION_ENDPOINT
    # The picker's answer itself (set before the header copy in the Lua filter): either works alone.
    from_metadata = override.override_host_sources.add().metadata
    from_metadata.key = contract.LB_METADATA_NAMESPACE
    from_metadata.path.add().key = contract.HEADER_DESTINATION_ENDPOINT
    fallback = override.fallback_policy.policies.add().typed_extension_config
    fallback.name = LEAST_REQUEST_POLICY
    fallback.typed_config.Pack(LeastRequest(), deterministic=True)
    policy = LoadBalancingPolicy()
    outer = policy.policies.add().typed_extension_config
    outer.name = OVERRIDE_HOST_POLICY
    outer.typed_config.Pack(override, deterministic=True)
    return policy


def _upstream_template(pool: PoolPlan, options: CompileOptions) -> Cluster:
    """What every cluster to a pool's model servers shares: limits, balancing, protocol."""
    cluster = Cluster()
    cluster.connect_timeout.seconds = CONNECT_TIMEOUT_SECONDS
    cluster.per_connection_buffer_limit_bytes.value = options.max_body_bytes
    cluster.load_balancing_policy.CopyFrom(_override_host_policy())
    cluster.circuit_breakers.CopyFrom(high_circuit_breakers())
    cluster.outlier_detection.CopyFrom(outlier_detection())
    protocol = HttpProtocolOptions()
    if pool.app_protocol == contract.APP_PROTOCOL_H2C:
        protocol.explicit_http_config.http2_protocol_options.SetInParent()  # prior knowledge, cleartext
    else:
        protocol.explicit_http_config.http_protocol_options.SetInParent()
    # vLLM (uvicorn) closes a keep-alive connection after 5 s idle; a request Envoy sends on one just as it
    # closes fails with "connection termination". Envoy closes its idle connections first.
    protocol.common_http_protocol_options.idle_timeout.seconds = UPSTREAM_IDLE_TIMEOUT_SECONDS
    cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS_KEY].Pack(protocol, deterministic=True)
    return cluster


def eds_cluster_template(pool: PoolPlan, options: CompileOptions) -> Cluster:
    """A cluster whose endpoints the pool's picker serves over EDS; built once per pool, copied per target."""
    cluster = _upstream_template(pool, options)
    cluster.type = Cluster.EDS
    cluster.eds_cluster_config.eds_config.CopyFrom(_picker_eds_source(pool))
    return cluster


def _endpoints_assignment(name: str, endpoints: Sequence[str]) -> ClusterLoadAssignment:
    lb_endpoints = []
    for endpoint in endpoints:
        host, _, port = endpoint.rpartition(":")
        address = Address(socket_address=SocketAddress(address=host, port_value=int(port)))
        lb_endpoints.append(LbEndpoint(endpoint=Endpoint(address=address)))
    return ClusterLoadAssignment(
        cluster_name=name, endpoints=[LocalityLbEndpoints(lb_endpoints=lb_endpoints)]
    )


def static_cluster_template(pool: PoolPlan, options: CompileOptions) -> Cluster:
    """A cluster over the pool's ready endpoints as the extension server sees its Pods (any picker)."""
    cluster = _upstream_template(pool, options)
    cluster.type = Cluster.STATIC
    cluster.load_assignment.CopyFrom(_endpoints_assignment("", pool.endpoints or ()))
    return cluster


def _named(template: Cluster, name: str, eds_resource: str) -> Cluster:
    cluster = Cluster()
    cluster.CopyFrom(template)
    cluster.name = name
    if cluster.type == Cluster.EDS:
        cluster.eds_cluster_config.service_name = eds_resource
    else:
        cluster.load_assignment.cluster_name = name
    return cluster


def _pool_metadata(pool: PoolPlan, role: str) -> dict[str, object]:
    return {
        MetadataKey.ROLE: role,
        MetadataKey.POOL_NAMESPACE: pool.namespace,
        MetadataKey.POOL_NAME: pool.name,
        MetadataKey.POOL_API_VERSION: pool.api_version,
    }


def target_cluster_template(pool: PoolPlan, options: CompileOptions) -> Cluster:
    """What every target cluster of a pool shares, metadata included (built once per pool)."""
    cluster = (
        eds_cluster_template(pool, options) if pool.eds_targets else static_cluster_template(pool, options)
    )
    values = _pool_metadata(pool, Role.TARGET)
    values[MetadataKey.SOURCE] = pool.source
    metadata.set_ours(cluster.metadata, values)
    return cluster


def build_target_cluster(
    pool: PoolPlan,
    target: TargetPlan,
    users: Sequence[tuple[ModelPlan, TargetPlan]],
    options: CompileOptions,
    template: Cluster | None = None,
) -> Cluster:
    """One target model of a pool: endpoints (only pods serving that model) come from the picker's EDS.

    `template` is target_cluster_template(pool, options), passed in by callers building many clusters.
    """
    base = template if template is not None else target_cluster_template(pool, options)
    cluster = _named(base, target.cluster, target.eds_resource)
    # Written field by field (not through a dict): this runs for every target of every pool.
    fields = metadata.ours_struct(cluster.metadata).fields
    fields[MetadataKey.TARGET_MODEL].string_value = target.model
    entries = fields[MetadataKey.MODELS].list_value
    entries.Clear()
    entries.SetInParent()
    for model, used in users:
        entry = entries.values.add().struct_value.fields
        entry[MetadataKey.MODEL_NAME].string_value = model.model_name
        entry[MetadataKey.WEIGHT].number_value = used.weight
        entry[MetadataKey.CRITICALITY].string_value = model.criticality
        entry[MetadataKey.SOURCE].string_value = model.source
    return cluster


def build_catch_all_cluster(pool: PoolPlan, options: CompileOptions, name: str | None = None) -> Cluster:
    """The pool's cluster for models without an InferenceModel: every ready pod of the pool (the picker's
    EDS when the source does not read Pods)."""
    if pool.endpoints is None and pool.eds_targets:
        template = eds_cluster_template(pool, options)
    else:
        template = static_cluster_template(pool, options)
    cluster = _named(template, name or pool.catch_all_cluster, pool.eds_resource)
    values = _pool_metadata(pool, Role.CATCH_ALL)
    values[MetadataKey.SOURCE] = pool.source
    metadata.set_ours(cluster.metadata, values)
    return cluster


def _epp_tls(host: str) -> TransportSocket:
    """TLS to a GIE endpoint picker, which serves TLS by default (a self-signed certificate: unverified,
    as GIE's own gateway configurations do)."""
    context = UpstreamTlsContext(sni=host)
    context.common_tls_context.alpn_protocols.append("h2")
    socket = TransportSocket(name=TLS_TRANSPORT_SOCKET)
    socket.typed_config.Pack(context, deterministic=True)
    return socket


def build_picker_cluster(pool: PoolPlan, options: CompileOptions) -> Cluster:
    """The endpoint picker Service: HTTP/2 gRPC (ext_proc + EDS), DNS, high limits, gRPC health check."""
    picker = pool.picker
    assert picker is not None
    cluster = Cluster(name=picker.cluster, type=Cluster.STRICT_DNS)
    cluster.connect_timeout.seconds = CONNECT_TIMEOUT_SECONDS
    cluster.dns_lookup_family = Cluster.V4_PREFERRED
    cluster.lb_policy = Cluster.LEAST_REQUEST
    cluster.circuit_breakers.CopyFrom(high_circuit_breakers())
    # The picker receives whole request bodies (BUFFERED) in ext_proc messages.
    cluster.per_connection_buffer_limit_bytes.value = (
        options.max_body_bytes + contract.GRPC_MESSAGE_OVERHEAD_BYTES
    )
    endpoint = LbEndpoint(
        endpoint=Endpoint(
            address=Address(socket_address=SocketAddress(address=picker.host, port_value=picker.port))
        )
    )
    cluster.load_assignment.CopyFrom(
        ClusterLoadAssignment(
            cluster_name=picker.cluster, endpoints=[LocalityLbEndpoints(lb_endpoints=[endpoint])]
        )
    )
    protocol = HttpProtocolOptions()
    protocol.explicit_http_config.http2_protocol_options.CopyFrom(Http2ProtocolOptions())
    cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS_KEY].Pack(protocol, deterministic=True)
    # A picker Pod that DNS no longer returns (rolled out, deleted) leaves at once: by default Envoy keeps a
    # removed host until its health check fails three times, and FailClose requests to it answer 500.
    cluster.ignore_health_on_host_removal = True
    if picker.serves_eds:
        # Ours answers gRPC health on its ext_proc port; GIE's EPPs serve health on a port of their own
        # (lwepp: --grpc-health-port) that the pool does not name, so theirs get no active check.
        check = HealthCheck()
        check.timeout.seconds = PICKER_HEALTH_TIMEOUT_SECONDS
        check.interval.seconds = PICKER_HEALTH_INTERVAL_SECONDS
        check.unhealthy_threshold.value = 3
        check.healthy_threshold.value = 1
        check.grpc_health_check.SetInParent()
        cluster.health_checks.append(check)
    else:
        cluster.transport_socket.CopyFrom(_epp_tls(picker.host))
    values = _pool_metadata(pool, Role.PICKER)
    values[MetadataKey.SOURCE] = pool.source
    metadata.set_ours(cluster.metadata, values)
    return cluster


def fails_over_to_pods(pool: PoolPlan) -> bool:
    """Target clusters of our picker's FailOpen pool fall over to the pool's Pods while its EDS is empty."""
    return pool.eds_targets and pool.fail_open and pool.endpoints is not None


def build_failover_cluster(target: Cluster, catch_all: str) -> list[Cluster]:
    """The target cluster as an aggregate of [the picker's EDS for it, the pool's catch-all]: Envoy uses
    the first while it has healthy hosts, so a picker that never answered (FailOpen) still routes."""
    eds = Cluster()
    eds.CopyFrom(target)
    eds.name = naming.picker_eds_cluster(target.name)
    aggregate = Cluster(name=target.name, lb_policy=Cluster.CLUSTER_PROVIDED)
    aggregate.connect_timeout.seconds = CONNECT_TIMEOUT_SECONDS
    aggregate.cluster_type.name = AGGREGATE_CLUSTER
    aggregate.cluster_type.typed_config.Pack(
        ClusterConfig(clusters=[eds.name, catch_all]), deterministic=True
    )
    aggregate.metadata.CopyFrom(target.metadata)  # what the picker reads of the chosen cluster
    return [aggregate, eds]


def build_pool_clusters(
    pool: PoolPlan, options: CompileOptions, with_catch_all: bool = True
) -> list[Cluster]:
    """Every cluster a pool needs, in name order."""
    clusters = [] if pool.picker is None else [build_picker_cluster(pool, options)]
    failover = fails_over_to_pods(pool)
    if with_catch_all or failover:
        clusters.append(build_catch_all_cluster(pool, options))
    template = target_cluster_template(pool, options)
    for target, users in pool.targets():
        built = build_target_cluster(pool, target, users, options, template)
        clusters.extend(build_failover_cluster(built, pool.catch_all_cluster) if failover else [built])
    return sorted(clusters, key=lambda c: c.name)


def mark_backend_cluster(cluster: Cluster, pool: PoolPlan, options: CompileOptions) -> Cluster:
    """EG's cluster for a pool backendRef, made the pool catch-all (EG's name kept: its route uses it)."""
    marked = build_catch_all_cluster(pool, options, name=cluster.name)
    values = metadata.ours(marked.metadata) or {}
    values[MetadataKey.ROLE] = contract.Role.BACKEND_REF
    metadata.set_ours(marked.metadata, values)
    # EG's own metadata (its source objects) stays for config_dump readers.
    for namespace, struct in cluster.metadata.filter_metadata.items():
        if namespace != contract.METADATA_NAMESPACE:
            marked.metadata.filter_metadata[namespace].CopyFrom(struct)
    return marked
