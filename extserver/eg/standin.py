"""A stand-in for Envoy Gateway: the minimal xDS EG (v1.9, default name scheme) generates for
Gateways and HTTPRoutes.

Used by `python -m extserver translate` and the local gateway to feed the hooks what EG would send:
same names, same key fields (checked against real EG output, see docs/envoy-gateway.md), and the
extension resources EG passes to the Route and Cluster hooks, in EG's call order. Kinds other than
GatewayClass, Gateway, HTTPRoute and the inference kinds are ignored; TLS, GRPCRoute, TCP/UDP
listeners are out of scope.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from envoy.config.route.v3.route_components_pb2 import (
    DirectResponseAction,
    HeaderMatcher,
    QueryParameterMatcher,
    Route,
    RouteAction,
    RouteMatch,
    VirtualHost,
)
from envoy.config.route.v3.route_pb2 import RouteConfiguration
from envoy.type.matcher.v3.regex_pb2 import RegexMatcher
from envoy.type.matcher.v3.string_pb2 import StringMatcher

from api.model import GROUP_GA, GROUP_X
from extserver.eg.facts import (
    CONTROLLER_NAME,
    DEFAULT_NAMES,
    GATEWAY_GROUP,
    READY_LISTENER,
    container_port,
    host_label,
)
from extserver.eg.resources import (
    ClusterHookCall,
    EgXds,
    RouteHookCall,
    build_cluster,
    build_listener,
    build_ready_listener,
    eg_metadata,
)

# Kinds registered with EG's extensionManager (config/envoy-gateway/): group -> kinds.
EXTENSION_KINDS = {GROUP_X: ("InferencePool", "InferenceModel"), GROUP_GA: ("InferencePool",)}
BACKEND_KINDS = {GROUP_X: ("InferencePool",), GROUP_GA: ("InferencePool",)}


def _ns(obj: Mapping[str, Any]) -> str:
    return str(obj.get("metadata", {}).get("namespace") or "default")


def _name(obj: Mapping[str, Any]) -> str:
    return str(obj.get("metadata", {}).get("name", ""))


def _group(api_version: str) -> str:
    return api_version.rpartition("/")[0] if "/" in api_version else ""


@dataclass
class _HttpListener:
    gateway_ns: str
    gateway: str
    name: str
    port: int
    hostname: str | None
    allowed_from: str
    allowed_kinds: tuple[str, ...]

    @property
    def ir_name(self) -> str:
        return DEFAULT_NAMES.listener(self.gateway_ns, self.gateway, self.name)


def _eg_gateways(objects: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Gateways EG reconciles: class unknown here, or a class whose controller is EG's."""
    classes = {
        _name(o): o.get("spec", {}).get("controllerName")
        for o in objects
        if o.get("kind") == "GatewayClass" and _group(str(o.get("apiVersion", ""))) == GATEWAY_GROUP
    }
    out = []
    for obj in objects:
        if obj.get("kind") != "Gateway" or _group(str(obj.get("apiVersion", ""))) != GATEWAY_GROUP:
            continue
        cls = obj.get("spec", {}).get("gatewayClassName")
        if cls in classes and classes[cls] != CONTROLLER_NAME:
            continue
        out.append(obj)
    return out


def _http_listeners(gateway: Mapping[str, Any]) -> list[_HttpListener]:
    out = []
    for item in gateway.get("spec", {}).get("listeners", []) or []:
        if item.get("protocol") != "HTTP":
            continue
        allowed = item.get("allowedRoutes", {}) or {}
        kinds = tuple(str(k.get("kind")) for k in allowed.get("kinds", []) or [])
        out.append(
            _HttpListener(
                gateway_ns=_ns(gateway),
                gateway=_name(gateway),
                name=str(item.get("name")),
                port=int(item.get("port", 0)),
                hostname=item.get("hostname"),
                allowed_from=str((allowed.get("namespaces", {}) or {}).get("from", "Same")),
                allowed_kinds=kinds,
            )
        )
    return out


def _attaches(route: Mapping[str, Any], listener: _HttpListener) -> bool:
    if listener.allowed_kinds and "HTTPRoute" not in listener.allowed_kinds:
        return False
    if listener.allowed_from == "Same" and _ns(route) != listener.gateway_ns:
        return False
    for ref in route.get("spec", {}).get("parentRefs", []) or []:
        if ref.get("kind", "Gateway") != "Gateway" or ref.get("group", GATEWAY_GROUP) != GATEWAY_GROUP:
            continue
        if ref.get("name") != listener.gateway or ref.get("namespace", _ns(route)) != listener.gateway_ns:
            continue
        if ref.get("sectionName") not in (None, listener.name):
            continue
        if ref.get("port") not in (None, listener.port):
            continue
        return True
    return False


def _hostnames(route: Mapping[str, Any], listener: _HttpListener) -> list[str]:
    """Route hostnames intersected with the listener's (Gateway API rules, wildcard-aware)."""
    route_hosts = [str(h) for h in route.get("spec", {}).get("hostnames", []) or []]
    if listener.hostname is None:
        return route_hosts or ["*"]
    if not route_hosts:
        return [listener.hostname]
    out = []
    for host in route_hosts:
        if _host_matches(host, listener.hostname):
            out.append(host)
        elif _host_matches(listener.hostname, host):
            out.append(listener.hostname)
    return out


def _host_matches(host: str, pattern: str) -> bool:
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and host != pattern[2:]
    return host == pattern


def _route_match(match: Mapping[str, Any]) -> RouteMatch:
    out = RouteMatch()
    path = match.get("path", {"type": "PathPrefix", "value": "/"}) or {}
    kind, value = path.get("type", "PathPrefix"), str(path.get("value", "/"))
    if kind == "Exact":
        out.path = value
    elif kind == "RegularExpression":
        out.safe_regex.CopyFrom(RegexMatcher(regex=value))
    elif value == "/":
        out.prefix = "/"
    else:
        out.path_separated_prefix = value.rstrip("/")
    for header in match.get("headers", []) or []:
        out.headers.append(_header_matcher(str(header["name"]), header))
    if "method" in match:
        out.headers.append(HeaderMatcher(name=":method", string_match=StringMatcher(exact=match["method"])))
    for param in match.get("queryParams", []) or []:
        qp = QueryParameterMatcher(name=str(param["name"]))
        if param.get("type") == "RegularExpression":
            qp.string_match.safe_regex.regex = str(param["value"])
        else:
            qp.string_match.exact = str(param["value"])
        out.query_parameters.append(qp)
    return out


def _header_matcher(name: str, header: Mapping[str, Any]) -> HeaderMatcher:
    if header.get("type") == "RegularExpression":
        return HeaderMatcher(
            name=name, string_match=StringMatcher(safe_regex=RegexMatcher(regex=header["value"]))
        )
    return HeaderMatcher(name=name, string_match=StringMatcher(exact=str(header["value"])))


def _specificity(route: Route) -> tuple[int, int, int]:
    """EG orders routes most specific first: exact, regex, longest prefix; then more header matches."""
    m = route.match
    which = m.WhichOneof("path_specifier")
    if which == "path":
        rank, length = 3, len(m.path)
    elif which == "safe_regex":
        rank, length = 2, len(m.safe_regex.regex)
    elif which == "path_separated_prefix":
        rank, length = 1, len(m.path_separated_prefix)
    else:
        rank, length = 1, len(m.prefix)
    return (-rank, -length, -(len(m.headers) + len(m.query_parameters)))


class _Index:
    """Objects by (group, kind, namespace, name) for reference lookups."""

    def __init__(self, objects: Sequence[Mapping[str, Any]]) -> None:
        self._by_key: dict[tuple[str, str, str, str], Mapping[str, Any]] = {}
        for obj in objects:
            key = (_group(str(obj.get("apiVersion", ""))), str(obj.get("kind", "")), _ns(obj), _name(obj))
            self._by_key.setdefault(key, obj)

    def get(self, group: str, kind: str, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self._by_key.get((group, kind, namespace, name))


def _as_extension_resource(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """EG sends whole objects as JSON with managedFields stripped; a JSON round trip gives that shape."""
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    meta.setdefault("namespace", _ns(obj))
    out = dict(obj)
    out["metadata"] = meta
    loaded: Mapping[str, Any] = json.loads(json.dumps(out, default=str))
    return loaded


@dataclass
class _Rule:
    cluster: str
    valid: bool
    extension_resources: tuple[Mapping[str, Any], ...]
    # A filter EG rejects (a RequestMirror to anything but a Service): the routes answer 500, yet the
    # rule's cluster is built and the hooks are called as for a valid rule.
    refused: bool = False
    mirror_clusters: tuple[str, ...] = ()  # EG's clusters for the rule's Service mirrors


def _rule(route: Mapping[str, Any], index: int, objects: _Index) -> _Rule:
    """Resolve a rule's backends: EG makes one cluster per rule; a missing custom backend gives a 500."""
    ns = _ns(route)
    rule = route.get("spec", {}).get("rules", [])[index] or {}
    resources: list[Mapping[str, Any]] = []
    for flt in rule.get("filters", []) or []:
        ref = flt.get("extensionRef") if flt.get("type") == "ExtensionRef" else None
        if ref and ref.get("kind") in EXTENSION_KINDS.get(ref.get("group", ""), ()):
            found = objects.get(ref["group"], ref["kind"], ns, ref["name"])
            if found is None:
                return _Rule(f"httproute/{ns}/{_name(route)}/rule/{index}", False, ())
            resources.append(_as_extension_resource(found))
    refused, mirrors = False, []
    for i, flt in enumerate(rule.get("filters", []) or []):
        if flt.get("type") == "RequestMirror":
            ref = (flt.get("requestMirror") or {}).get("backendRef") or {}
            if ref.get("group", "") not in ("", "core") or ref.get("kind", "Service") != "Service":
                refused = True  # "Group is invalid, only the core API group ... are supported"
            else:
                mirrors.append(f"httproute/{ns}/{_name(route)}/rule/{index}-mirror-{i}")
    backends = rule.get("backendRefs", []) or []
    valid = 0
    for ref in backends:
        group, kind = ref.get("group", ""), ref.get("kind", "Service")
        target_ns = ref.get("namespace", ns)
        if kind in BACKEND_KINDS.get(group, ()):
            found = objects.get(group, kind, target_ns, ref["name"])
            if found is None:
                continue
            resources.append(_as_extension_resource(found))
            valid += 1
        elif group == "" and kind == "Service":
            # Service endpoints are out of scope here: EG would publish them over EDS.
            valid += 1
    cluster = f"httproute/{ns}/{_name(route)}/rule/{index}"
    all_found = valid == len(backends) and valid > 0
    return _Rule(cluster, all_found, tuple(resources), refused, () if refused else tuple(mirrors))


def build_eg_xds(objects: Sequence[Mapping[str, Any]]) -> EgXds:
    """xDS for every EG Gateway in `objects` together (names are Gateway-qualified, so they never clash)."""
    merged = EgXds()
    for part in build_eg_xds_by_gateway(objects).values():
        merged.listeners.extend(lis for lis in part.listeners if lis.name != READY_LISTENER)
        merged.routes.extend(part.routes)
        merged.clusters.extend(part.clusters)
        merged.cluster_extension_resources.update(part.cluster_extension_resources)
        merged.route_extension_resources.update(part.route_extension_resources)
        merged.hook_calls.extend(part.hook_calls)
    merged.listeners.append(build_ready_listener())
    return merged


def build_eg_xds_by_gateway(objects: Sequence[Mapping[str, Any]]) -> dict[str, EgXds]:
    """One EgXds per Gateway ("ns/name"), as EG translates one IR per Gateway and calls hooks per IR."""
    index = _Index(objects)
    routes = [
        o
        for o in objects
        if o.get("kind") == "HTTPRoute" and _group(str(o.get("apiVersion", ""))) == GATEWAY_GROUP
    ]
    return {f"{_ns(gw)}/{_name(gw)}": _build_gateway(gw, routes, index) for gw in _eg_gateways(objects)}


def _build_gateway(gateway: Mapping[str, Any], routes: Sequence[Mapping[str, Any]], index: _Index) -> EgXds:
    out = EgXds()
    by_port: dict[int, list[_HttpListener]] = {}
    for listener in _http_listeners(gateway):
        by_port.setdefault(listener.port, []).append(listener)
    for port, listeners in by_port.items():
        # Listeners on one port share one xDS listener and route config, named after the first.
        first = listeners[0].ir_name
        out.listeners.append(build_listener(first, container_port(port)))
        route_config = RouteConfiguration(
            name=DEFAULT_NAMES.route_config(first), ignore_port_in_host_matching=True
        )
        vhosts: dict[str, VirtualHost] = {}
        for listener in listeners:
            for route in routes:
                if _attaches(route, listener):
                    _add_route(out, vhosts, listener, route, index)
        for vhost in vhosts.values():
            sorted_routes = sorted(vhost.routes, key=_specificity)
            del vhost.routes[:]
            vhost.routes.extend(sorted_routes)
        route_config.virtual_hosts.extend(vhosts.values())
        out.routes.append(route_config)
    out.listeners.append(build_ready_listener())
    return out


def _add_route(
    out: EgXds,
    vhosts: dict[str, VirtualHost],
    listener: _HttpListener,
    route: Mapping[str, Any],
    index: _Index,
) -> None:
    ns, name = _ns(route), _name(route)
    rules = route.get("spec", {}).get("rules", []) or [{}]
    for host in _hostnames(route, listener):
        vhost_name = DEFAULT_NAMES.virtual_host(listener.ir_name, host)
        vhost = vhosts.get(vhost_name)
        if vhost is None:
            vhost = VirtualHost(
                name=vhost_name,
                domains=[host],
                metadata=eg_metadata("Gateway", listener.gateway, listener.gateway_ns, listener.name),
            )
            vhosts[vhost_name] = vhost
        for i in range(len(rules)):
            rule = _rule(route, i, index)
            matches = (rules[i] or {}).get("matches") or [{}]
            for j, match in enumerate(matches):
                xds_route = Route(
                    name=f"httproute/{ns}/{name}/rule/{i}/match/{j}/{host_label(host)}",
                    match=_route_match(match),
                    metadata=eg_metadata("HTTPRoute", name, ns),
                )
                if rule.valid and not rule.refused:
                    action = RouteAction(cluster=rule.cluster)
                    action.upgrade_configs.add(upgrade_type="websocket")
                    for mirror in rule.mirror_clusters:
                        action.request_mirror_policies.add(cluster=mirror)
                    xds_route.route.CopyFrom(action)
                else:
                    xds_route.direct_response.CopyFrom(DirectResponseAction(status=500))
                vhost.routes.append(xds_route)
                if rule.extension_resources:
                    out.route_extension_resources[xds_route.name] = rule.extension_resources
                    out.hook_calls.append(
                        RouteHookCall(
                            listener.ir_name, vhost_name, xds_route.name, (host,), rule.extension_resources
                        )
                    )
                if rule.valid and all(c.name != rule.cluster for c in out.clusters):
                    out.clusters.append(build_cluster(rule.cluster, name, ns))
                    # Service endpoints are out of scope: EG would publish them over EDS.
                    out.clusters.extend(build_cluster(m, name, ns) for m in rule.mirror_clusters)
                    if rule.extension_resources:
                        out.cluster_extension_resources[rule.cluster] = rule.extension_resources
                        out.hook_calls.append(ClusterHookCall(rule.cluster, rule.extension_resources))
