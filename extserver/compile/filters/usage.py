"""Token usage and the first body chunk's time into dynamic metadata, which the access log brings back."""

from __future__ import annotations

import json

from envoy.config.route.v3.route_components_pb2 import FilterConfig
from envoy.extensions.filters.http.lua.v3.lua_pb2 import Lua, LuaPerRoute
from envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2 import HttpFilter
from google.protobuf.any_pb2 import Any as AnyProto

from api import contract
from api.contract import UsageMetadataKey
from extserver.compile import naming

# Bytes of the previous chunk scanned again with the next one: enough for `"completion_tokens": `
# plus a number, so a key or number split anywhere across chunks is still found whole.
TAIL_BYTES = 64
# The code's key in Lua.source_codes, which the per-route config names: Envoy rejects a per-route
# FilterConfig without a config, and a Lua filter without one would run nothing.
SOURCE_NAME = "inference-usage"

_USAGE = """\
-- bodyChunks() hands every chunk on as it arrives (nothing is buffered: SSE tokens are not held).
-- Per chunk: one plain find, and a pattern scan only when a usage key may be there; only a short
-- tail of the previous chunk is kept, never the body.
local namespace = {namespace}
local keys = {{{keys}}}
local tail_bytes = {tail_bytes}
local first_chunk_key = {first_chunk_key}

function envoy_on_response(response_handle)
  local found = {{}}
  local tail = ""
  local first_chunk_us = nil
  for chunk in response_handle:bodyChunks() do
    if first_chunk_us == nil then
      -- TTFT: when the first SSE event (or the whole JSON answer) arrived, not the headers.
      first_chunk_us = tonumber(response_handle:timestampString(EnvoyTimestampResolution.MICROSECOND))
    end
    local text = tail .. chunk:getBytes(0, chunk:length())
    if string.find(text, '_tokens"', 1, true) then
      for _, key in ipairs(keys) do
        -- The quote right after the name is unescaped, so this is a JSON key and not generated text
        -- (inside a JSON string every quote is escaped). The non-digit after the number proves it
        -- whole; a number cut by the chunk end is matched again, whole, with the next chunk. In a
        -- stream the last `usage` wins (continuous usage repeats it with growing counts).
        for value in string.gmatch(text, '"' .. key .. '"%s*:%s*(%d+)%D') do
          found[key] = tonumber(value)
        end
      end
    end
    tail = string.sub(text, -tail_bytes)
  end
  local metadata = response_handle:streamInfo():dynamicMetadata()
  for _, key in ipairs(keys) do
    if found[key] ~= nil then
      metadata:set(namespace, key, found[key])
    end
  end
  if first_chunk_us ~= nil then
    metadata:set(namespace, first_chunk_key, first_chunk_us)
  end
end
"""


def usage_lua_code() -> str:
    """The filter's Lua source (public: test Envoy configs embed it as compiled)."""
    keys = (UsageMetadataKey.PROMPT_TOKENS, UsageMetadataKey.COMPLETION_TOKENS)
    # json.dumps of these ASCII constants (no backslashes or control characters) is a valid Lua literal.
    return _USAGE.format(
        namespace=json.dumps(contract.USAGE_METADATA_NAMESPACE),
        keys=", ".join(json.dumps(key) for key in keys),
        tail_bytes=TAIL_BYTES,
        first_chunk_key=json.dumps(UsageMetadataKey.FIRST_CHUNK_US),
    )


def build_usage_filter() -> HttpFilter:
    # Off on the listener: only requests the picker routed are reported, so EG's other routes pay nothing.
    config = Lua()
    config.source_codes[SOURCE_NAME].inline_string = usage_lua_code()
    http_filter = HttpFilter(name=naming.USAGE_FILTER, disabled=True)
    http_filter.typed_config.Pack(config, deterministic=True)
    return http_filter


def enable_on_route() -> AnyProto:
    """typed_per_filter_config value that turns the (disabled-by-default) usage filter on for a route."""
    wrapper = FilterConfig(disabled=False)
    wrapper.config.Pack(LuaPerRoute(name=SOURCE_NAME), deterministic=True)
    packed = AnyProto()
    packed.Pack(wrapper, deterministic=True)
    return packed
