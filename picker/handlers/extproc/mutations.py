"""Builders for ext_proc ProcessingResponse messages (pure: values in, protobuf messages out)."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from envoy.type.v3 import http_status_pb2
from google.protobuf import struct_pb2

from api.contract import (
    HEADER_DESTINATION_ENDPOINT,
    LB_METADATA_NAMESPACE,
    PICKER_METADATA_NAMESPACE,
    PickerMetadataKey,
)

JSON_CONTENT_TYPE = "application/json"


def header_mutation(
    set_headers: Iterable[tuple[str, str]] = (), remove_headers: Iterable[str] = ()
) -> ep.HeaderMutation:
    """Overwrite (not append) each header in `set_headers`; remove `remove_headers`."""
    return ep.HeaderMutation(
        set_headers=[
            base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(key=key, raw_value=value.encode()),
                append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
            )
            for key, value in set_headers
        ],
        remove_headers=list(remove_headers),
    )


def destination_value(endpoints: Sequence[str]) -> str:
    """`ip:port[,ip:port...]`: the same string goes into the header and the envoy.lb metadata."""
    return ",".join(endpoints)


def lb_metadata(destination: str) -> struct_pb2.Struct:
    """Dynamic metadata `{"envoy.lb": {"x-gateway-destination-endpoint": destination}}`."""
    metadata = struct_pb2.Struct()
    metadata.get_or_create_struct(LB_METADATA_NAMESPACE)[HEADER_DESTINATION_ENDPOINT] = destination
    return metadata


@dataclass(frozen=True)
class RoutedMark:
    """What the picker decided, left in the request's dynamic metadata for the access log to carry back."""

    pool: str
    model: str
    target: str
    endpoint: str
    stream: bool = False


def routed_metadata(destination: str, mark: RoutedMark) -> struct_pb2.Struct:
    """envoy.lb destination plus the picker's mark (PICKER_METADATA_NAMESPACE)."""
    metadata = lb_metadata(destination)
    picker = metadata.get_or_create_struct(PICKER_METADATA_NAMESPACE)
    picker.update(
        {
            PickerMetadataKey.POOL: mark.pool,
            PickerMetadataKey.MODEL: mark.model,
            PickerMetadataKey.TARGET: mark.target,
            PickerMetadataKey.ENDPOINT: mark.endpoint,
            PickerMetadataKey.STREAM: mark.stream,
        }
    )
    return metadata


# Constant answers, built once: grpc serializes them per write and never mutates them. Callers must
# not mutate them either (build a fresh message with the functions below to add mutations).
CONTINUE_REQUEST_HEADERS = ep.ProcessingResponse(
    request_headers=ep.HeadersResponse(response=ep.CommonResponse())
)
CONTINUE_RESPONSE_HEADERS = ep.ProcessingResponse(
    response_headers=ep.HeadersResponse(response=ep.CommonResponse())
)
CONTINUE_RESPONSE_BODY = ep.ProcessingResponse(response_body=ep.BodyResponse(response=ep.CommonResponse()))
CONTINUE_REQUEST_TRAILERS = ep.ProcessingResponse(request_trailers=ep.TrailersResponse())
CONTINUE_RESPONSE_TRAILERS = ep.ProcessingResponse(response_trailers=ep.TrailersResponse())


def routed_body_response(
    destination: str, new_body: bytes | None, mark: RoutedMark | None = None
) -> ep.ProcessingResponse:
    """Answer to a BUFFERED request body: the destination as envoy.lb metadata, the body if rewritten.

    No header mutations: with request headers SKIPped Envoy drops them; the per-route Lua filter sets
    `x-gateway-destination-endpoint` and Content-Length from this answer instead.
    """
    response = ep.ProcessingResponse.FromString(_routed_template(destination, mark))
    if new_body is not None:
        response.request_body.response.body_mutation.body = new_body
    return response


@functools.lru_cache(maxsize=4096)
def _routed_template(destination: str, mark: RoutedMark | None) -> bytes:
    # Building the metadata Structs costs more in Python than parsing these bytes back per request.
    metadata = lb_metadata(destination) if mark is None else routed_metadata(destination, mark)
    response = ep.ProcessingResponse(
        request_body=ep.BodyResponse(response=ep.CommonResponse()), dynamic_metadata=metadata
    )
    return response.SerializeToString(deterministic=True)


def immediate_response(
    status: int, body: bytes, content_type: str = JSON_CONTENT_TYPE, details: str = ""
) -> ep.ProcessingResponse:
    """Answer the client directly (the request never reaches a model server)."""
    return ep.ProcessingResponse(
        immediate_response=ep.ImmediateResponse(
            status=http_status_pb2.HttpStatus(code=status),  # type: ignore[arg-type]
            headers=header_mutation([("content-type", content_type)]),
            body=body,
            details=details,
        )
    )
