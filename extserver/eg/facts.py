"""Envoy Gateway facts this project relies on (v1.9, default xDS name scheme): defined once.

The extension server's compiler and the stand-in (`extserver.eg.standin`, what EG would send the
hooks) both read these. docs/envoy-gateway.md says where each comes from.
"""

from __future__ import annotations

from dataclasses import dataclass

GATEWAY_GROUP = "gateway.networking.k8s.io"
# The GatewayClass controllerName EG reconciles (and writes status as).
CONTROLLER_NAME = "gateway.envoyproxy.io/gatewayclass-controller"
# filter_metadata namespace EG writes on listeners, virtual hosts, routes and clusters:
# `{"resources": [{"kind", "name", "namespace", "sectionName"?}]}` naming the Gateway API source.
METADATA_NAMESPACE = "envoy-gateway"
# EG runs Envoy unprivileged: a Gateway port below the limit listens on port + shift (80 -> 10080).
PRIVILEGED_PORT_LIMIT = 1024
PORT_SHIFT = 10000
# EG's per-connection buffer on listeners and clusters (long prompts exceed it: 413).
BUFFER_LIMIT_BYTES = 32768
# EG's readiness listener, in every listener table the Translation hook sees.
READY_LISTENER = "envoy-gateway-proxy-ready-0.0.0.0-19003"
READY_PORT = 19003
# Filter names EG uses for the HTTP connection manager and the router (last HTTP filter).
HCM_FILTER = "envoy.filters.network.http_connection_manager"
ROUTER_FILTER = "envoy.filters.http.router"
# EG's extension client message limit by default (extensionManager.maxMessageSize unset).
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


def container_port(gateway_port: int) -> int:
    """The port Envoy listens on for a Gateway listener port (privileged ones shifted)."""
    return gateway_port + PORT_SHIFT if gateway_port < PRIVILEGED_PORT_LIMIT else gateway_port


@dataclass(frozen=True)
class NameScheme:
    """How EG names the xDS it builds for a Gateway. Only EG's default (v1) scheme today: a
    listener and its route configuration are both named `<ns>/<gateway>/<listener>`, after the first
    Gateway listener on that port. XDSNameSchemeV2 would be another instance of this class."""

    def listener_prefix(self, gateway_namespace: str, gateway_name: str) -> str:
        """What every xDS listener name of that Gateway starts with."""
        return f"{gateway_namespace}/{gateway_name}/"

    def listener(self, gateway_namespace: str, gateway_name: str, listener_name: str) -> str:
        return f"{self.listener_prefix(gateway_namespace, gateway_name)}{listener_name}"

    def gateway_of_listener(self, listener: str) -> str | None:
        """The Gateway ("ns/name") a listener name belongs to; None for names not of this scheme."""
        if listener.count("/") < 2:
            return None
        return "/".join(listener.split("/")[:2])

    def route_config(self, listener: str) -> str:
        """The RDS route configuration of an xDS listener."""
        return listener

    def virtual_host(self, listener: str, hostname: str) -> str:
        return f"{listener}/{host_label(hostname)}"


DEFAULT_NAMES = NameScheme()


def host_label(hostname: str) -> str:
    return hostname.replace(".", "_")
