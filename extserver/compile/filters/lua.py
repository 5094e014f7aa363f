"""After the picker: its destination (dynamic metadata) into the request header, else the FailOpen rewrite.

The picker sees no request headers (ext_proc request headers SKIP: one gRPC round trip fewer per
request), so Envoy drops header mutations from its body answer; the destination arrives as `envoy.lb`
dynamic metadata and this filter, per route of a pool, copies it into `x-gateway-destination-endpoint`
and sets Content-Length to the body actually sent. When there is none (picker down with FailOpen),
weighted-cluster entries rewrite `model` to their target so the canary split stays correct.
"""

from __future__ import annotations

import json

from envoy.config.core.v3.base_pb2 import DataSource
from envoy.extensions.filters.http.lua.v3.lua_pb2 import Lua, LuaPerRoute
from envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2 import HttpFilter
from google.protobuf.any_pb2 import Any as AnyProto

from api import contract
from extserver.compile import naming

# Listener-level code does nothing: routes that are not ours keep streaming their bodies untouched.
_NOOP = "function envoy_on_request(request_handle) end\n"

# Shared by both per-route scripts. `body()` waits for the whole body, which reaches this filter only
# after the picker answered on it (ext_proc BUFFERED): headers passed ext_proc early (request headers
# SKIPped), and this wait is what keeps them, and the router's host choice, behind the picker's answer.
_DESTINATION = """\
local function destination_from_picker(request_handle)
  local body = request_handle:body()
  local lb = request_handle:streamInfo():dynamicMetadata():get({namespace})
  local destination = lb and lb[{header}]
  if destination == nil or destination == "" then
    return false, body
  end
  request_handle:headers():replace({header}, destination)
  if body ~= nil then
    request_handle:headers():replace("content-length", tostring(body:length()))
  end
  return true, body
end
"""

# GIE's protocol only (another EPP): the served endpoint, for the picker. Envoy 1.40's Lua cannot read
# the upstream address; the route adds it as a response header (%UPSTREAM_REMOTE_ADDRESS%, see
# routes.py), which this moves into envoy.lb (the ext_proc response headers message carries envoy.lb to
# the EPP; Envoy runs this filter's response side before the picker's) and hides from the client.
_SERVED = """\
function envoy_on_response(response_handle)
  local served = response_handle:headers():get({served_header})
  if served == nil then
    return
  end
  response_handle:headers():remove({served_header})
  response_handle:streamInfo():dynamicMetadata():set({namespace}, {served}, served)
end
"""

# Catch-all and backend-ref routes of a pool: the destination only.
_ROUTE = """\
{destination}
function envoy_on_request(request_handle)
  destination_from_picker(request_handle)
end
"""

# Weighted-cluster entries: the destination, and `model` -> target when no picker answered (FailOpen)
# or always (`always`: a picker other than ours chooses the endpoint but does not rewrite the model).
_REWRITE = """\
{destination}
local target = {target}
local always = {always}
function envoy_on_request(request_handle)
  local routed, body = destination_from_picker(request_handle)
  if body == nil or (routed and not always) then
    return
  end
  local text = body:getBytes(0, body:length())
  local rewritten, count = string.gsub(text, '("model"%s*:%s*)"[^"]*"', function(prefix)
    return prefix .. target
  end, 1)
  if count > 0 then
    body:setBytes(rewritten)
  end
  request_handle:headers():replace("content-length", tostring(body:length()))
end
"""


def lua_string(text: str) -> str:
    """A Lua string literal holding `text` (only ASCII after json.dumps, so escapes are simple)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _destination_code(served: bool) -> str:
    names = {
        "namespace": lua_string(contract.LB_METADATA_NAMESPACE),
        "header": lua_string(contract.HEADER_DESTINATION_ENDPOINT),
        "served": lua_string(contract.HEADER_DESTINATION_SERVED),
        "served_header": lua_string(contract.HEADER_SERVED_UPSTREAM),
    }
    # Ours never sees responses (a Lua response step on every request would cost for nothing).
    return _DESTINATION.format(**names) + (_SERVED.format(**names) if served else "")


def destination_code(served: bool = False) -> str:
    """Per pool route: the picker's destination into the header, Content-Length fixed; `served`: also
    record the served endpoint for a GIE picker."""
    return _ROUTE.format(destination=_destination_code(served))


def rewrite_code(target_model: str, always: bool = False, served: bool = False) -> str:
    """Per weighted cluster: the destination header, and `model` -> this target without a picker answer
    (or `always`)."""
    return _REWRITE.format(
        destination=_destination_code(served),
        target=lua_string(json.dumps(target_model)),
        always="true" if always else "false",
    )


def build_lua_filter() -> HttpFilter:
    config = Lua(default_source_code=DataSource(inline_string=_NOOP))
    # Lua changes content-length; a cleared route cache would re-roll the weighted choice.
    config.clear_route_cache.value = False
    http_filter = HttpFilter(name=naming.LUA_FILTER)
    http_filter.typed_config.Pack(config, deterministic=True)
    return http_filter


def per_route_destination(served: bool = False) -> AnyProto:
    """LuaPerRoute for a pool's routes without weighted clusters: the destination copy."""
    per_route = LuaPerRoute(source_code=DataSource(inline_string=destination_code(served)))
    packed = AnyProto()
    packed.Pack(per_route, deterministic=True)
    return packed


def per_cluster_rewrite(target_model: str, always: bool = False, served: bool = False) -> AnyProto:
    """LuaPerRoute for one ClusterWeight: rewrite `model` to that cluster's target."""
    code = rewrite_code(target_model, always, served)
    per_route = LuaPerRoute(source_code=DataSource(inline_string=code))
    packed = AnyProto()
    packed.Pack(per_route, deterministic=True)
    return packed
