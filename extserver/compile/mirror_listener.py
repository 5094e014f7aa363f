"""The mirror listener: a loopback listener in each Envoy where mirrored copies get the client's `model`
back and are routed like any request, by their own pool's picker and InferenceModels (pure).

Envoy sends a mirror copy straight to a cluster, past every HTTP filter, and with the body as the router
forwards it (the `model` already rewritten for the primary's target). Pointing the copy at this listener
runs it through the full chain of its own pool instead; its response is discarded by Envoy as always.
"""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.core.v3.base_pb2 import DataSource
from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.config.route.v3.route_components_pb2 import Route, RouteMatch, VirtualHost
from envoy.config.route.v3.route_pb2 import RouteConfiguration
from envoy.extensions.filters.http.lua.v3.lua_pb2 import Lua
from envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2 import (
    HttpConnectionManager,
    HttpFilter,
)
from envoy.extensions.upstreams.http.v3.http_protocol_options_pb2 import HttpProtocolOptions

from api import contract
from api.contract import MetadataKey, Role
from extserver.compile import metadata, naming
from extserver.compile.clusters import HTTP_PROTOCOL_OPTIONS_KEY, high_circuit_breakers
from extserver.compile.filters.lua import lua_string
from extserver.compile.inputs import CompileOptions
from extserver.compile.listeners import patch_listener_for_pools
from extserver.compile.mirror import MirrorTarget
from extserver.compile.objectives import with_objective_variants
from extserver.compile.plan import PoolPlan
from extserver.compile.routes import (
    ROUTE_TIMEOUT_SECONDS,
    apply_pool_settings,
    build_model_routes,
    catch_all_metadata,
    model_route_template,
)
from extserver.eg.resources import build_listener

# First on the mirror listener, before json_to_metadata reads `model`: the client's model back into the
# body (the mirror policy sent it as a header), both marker headers gone before anything upstream.
_RESTORE = """\
function envoy_on_request(request_handle)
  local headers = request_handle:headers()
  local model = headers:get({client_model})
  headers:remove({client_model})
  if model == nil or model == "" then
    return
  end
  local body = request_handle:body()
  if body == nil then
    return
  end
  local quoted = '"' .. model:gsub('\\\\', '\\\\\\\\'):gsub('"', '\\\\"') .. '"'
  local text = body:getBytes(0, body:length())
  local restored, count = string.gsub(text, '("model"%s*:%s*)"[^"]*"', function(prefix)
    return prefix .. quoted
  end, 1)
  if count > 0 then
    body:setBytes(restored)
    headers:replace("content-length", tostring(body:length()))
  end
end
"""


def restore_code() -> str:
    return _RESTORE.format(client_model=lua_string(contract.HEADER_CLIENT_MODEL))


def _restore_filter() -> HttpFilter:
    config = Lua(default_source_code=DataSource(inline_string=restore_code()))
    http_filter = HttpFilter(name=naming.MIRROR_RESTORE_FILTER)
    http_filter.typed_config.Pack(config, deterministic=True)
    return http_filter


def build_mirror_listener(name: str, pools: Sequence[PoolPlan], options: CompileOptions) -> Listener:
    """127.0.0.1:<mirror port>, EG's HCM shape, our filters for the shadow pools, the restore first."""
    listener = build_listener(name, options.mirror_port)
    listener.address.socket_address.address = contract.MIRROR_LISTENER_ADDRESS
    metadata.set_ours(listener.metadata, {MetadataKey.ROLE: Role.MIRROR})
    hcm_filter = listener.default_filter_chain.filters[0]
    hcm = HttpConnectionManager()
    hcm_filter.typed_config.Unpack(hcm)
    hcm.stat_prefix = "inference-mirror"
    hcm.rds.route_config_name = name
    # Copies come from this Envoy itself: x-forwarded-for keeps the client's address.
    hcm.use_remote_address.value = False
    hcm_filter.typed_config.Pack(hcm, deterministic=True)
    patch_listener_for_pools(listener, {name: list(pools)}, options)
    hcm_filter.typed_config.Unpack(hcm)
    hcm.http_filters.insert(0, _restore_filter())
    hcm_filter.typed_config.Pack(hcm, deterministic=True)
    return listener


def _target_match(key: str) -> RouteMatch:
    match = RouteMatch(prefix="/")
    header = match.headers.add(name=contract.HEADER_MIRROR_TARGET)
    header.string_match.exact = key
    return match


def _pool_routes(name: str, target: MirrorTarget, options: CompileOptions) -> list[Route]:
    """A shadow pool's model routes and catch-all, selected by the copy's mirror header."""
    pool = target.pool
    assert pool is not None
    match = _target_match(target.key)
    catch_all = Route(name=naming.mirror_route(name, target.key))
    catch_all.match.CopyFrom(match)
    catch_all.route.cluster = pool.catch_all_cluster
    catch_all.route.timeout.seconds = ROUTE_TIMEOUT_SECONDS
    catch_all.request_headers_to_remove.append(contract.HEADER_MIRROR_TARGET)
    apply_pool_settings(catch_all, pool, options)
    values = catch_all_metadata(pool, Role.MIRROR)
    values[MetadataKey.MIRROR_OF] = target.key
    metadata.set_ours(catch_all.metadata, values)
    template = model_route_template(pool, match, options, parent_route=catch_all)
    routes = with_objective_variants(
        (
            route
            for m in pool.models
            for route in build_model_routes(
                pool, m, match, options, parent_route=catch_all, template=template
            )
        ),
        pool,
    )
    for route in routes:
        # Model routes are the picker's to route (role model-route); the header says which mirror.
        fields = metadata.ours_struct(route.metadata).fields
        fields[MetadataKey.MIRROR_OF].string_value = target.key
    return [*routes, catch_all]


def _service_route(name: str, target: MirrorTarget) -> Route:
    route = Route(name=naming.mirror_route(name, target.key), match=_target_match(target.key))
    route.route.cluster = target.cluster
    route.route.timeout.seconds = ROUTE_TIMEOUT_SECONDS
    route.request_headers_to_remove.append(contract.HEADER_MIRROR_TARGET)
    metadata.set_ours(route.metadata, {MetadataKey.ROLE: Role.MIRROR, MetadataKey.MIRROR_OF: target.key})
    return route


def build_mirror_route_config(
    name: str, targets: Sequence[MirrorTarget], options: CompileOptions
) -> RouteConfiguration:
    """One virtual host; each target's routes match its mirror header (anything else: Envoy's 404)."""
    vhost = VirtualHost(name=name, domains=["*"])
    metadata.set_ours(vhost.metadata, {MetadataKey.ROLE: Role.MIRROR})
    for target in sorted(targets, key=lambda t: t.key):
        if target.pool is not None:
            vhost.routes.extend(_pool_routes(name, target, options))
        else:
            vhost.routes.append(_service_route(name, target))
    route_config = RouteConfiguration(name=name, ignore_port_in_host_matching=True)
    route_config.virtual_hosts.append(vhost)
    return route_config


def build_mirror_cluster(name: str, options: CompileOptions) -> Cluster:
    """The mirror policies' destination: this Envoy's mirror listener, over HTTP/2 (one connection)."""
    cluster = Cluster(name=name, type=Cluster.STATIC)
    cluster.connect_timeout.seconds = 1
    cluster.load_assignment.CopyFrom(ClusterLoadAssignment(cluster_name=name))
    endpoint = cluster.load_assignment.endpoints.add().lb_endpoints.add().endpoint
    endpoint.address.socket_address.address = contract.MIRROR_LISTENER_ADDRESS
    endpoint.address.socket_address.port_value = options.mirror_port
    protocol = HttpProtocolOptions()
    protocol.explicit_http_config.http2_protocol_options.SetInParent()
    cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS_KEY].Pack(protocol, deterministic=True)
    cluster.circuit_breakers.CopyFrom(high_circuit_breakers())
    metadata.set_ours(cluster.metadata, {MetadataKey.ROLE: Role.MIRROR})
    return cluster
