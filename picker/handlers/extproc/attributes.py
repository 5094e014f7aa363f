"""Reading what Envoy tells the picker on request_headers: attributes, route/cluster metadata, hints."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from google.protobuf import json_format, struct_pb2, text_format

from api.contract import (
    ATTR_CLUSTER_METADATA,
    ATTR_CLUSTER_NAME,
    ATTR_REQUEST_ID,
    ATTR_REQUEST_PATH,
    ATTR_ROUTE_METADATA,
    HEADER_DESTINATION_SUBSET,
    LB_SUBSET_HINT_NAMESPACE,
    METADATA_NAMESPACE,
)


@dataclass(frozen=True)
class RequestAttributes:
    """The xDS context of one request: the cluster Envoy chose and our metadata on it and on the route."""

    cluster_name: str = ""
    cluster_metadata: Mapping[str, Any] | None = None  # our namespace's fields on the cluster
    route_metadata: Mapping[str, Any] | None = None  # our namespace's fields on the route
    path: str = ""  # `request.path` (with the query string)
    request_id: str = ""  # `request.id` (Envoy's x-request-id)


@functools.lru_cache(maxsize=4096)
def metadata_from_text(text: str, namespace: str = METADATA_NAMESPACE) -> Mapping[str, Any] | None:
    """Fields of `namespace` from an envoy.config.core.v3.Metadata in text format (as ext_proc sends it).

    Returns None when the text does not parse or has no such namespace: a bad attribute must not
    fail the request, the picker falls back to what it can infer. Cached (read-only result): every
    request on a route or cluster carries the same text, and text-format parsing is slow in Python.
    """
    metadata = base_pb2.Metadata()
    try:
        text_format.Parse(text, metadata, allow_unknown_field=True, allow_unknown_extension=True)
    except text_format.ParseError:
        return None
    if namespace not in metadata.filter_metadata:
        return None
    return MappingProxyType(json_format.MessageToDict(metadata.filter_metadata[namespace]))


def _value_as_text(value: struct_pb2.Value) -> str:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    return ""


def _attribute_metadata(value: struct_pb2.Value) -> Mapping[str, Any] | None:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return metadata_from_text(value.string_value)
    if kind == "struct_value":  # tolerate a structured form, should Envoy ever send one
        fields = value.struct_value.fields.get("filter_metadata")
        if fields is not None and fields.WhichOneof("kind") == "struct_value":
            inner = fields.struct_value.fields.get(METADATA_NAMESPACE)
            if inner is not None and inner.WhichOneof("kind") == "struct_value":
                return json_format.MessageToDict(inner.struct_value)
    return None


def read_attributes(request: ep.ProcessingRequest) -> RequestAttributes:
    """Attributes from the first message of a stream (Envoy keys them by the ext_proc filter name)."""
    cluster_name = path = request_id = ""
    cluster_md: Mapping[str, Any] | None = None
    route_md: Mapping[str, Any] | None = None
    for attrs in request.attributes.values():
        fields = attrs.fields
        if ATTR_REQUEST_PATH in fields and not path:
            path = _value_as_text(fields[ATTR_REQUEST_PATH])
        if ATTR_REQUEST_ID in fields and not request_id:
            request_id = _value_as_text(fields[ATTR_REQUEST_ID])
        if ATTR_CLUSTER_NAME in fields and not cluster_name:
            cluster_name = _value_as_text(fields[ATTR_CLUSTER_NAME])
        if ATTR_CLUSTER_METADATA in fields and cluster_md is None:
            cluster_md = _attribute_metadata(fields[ATTR_CLUSTER_METADATA])
        if ATTR_ROUTE_METADATA in fields and route_md is None:
            route_md = _attribute_metadata(fields[ATTR_ROUTE_METADATA])
    return RequestAttributes(cluster_name, cluster_md, route_md, path, request_id)


def read_subset_hint(request: ep.ProcessingRequest) -> frozenset[str] | None:
    """`envoy.lb.subset_hint` / x-gateway-destination-endpoint-subset: allowed ip:ports, or None if absent."""
    hint = request.metadata_context.filter_metadata.get(LB_SUBSET_HINT_NAMESPACE)
    if hint is None or HEADER_DESTINATION_SUBSET not in hint.fields:
        return None
    value = hint.fields[HEADER_DESTINATION_SUBSET]
    kind = value.WhichOneof("kind")
    if kind == "list_value":
        return frozenset(v.string_value for v in value.list_value.values if v.string_value)
    if kind == "string_value":
        return frozenset(s.strip() for s in value.string_value.split(",") if s.strip())
    return frozenset()


def header_map(headers: ep.HttpHeaders) -> dict[str, str]:
    """Lower-cased header name -> value (raw_value preferred; Envoy sends one or the other)."""
    result: dict[str, str] = {}
    for header in headers.headers.headers:
        value = header.raw_value.decode("utf-8", "replace") if header.raw_value else header.value
        result[header.key.lower()] = value
    return result
