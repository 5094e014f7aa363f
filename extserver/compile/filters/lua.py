"""FailOpen fallback: rewrite `model` to the weighted cluster's target when the picker set no destination."""

from __future__ import annotations

import json

from envoy.config.core.v3.base_pb2 import DataSource
from envoy.extensions.filters.http.lua.v3.lua_pb2 import Lua, LuaPerRoute
from envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2 import HttpFilter
from google.protobuf.any_pb2 import Any as AnyProto

from api import contract
from extserver.compile import naming

# Listener-level code does nothing; the per-weighted-cluster code below does the work.
_NOOP = "function envoy_on_request(request_handle) end\n"

_REWRITE = """\
-- Runs after the picker (ext_proc). If the picker set a destination it already rewrote the body.
local target = {target}
function envoy_on_request(request_handle)
  if request_handle:headers():get({header}) ~= nil then
    return
  end
  local body = request_handle:body()
  if body == nil then
    return
  end
  local text = body:getBytes(0, body:length())
  local rewritten, count = string.gsub(text, '("model"%s*:%s*)"[^"]*"', function(prefix)
    return prefix .. target
  end, 1)
  if count > 0 then
    body:setBytes(rewritten)
    request_handle:headers():replace("content-length", tostring(#rewritten))
  end
end
"""


def _lua_string(text: str) -> str:
    """A Lua string literal holding `text` (only ASCII after json.dumps, so escapes are simple)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def rewrite_code(target_model: str) -> str:
    return _REWRITE.format(
        target=_lua_string(json.dumps(target_model)),
        header=_lua_string(contract.HEADER_DESTINATION_ENDPOINT),
    )


def build_lua_filter() -> HttpFilter:
    config = Lua(default_source_code=DataSource(inline_string=_NOOP))
    # Lua changes content-length; a cleared route cache would re-roll the weighted choice.
    config.clear_route_cache.value = False
    http_filter = HttpFilter(name=naming.LUA_FILTER)
    http_filter.typed_config.Pack(config, deterministic=True)
    return http_filter


def per_cluster_rewrite(target_model: str) -> AnyProto:
    """LuaPerRoute for one ClusterWeight: rewrite `model` to that cluster's target."""
    per_route = LuaPerRoute(source_code=DataSource(inline_string=rewrite_code(target_model)))
    packed = AnyProto()
    packed.Pack(per_route, deterministic=True)
    return packed
