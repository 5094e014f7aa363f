"""Make xDS compiled for a cluster run on one machine: Service names and listener ports map to loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, MutableMapping

from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.core.v3.config_source_pb2 import ConfigSource
from envoy.config.listener.v3.listener_pb2 import Listener

from extserver.compile.naming import is_mirror_name

HostMap = Mapping[str, tuple[str, int]]  # "svc.ns.svc.cluster.local:port" -> (ip, port)


def _map(host: str, port: int, hosts: HostMap) -> tuple[str, int] | None:
    return hosts.get(f"{host}:{port}")


def _localize_config_source(source: ConfigSource, hosts: HostMap) -> None:
    for grpc_service in source.api_config_source.grpc_services:
        if grpc_service.HasField("google_grpc"):
            host, _, port = grpc_service.google_grpc.target_uri.rpartition(":")
            mapped = _map(host, int(port), hosts) if port.isdigit() else None
            if mapped:
                grpc_service.google_grpc.target_uri = f"{mapped[0]}:{mapped[1]}"


def localize_clusters(clusters: Iterable[Cluster], hosts: HostMap) -> None:
    """Point Service-name endpoints and google_grpc targets at their local stand-ins, in place."""
    for cluster in clusters:
        for locality in cluster.load_assignment.endpoints:
            for lb_endpoint in locality.lb_endpoints:
                address = lb_endpoint.endpoint.address.socket_address
                mapped = _map(address.address, address.port_value, hosts)
                if mapped:
                    address.address, address.port_value = mapped
        if cluster.HasField("eds_cluster_config"):
            _localize_config_source(cluster.eds_cluster_config.eds_config, hosts)


def localize_listeners(listeners: Iterable[Listener], ports: Mapping[int, tuple[str, int]]) -> None:
    """Bind Gateway listeners on local addresses/ports of our choosing (tests run many side by side)."""
    for listener in listeners:
        address = listener.address.socket_address
        if address.port_value in ports:
            address.address, address.port_value = ports[address.port_value]


def localize_mirrors(
    listeners: Iterable[Listener],
    clusters: Iterable[Cluster],
    ports: MutableMapping[str, int],
    new_port: Callable[[], int],
) -> None:
    """Each Gateway's mirror listener (one Envoy here runs every Gateway) on a port of its own, and its
    cluster pointed at it; `ports` keeps the choice per name across translations."""
    for listener in listeners:
        if is_mirror_name(listener.name):
            port = ports.setdefault(listener.name, new_port())
            listener.address.socket_address.port_value = port
    for cluster in clusters:
        if is_mirror_name(cluster.name) and cluster.name in ports:
            for locality in cluster.load_assignment.endpoints:
                for lb_endpoint in locality.lb_endpoints:
                    lb_endpoint.endpoint.address.socket_address.port_value = ports[cluster.name]
