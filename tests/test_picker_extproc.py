"""ext_proc building blocks: mutation builders, chunking, attributes in text format."""

from __future__ import annotations

from pathlib import Path

import orjson
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from google.protobuf import struct_pb2, text_format

from api.contract import (
    ATTR_CLUSTER_METADATA,
    ATTR_CLUSTER_NAME,
    ATTR_ROUTE_METADATA,
    HEADER_DESTINATION_ENDPOINT,
    HEADER_DESTINATION_SUBSET,
    LB_METADATA_NAMESPACE,
    LB_SUBSET_HINT_NAMESPACE,
    METADATA_NAMESPACE,
    PICKER_METADATA_NAMESPACE,
    MetadataKey,
    PickerMetadataKey,
)
from picker.errors import error_body
from picker.handlers.extproc import mutations
from picker.handlers.extproc.attributes import (
    header_map,
    metadata_from_text,
    read_attributes,
    read_subset_hint,
)

FIXTURES = Path(__file__).parent / "fixtures" / "picker"


def _metadata_text(fields: dict[str, object]) -> str:
    md = base_pb2.Metadata()
    md.filter_metadata[METADATA_NAMESPACE].update(fields)
    return text_format.MessageToString(md)


def test_routed_body_response_sets_destination_metadata_and_body() -> None:
    response = mutations.routed_body_response("10.0.0.1:8000,10.0.0.2:8000", b'{"model":"t"}')
    common = response.request_body.response
    assert not common.HasField("header_mutation")  # Envoy drops them with request headers skipped
    assert common.body_mutation.body == b'{"model":"t"}'
    lb = response.dynamic_metadata.fields[LB_METADATA_NAMESPACE].struct_value
    assert lb.fields[HEADER_DESTINATION_ENDPOINT].string_value == "10.0.0.1:8000,10.0.0.2:8000"
    again = mutations.routed_body_response("10.0.0.1:8000,10.0.0.2:8000", b'{"model":"u"}')
    assert again.request_body.response.body_mutation.body == b'{"model":"u"}'  # no state shared


def test_routed_body_response_marks_the_request_for_the_access_log() -> None:
    mark = mutations.RoutedMark("default/pool", "alias", "base", "10.0.0.1:8000", stream=True)
    response = mutations.routed_body_response("10.0.0.1:8000", None, mark)
    fields = response.dynamic_metadata.fields
    picker = dict(fields[PICKER_METADATA_NAMESPACE].struct_value.fields)
    assert picker.pop(PickerMetadataKey.STREAM).bool_value is True
    assert {k: v.string_value for k, v in picker.items()} == {
        PickerMetadataKey.POOL: "default/pool",
        PickerMetadataKey.MODEL: "alias",
        PickerMetadataKey.TARGET: "base",
        PickerMetadataKey.ENDPOINT: "10.0.0.1:8000",
    }
    assert fields[LB_METADATA_NAMESPACE].struct_value.fields[HEADER_DESTINATION_ENDPOINT].string_value


def test_routed_body_response_without_rewrite_leaves_body() -> None:
    response = mutations.routed_body_response("10.0.0.1:8000", None)
    assert not response.request_body.response.HasField("body_mutation")


def test_immediate_response_is_openai_json() -> None:
    response = mutations.immediate_response(404, error_body(404, "The model `x` does not exist.", "model"))
    immediate = response.immediate_response
    assert immediate.status.code == 404
    assert immediate.headers.set_headers[0].header.key == "content-type"
    ours = orjson.loads(immediate.body)
    vllm = orjson.loads((FIXTURES / "error-unknown-model.json").read_bytes())
    assert set(ours["error"]) == set(vllm["error"])
    assert ours["error"]["type"] == vllm["error"]["type"] == "NotFoundError"
    assert ours["error"]["code"] == 404


def test_metadata_text_format() -> None:
    text = _metadata_text(
        {MetadataKey.POOL_NAME: "pool", MetadataKey.TARGET_MODEL: "meta-llama/Llama-3.1-8B"}
    )
    assert metadata_from_text(text) == {"pool_name": "pool", "target_model": "meta-llama/Llama-3.1-8B"}
    assert metadata_from_text(text, "other.namespace") is None
    assert metadata_from_text("filter_metadata { key: ") is None
    assert metadata_from_text("") is None


def test_read_attributes_and_headers() -> None:
    attrs = struct_pb2.Struct()
    attrs.update(
        {
            ATTR_CLUSTER_NAME: "inference/default/pool/tweet-summary",
            ATTR_CLUSTER_METADATA: _metadata_text({MetadataKey.TARGET_MODEL: "tweet-summary"}),
            ATTR_ROUTE_METADATA: _metadata_text({MetadataKey.CRITICALITY: "Critical"}),
        }
    )
    request = ep.ProcessingRequest(
        request_headers=ep.HttpHeaders(
            headers=base_pb2.HeaderMap(
                headers=[
                    base_pb2.HeaderValue(key=":path", raw_value=b"/v1/completions"),
                    base_pb2.HeaderValue(key="X-Request-Id", value="abc"),
                ]
            )
        )
    )
    request.attributes["envoy.filters.http.ext_proc"].CopyFrom(attrs)
    read = read_attributes(request)
    assert read.cluster_name == "inference/default/pool/tweet-summary"
    assert read.cluster_metadata == {"target_model": "tweet-summary"}
    assert read.route_metadata == {"criticality": "Critical"}
    assert header_map(request.request_headers) == {":path": "/v1/completions", "x-request-id": "abc"}
    assert read_subset_hint(request) is None


def test_subset_hint() -> None:
    request = ep.ProcessingRequest()
    request.metadata_context.filter_metadata[LB_SUBSET_HINT_NAMESPACE].update(
        {HEADER_DESTINATION_SUBSET: ["10.0.0.1:8000", "10.0.0.2:8000"]}
    )
    assert read_subset_hint(request) == {"10.0.0.1:8000", "10.0.0.2:8000"}
    request.metadata_context.filter_metadata[LB_SUBSET_HINT_NAMESPACE].update({HEADER_DESTINATION_SUBSET: []})
    assert read_subset_hint(request) == frozenset()
