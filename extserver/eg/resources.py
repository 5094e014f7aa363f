"""xDS resources as Envoy Gateway builds them (listener, readiness listener, rule cluster), the
translated set the hooks see (`EgXds`, hook calls in EG's order) and reading an Envoy config dump.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from envoy.config.cluster.v3.circuit_breaker_pb2 import CircuitBreakers
from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.core.v3.address_pb2 import Address, SocketAddress
from envoy.config.core.v3.base_pb2 import Metadata
from envoy.config.core.v3.config_source_pb2 import AggregatedConfigSource, ApiVersion, ConfigSource
from envoy.config.core.v3.extension_pb2 import TypedExtensionConfig
from envoy.config.core.v3.protocol_pb2 import Http2ProtocolOptions, HttpProtocolOptions
from envoy.config.listener.v3.listener_components_pb2 import Filter, FilterChain
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.config.route.v3.route_components_pb2 import (
    DirectResponseAction,
    HeaderMatcher,
    Route,
    RouteMatch,
    VirtualHost,
)
from envoy.config.route.v3.route_pb2 import RouteConfiguration
from envoy.extensions.filters.http.health_check.v3.health_check_pb2 import HealthCheck
from envoy.extensions.filters.http.router.v3.router_pb2 import Router
from envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2 import (
    HttpConnectionManager,
    HttpFilter,
    Rds,
)
from envoy.extensions.load_balancing_policies.least_request.v3.least_request_pb2 import LeastRequest
from envoy.type.matcher.v3.string_pb2 import StringMatcher
from google.protobuf import duration_pb2, json_format, struct_pb2, wrappers_pb2
from google.protobuf.any_pb2 import Any as AnyPb
from google.protobuf.message import Message

from extserver.eg.facts import (
    BUFFER_LIMIT_BYTES,
    HCM_FILTER,
    METADATA_NAMESPACE,
    READY_LISTENER,
    READY_PORT,
    ROUTER_FILTER,
)

_M = TypeVar("_M", bound=Message)


@dataclass(frozen=True)
class RouteHookCall:
    """One PostRouteModify call: the route (by config/vhost/name) and its context."""

    route_config: str
    virtual_host: str
    route_name: str
    hostnames: tuple[str, ...]
    extension_resources: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True)
class ClusterHookCall:
    """One PostClusterModify call: the cluster by name and its backend_extension_resources."""

    cluster_name: str
    backend_extension_resources: tuple[Mapping[str, Any], ...]


@dataclass
class EgXds:
    """What EG's translator holds for one IR before the Translation hook, plus the hook inputs."""

    listeners: list[Listener] = field(default_factory=list)
    routes: list[RouteConfiguration] = field(default_factory=list)
    clusters: list[Cluster] = field(default_factory=list)
    # Keyed by cluster name / route name; only those EG calls the hooks for.
    cluster_extension_resources: dict[str, tuple[Mapping[str, Any], ...]] = field(default_factory=dict)
    route_extension_resources: dict[str, tuple[Mapping[str, Any], ...]] = field(default_factory=dict)
    # Route and Cluster hook calls interleaved in the order EG makes them.
    hook_calls: list[RouteHookCall | ClusterHookCall] = field(default_factory=list)


def eg_metadata(kind: str, name: str, namespace: str, section: str | None = None) -> Metadata:
    """EG's metadata naming the Gateway API object a resource came from."""
    resource: dict[str, Any] = {"kind": kind, "name": name, "namespace": namespace}
    if section is not None:
        resource["sectionName"] = section
    md = Metadata()
    md.filter_metadata[METADATA_NAMESPACE].update({"resources": [resource]})
    return md


def gateways_named(md: Metadata) -> set[str]:
    """The Gateways ("ns/name") EG's metadata names as a resource's source (what `eg_metadata` writes)."""
    if METADATA_NAMESPACE not in md.filter_metadata:
        return set()
    resources = md.filter_metadata[METADATA_NAMESPACE].fields.get("resources")
    if resources is None:
        return set()
    out = set()
    for item in resources.list_value.values:
        fields = item.struct_value.fields
        if "kind" in fields and fields["kind"].string_value == "Gateway" and "name" in fields:
            namespace = fields["namespace"].string_value if "namespace" in fields else ""
            out.add(f"{namespace}/{fields['name'].string_value}")
    return out


def _pack(message: Any) -> AnyPb:
    packed = AnyPb()
    packed.Pack(message)
    return packed


def _ads() -> ConfigSource:
    return ConfigSource(ads=AggregatedConfigSource(), resource_api_version=ApiVersion.V3)


def build_listener(name: str, port: int) -> Listener:
    """An HTTP listener as EG builds it: HCM with RDS named after the listener, 32 KiB buffers."""
    rds_source = _ads()
    rds_source.initial_fetch_timeout.CopyFrom(duration_pb2.Duration())
    hcm = HttpConnectionManager(
        stat_prefix=f"http-{port}",
        rds=Rds(config_source=rds_source, route_config_name=name),
        http_filters=[
            HttpFilter(name=ROUTER_FILTER, typed_config=_pack(Router(suppress_envoy_headers=True)))
        ],
        common_http_protocol_options=HttpProtocolOptions(
            headers_with_underscores_action=HttpProtocolOptions.REJECT_REQUEST
        ),
        http2_protocol_options=Http2ProtocolOptions(
            initial_connection_window_size=wrappers_pb2.UInt32Value(value=1048576),
            initial_stream_window_size=wrappers_pb2.UInt32Value(value=65536),
            max_concurrent_streams=wrappers_pb2.UInt32Value(value=100),
        ),
        merge_slashes=True,
        normalize_path=wrappers_pb2.BoolValue(value=True),
        path_with_escaped_slashes_action=HttpConnectionManager.UNESCAPE_AND_REDIRECT,
        server_header_transformation=HttpConnectionManager.PASS_THROUGH,
        use_remote_address=wrappers_pb2.BoolValue(value=True),
    )
    return Listener(
        name=name,
        address=Address(socket_address=SocketAddress(address="0.0.0.0", port_value=port)),
        default_filter_chain=FilterChain(
            name=name, filters=[Filter(name=HCM_FILTER, typed_config=_pack(hcm))]
        ),
        max_connections_to_accept_per_socket_event=wrappers_pb2.UInt32Value(value=1),
        per_connection_buffer_limit_bytes=wrappers_pb2.UInt32Value(value=BUFFER_LIMIT_BYTES),
    )


def build_ready_listener() -> Listener:
    """EG's readiness listener: always in the listener table the Translation hook sees."""
    health = HealthCheck(
        pass_through_mode=wrappers_pb2.BoolValue(value=False),
        headers=[HeaderMatcher(name=":path", string_match=StringMatcher(exact="/ready"))],
    )
    route_config = RouteConfiguration(
        name="ready_route",
        virtual_hosts=[
            VirtualHost(
                name="ready_route",
                domains=["*"],
                routes=[
                    Route(match=RouteMatch(prefix="/"), direct_response=DirectResponseAction(status=500))
                ],
            )
        ],
    )
    hcm = HttpConnectionManager(
        stat_prefix="eg-ready-http",
        route_config=route_config,
        http_filters=[
            HttpFilter(name="envoy.filters.http.health_check", typed_config=_pack(health)),
            HttpFilter(name=ROUTER_FILTER, typed_config=_pack(Router(suppress_envoy_headers=True))),
        ],
    )
    return Listener(
        name=READY_LISTENER,
        address=Address(socket_address=SocketAddress(address="0.0.0.0", port_value=READY_PORT)),
        bypass_overload_manager=True,
        filter_chains=[FilterChain(filters=[Filter(name=HCM_FILTER, typed_config=_pack(hcm))])],
    )


def build_cluster(name: str, route_name: str, route_namespace: str) -> Cluster:
    """The EDS route-rule cluster EG builds (also for custom backends, before the Cluster hook)."""
    lb = LeastRequest()
    lb.locality_lb_config.locality_weighted_lb_config.SetInParent()
    cluster = Cluster(
        name=name,
        type=Cluster.EDS,
        connect_timeout=duration_pb2.Duration(seconds=10),
        per_connection_buffer_limit_bytes=wrappers_pb2.UInt32Value(value=BUFFER_LIMIT_BYTES),
        dns_lookup_family=Cluster.V4_PREFERRED,
        ignore_health_on_host_removal=True,
        circuit_breakers=CircuitBreakers(
            thresholds=[CircuitBreakers.Thresholds(max_retries=wrappers_pb2.UInt32Value(value=1024))]
        ),
        metadata=eg_metadata("HTTPRoute", route_name, route_namespace),
    )
    cluster.eds_cluster_config.eds_config.CopyFrom(_ads())
    cluster.eds_cluster_config.service_name = name
    cluster.common_lb_config.SetInParent()
    policy = cluster.load_balancing_policy.policies.add()
    policy.typed_extension_config.CopyFrom(
        TypedExtensionConfig(name="envoy.load_balancing_policies.least_request", typed_config=_pack(lb))
    )
    return cluster


def metadata_value(md: Metadata, namespace: str) -> dict[str, Any]:
    """filter_metadata[namespace] as plain Python (for tests and debugging)."""
    if namespace not in md.filter_metadata:
        return {}
    value: struct_pb2.Struct = md.filter_metadata[namespace]
    result: dict[str, Any] = json_format.MessageToDict(value)
    return result


def register_any_types(doc: Any) -> None:
    """Import the xds-protos modules of every `@type` in a JSON/YAML xDS document so it can be parsed.

    Message names do not say which file defines them, so every module of the message's package is imported
    (packages are small and the import is cached).
    """
    for type_url in sorted(_type_urls(doc)):
        package = type_url.rpartition("/")[2].rpartition(".")[0]
        try:
            module = importlib.import_module(package)
        except ImportError:
            continue
        for info in pkgutil.iter_modules(module.__path__):
            if info.name.endswith("_pb2"):
                importlib.import_module(f"{package}.{info.name}")


def _type_urls(doc: Any) -> set[str]:
    found: set[str] = set()
    stack = [doc]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            url = item.get("@type")
            if isinstance(url, str):
                found.add(url)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def parse_config_dump(dump: Mapping[str, Any]) -> EgXds:
    """Dynamic listeners, route configs and clusters of an Envoy config dump (`configs: [...]`)."""
    register_any_types(dump)
    out = EgXds()
    for config in dump.get("configs", []):
        kind = str(config.get("@type", "")).rpartition(".")[2]
        if kind == "ClustersConfigDump":
            for item in config.get("dynamicActiveClusters", []):
                out.clusters.append(_parse(item["cluster"], Cluster()))
        elif kind == "ListenersConfigDump":
            for item in config.get("dynamicListeners", []):
                out.listeners.append(_parse(item["activeState"]["listener"], Listener()))
        elif kind == "RoutesConfigDump":
            for item in config.get("dynamicRouteConfigs", []):
                out.routes.append(_parse(item["routeConfig"], RouteConfiguration()))
    return out


def _parse(value: Mapping[str, Any], message: _M) -> _M:
    body = {k: v for k, v in value.items() if k != "@type"}
    json_format.ParseDict(body, message)
    return message
