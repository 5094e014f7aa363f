"""Envoy's gRPC access log, received by the picker: status and token usage of the requests it routed.

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


def read_outcome(entry: accesslog_pb2.HTTPAccessLogEntry) -> Outcome | None:
    """The outcome of a request the picker routed, or None for any other entry."""
    metadata = entry.common_properties.metadata.filter_metadata
    mark = metadata.get(PICKER_METADATA_NAMESPACE)
    if mark is None or not _text(mark, PickerMetadataKey.TARGET):
        return None
    usage = metadata.get(USAGE_METADATA_NAMESPACE)
    response = entry.response
    return Outcome(
        request_id=entry.request.request_id,
        pool=_text(mark, PickerMetadataKey.POOL),
        model=_text(mark, PickerMetadataKey.MODEL),
        target=_text(mark, PickerMetadataKey.TARGET),
        endpoint=_text(mark, PickerMetadataKey.ENDPOINT),
        status=response.response_code.value if response.HasField("response_code") else None,
        prompt_tokens=_count(usage, UsageMetadataKey.PROMPT_TOKENS),
        completion_tokens=_count(usage, UsageMetadataKey.COMPLETION_TOKENS),
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
