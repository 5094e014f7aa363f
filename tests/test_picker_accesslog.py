"""The picker's access log service: entries Envoy sends become status and token metrics per model/target.

The stream test runs the real AccessLogService over real gRPC (a grpc.aio server on a free port, a
client speaking Envoy's StreamAccessLogs messages); the Envoy end to end is in test_picker_envoy.py.
"""

from __future__ import annotations

import grpc
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc

from api.contract import (
    PICKER_METADATA_NAMESPACE,
    USAGE_METADATA_NAMESPACE,
    PickerMetadataKey,
    UsageMetadataKey,
)
from picker.handlers.accesslog import AccessLogReceiver, Outcome, Timings, read_outcome


def _entry(
    status: int | None = 200,
    mark: dict[str, object] | None = None,
    usage: dict[str, object] | None = None,
    request_id: str = "r1",
) -> accesslog_pb2.HTTPAccessLogEntry:
    entry = accesslog_pb2.HTTPAccessLogEntry()
    entry.request.request_id = request_id
    if status is not None:
        entry.response.response_code.value = status
    metadata = entry.common_properties.metadata.filter_metadata
    if mark is not None:
        metadata[PICKER_METADATA_NAMESPACE].update(mark)
    if usage is not None:
        metadata[USAGE_METADATA_NAMESPACE].update(usage)
    return entry


MARK = {
    PickerMetadataKey.POOL: "default/pool",
    PickerMetadataKey.MODEL: "alias",
    PickerMetadataKey.TARGET: "base",
    PickerMetadataKey.ENDPOINT: "10.0.0.1:8000",
}


def test_routed_entry_gives_status_and_usage() -> None:
    usage = {UsageMetadataKey.PROMPT_TOKENS: 90, UsageMetadataKey.COMPLETION_TOKENS: 16}
    assert read_outcome(_entry(200, MARK, usage)) == Outcome(
        request_id="r1",
        pool="default/pool",
        model="alias",
        target="base",
        endpoint="10.0.0.1:8000",
        status=200,
        prompt_tokens=90,
        completion_tokens=16,
    )


START_US = 1_700_000_000_123_456


def test_timings_flags_and_stream_are_read_relative_to_the_request_start() -> None:
    usage = {UsageMetadataKey.COMPLETION_TOKENS: 11, UsageMetadataKey.FIRST_CHUNK_US: START_US + 250_000}
    entry = _entry(200, {**MARK, PickerMetadataKey.STREAM: True}, usage)
    common = entry.common_properties
    common.start_time.FromMicroseconds(START_US)
    common.time_to_last_upstream_tx_byte.FromMilliseconds(20)
    common.time_to_first_upstream_rx_byte.FromMilliseconds(30)  # the headers: not the first token
    common.time_to_last_upstream_rx_byte.FromMilliseconds(1250)
    common.time_to_last_downstream_tx_byte.FromMilliseconds(1251)
    common.response_flags.downstream_connection_termination = True
    common.response_flags.upstream_request_timeout = True
    outcome = read_outcome(entry)
    assert outcome is not None
    assert outcome.stream is True
    assert outcome.flags == {"DC", "UT"}
    assert outcome.timings == Timings(
        first_chunk=0.25, last_upstream_tx=0.02, last_upstream_rx=1.25, last_downstream_tx=1.251
    )


def test_a_mark_without_stream_and_an_entry_without_timings_leave_them_unknown() -> None:
    outcome = read_outcome(_entry(200, MARK, {UsageMetadataKey.FIRST_CHUNK_US: START_US}))
    assert outcome is not None
    assert (outcome.stream, outcome.flags, outcome.timings) == (None, frozenset(), Timings())
    # Envoy's wall clock stepped back between the start and the first chunk: no TTFT, not a negative one.
    entry = _entry(200, MARK, {UsageMetadataKey.FIRST_CHUNK_US: START_US - 1})
    entry.common_properties.start_time.FromMicroseconds(START_US)
    stepped = read_outcome(entry)
    assert stepped is not None and stepped.timings.first_chunk is None


def test_entries_not_routed_by_a_picker_are_ignored() -> None:
    assert read_outcome(_entry(200)) is None
    assert read_outcome(_entry(200, {PickerMetadataKey.POOL: "default/pool"})) is None  # no target


def test_missing_or_odd_values_become_unknown_not_errors() -> None:
    odd = {UsageMetadataKey.PROMPT_TOKENS: "12", UsageMetadataKey.COMPLETION_TOKENS: -1}
    outcome = read_outcome(_entry(None, MARK, odd))
    assert outcome is not None
    assert (outcome.status, outcome.prompt_tokens, outcome.completion_tokens) == (None, None, None)


class _Sink:
    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []

    def record_outcome(self, outcome: Outcome) -> None:
        if outcome.request_id == "explode":
            raise RuntimeError("a sink failure on one entry")
        self.outcomes.append(outcome)


async def test_stream_over_grpc_records_every_routed_entry_and_survives_bad_ones() -> None:
    sink = _Sink()
    server = grpc.aio.server()
    als_pb2_grpc.add_AccessLogServiceServicer_to_server(AccessLogReceiver(sink), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        batches = [
            [_entry(200, MARK, request_id="a"), _entry(200, request_id="not-ours")],
            [_entry(500, MARK, request_id="explode"), _entry(503, MARK, request_id="b")],
        ]

        async def messages():  # type: ignore[no-untyped-def]
            for i, batch in enumerate(batches):
                message = als_pb2.StreamAccessLogsMessage()
                if i == 0:
                    message.identifier.log_name = "inference-gateway"
                message.http_logs.log_entry.extend(batch)
                yield message

        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = als_pb2_grpc.AccessLogServiceStub(channel)
            await stub.StreamAccessLogs(messages(), timeout=10)
        assert [(o.request_id, o.status) for o in sink.outcomes] == [("a", 200), ("b", 503)]
    finally:
        await server.stop(grace=None)
