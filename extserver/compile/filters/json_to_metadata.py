"""Read `model` from the JSON request body into dynamic metadata, which model routes match on."""

from __future__ import annotations

from envoy.extensions.filters.http.json_to_metadata.v3.json_to_metadata_pb2 import JsonToMetadata
from envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2 import HttpFilter

from api import contract
from extserver.compile import naming

# Clients often send JSON with no or a wrong Content-Type (curl -d sends form-urlencoded), and often with
# parameters ("; charset=utf-8"), which an exact content-type list would not match.
ALLOWED_CONTENT_TYPES_REGEX = (
    r"(?i)^(application/json|application/[a-z0-9.+-]*\+json|application/x-www-form-urlencoded"
    r"|application/octet-stream|text/plain)\s*(;.*)?$"
)


def build_json_to_metadata_filter() -> HttpFilter:
    config = JsonToMetadata()
    rules = config.request_rules
    rule = rules.rules.add()
    rule.selectors.add().key = contract.BODY_MODEL_KEY
    rule.on_present.metadata_namespace = contract.BODY_METADATA_NAMESPACE
    rule.on_present.key = contract.BODY_MODEL_KEY
    rule.on_present.type = JsonToMetadata.STRING
    rules.allow_content_types_regex.regex = ALLOWED_CONTENT_TYPES_REGEX
    rules.allow_empty_content_type = True
    http_filter = HttpFilter(name=naming.JSON_TO_METADATA_FILTER)
    http_filter.typed_config.Pack(config, deterministic=True)
    return http_filter
