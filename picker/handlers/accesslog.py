"""Envoy's gRPC access log, received by the picker: status, flags, timings and token usage of routed requests.

The picker marks each request it routes (PICKER_METADATA_NAMESPACE) and the usage Lua filter adds
the body's token counts (USAGE_METADATA_NAMESPACE); the access log brings both back with the status,
batched, after the response is over. Entries without the mark (not routed by a picker) are ignored.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

import grpc
import structlog
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc
from google.protobuf import struct_pb2

from api.contract import (
    PICKER_METADATA_NAMESPACE,
    USAGE_METADATA_NAMESPACE,
    PickerMetadataKey,
    UsageMetadataKey,
)

log = structlog.get_logger(__name__)


# Envoy's short names of the response flags (as in %RESPONSE_FLAGS%), by ResponseFlags field.
RESPONSE_FLAG_CODES = {
    "failed_local_healthcheck": "LH",
    "no_healthy_upstream": "UH",
    "upstream_request_timeout": "UT",
    "local_reset": "LR",
    "upstream_remote_reset": "UR",
    "upstream_connection_failure": "UF",
    "upstream_connection_termination": "UC",
    "upstream_overflow": "UO",
    "no_route_found": "NR",
    "delay_injected": "DI",
    "fault_injected": "FI",
    "rate_limited": "RL",
    "unauthorized_details": "UAEX",
    "rate_limit_service_error": "RLSE",
    "downstream_connection_termination": "DC",
    "upstream_retry_limit_exceeded": "URX",
    "stream_idle_timeout": "SI",
    "invalid_envoy_request_headers": "IH",
    "downstream_protocol_error": "DPE",
    "upstream_max_stream_duration_reached": "UMSDR",
    "response_from_cache_filter": "RFCF",
    "no_filter_config_found": "NFCF",
    "duration_timeout": "DT",
    "upstream_protocol_error": "UPE",
    "no_cluster_found": "NC",
    "overload_manager": "OM",
    "dns_resolution_failure": "DF",
    "downstream_remote_reset": "DR",
}


@dataclass(frozen=True)
class Timings:
    """Seconds from the request's first byte at Envoy (its start_time); None where nothing was logged."""

    first_chunk: float | None = None  # first response body chunk passed the usage Lua
    last_upstream_tx: float | None = None  # request fully sent to the model server
    last_upstream_rx: float | None = None  # response fully received from it
    last_downstream_tx: float | None = None  # response fully sent to the client


@dataclass(frozen=True)
class Outcome:
    """How one routed request ended, as Envoy logged it."""

    request_id: str
    pool: str
    model: str
    target: str
    endpoint: str
    status: int | None  # None: Envoy logged no response code (the client went away first)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    stream: bool | None = None  # None: the mark has no `stream` (a picker of an older version)
    flags: frozenset[str] = frozenset()  # RESPONSE_FLAG_CODES values
    timings: Timings = Timings()


def _text(fields: struct_pb2.Struct, key: str) -> str:
    value = fields.fields.get(key)
    return value.string_value if value is not None else ""


def _count(fields: struct_pb2.Struct | None, key: str) -> int | None:
    if fields is None:
        return None
    value = fields.fields.get(key)
    if value is None or value.WhichOneof("kind") != "number_value" or value.number_value < 0:
        return None
    return int(value.number_value)


def _flag(fields: struct_pb2.Struct, key: str) -> bool | None:
    value = fields.fields.get(key)
    return value.bool_value if value is not None and value.WhichOneof("kind") == "bool_value" else None


def _offset(common: accesslog_pb2.AccessLogCommon, field: str) -> float | None:
    if not common.HasField(field):  # type: ignore[arg-type]
        return None
    return float(getattr(common, field).ToNanoseconds()) / 1e9


def _timings(common: accesslog_pb2.AccessLogCommon, usage: struct_pb2.Struct | None) -> Timings:
    first_chunk_us = _count(usage, UsageMetadataKey.FIRST_CHUNK_US)
    first_chunk = None
    if first_chunk_us is not None and common.HasField("start_time"):
        # Both are Envoy's wall clock; a negative gap (clock stepped back) is no measurement.
        gap = (first_chunk_us - common.start_time.ToMicroseconds()) / 1e6
        first_chunk = gap if gap >= 0 else None
    return Timings(
        first_chunk=first_chunk,
        last_upstream_tx=_offset(common, "time_to_last_upstream_tx_byte"),
        last_upstream_rx=_offset(common, "time_to_last_upstream_rx_byte"),
        last_downstream_tx=_offset(common, "time_to_last_downstream_tx_byte"),
    )


def read_outcome(entry: accesslog_pb2.HTTPAccessLogEntry) -> Outcome | None:
    """The outcome of a request the picker routed, or None for any other entry."""
    metadata = entry.common_properties.metadata.filter_metadata
    mark = metadata.get(PICKER_METADATA_NAMESPACE)
    if mark is None or not _text(mark, PickerMetadataKey.TARGET):
        return None
    usage = metadata.get(USAGE_METADATA_NAMESPACE)
    response = entry.response
    common = entry.common_properties
    flags = frozenset(
        RESPONSE_FLAG_CODES[field.name]
        for field, value in common.response_flags.ListFields()
        if field.name in RESPONSE_FLAG_CODES and value
    )
    return Outcome(
        request_id=entry.request.request_id,
        pool=_text(mark, PickerMetadataKey.POOL),
        model=_text(mark, PickerMetadataKey.MODEL),
        target=_text(mark, PickerMetadataKey.TARGET),
        endpoint=_text(mark, PickerMetadataKey.ENDPOINT),
        status=response.response_code.value if response.HasField("response_code") else None,
        prompt_tokens=_count(usage, UsageMetadataKey.PROMPT_TOKENS),
        completion_tokens=_count(usage, UsageMetadataKey.COMPLETION_TOKENS),
        stream=_flag(mark, PickerMetadataKey.STREAM),
        flags=flags,
        timings=_timings(common, usage),
    )


class OutcomeSink(Protocol):
    """Where outcomes go: the Director."""

    def record_outcome(self, outcome: Outcome) -> None: ...


class AccessLogReceiver(als_pb2_grpc.AccessLogServiceServicer):
    """`envoy.service.accesslog.v3.AccessLogService`: one long-lived stream per Envoy worker."""

    def __init__(self, sink: OutcomeSink) -> None:
        self.sink = sink

    async def StreamAccessLogs(
        self,
        request_iterator: AsyncIterator[als_pb2.StreamAccessLogsMessage],
        context: grpc.aio.ServicerContext[als_pb2.StreamAccessLogsMessage, als_pb2.StreamAccessLogsResponse],
    ) -> als_pb2.StreamAccessLogsResponse:
        async for message in request_iterator:
            for entry in message.http_logs.log_entry:
                try:
                    outcome = read_outcome(entry)
                    if outcome is not None:
                        self.sink.record_outcome(outcome)
                except Exception:  # one odd entry must not end the stream and lose the rest
                    log.warning("access log entry not understood", exc_info=True)
        return als_pb2.StreamAccessLogsResponse()
