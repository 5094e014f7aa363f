"""Our metadata on generated clusters and routes: one namespace, read back to find what we own."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from envoy.config.core.v3.base_pb2 import Metadata
from google.protobuf.json_format import MessageToDict
from google.protobuf.struct_pb2 import NullValue, Struct, Value

from api.contract import METADATA_NAMESPACE, MetadataKey


def _set_value(value: Value, item: Any) -> None:
    # Same mapping as Struct.update, without its per-call overhead: thousands of generated resources each
    # carry a Struct, and this is the hot path at scale. Exact types first (cheap), then subclasses
    # (StrEnum values, bool before int since bool is an int).
    kind = type(item)
    if kind is str:
        value.string_value = item
    elif kind is int or kind is float:
        value.number_value = item
    elif kind is list or kind is tuple:
        _set_list(value, item)
    elif kind is dict:
        _set_struct(value, item)
    elif item is None:
        value.null_value = NullValue.NULL_VALUE
    elif isinstance(item, bool):
        value.bool_value = item
    elif isinstance(item, str):
        value.string_value = item
    elif isinstance(item, int | float):
        value.number_value = item
    elif isinstance(item, Mapping):
        _set_struct(value, item)
    elif isinstance(item, list | tuple):
        _set_list(value, item)
    else:
        raise ValueError(f"unexpected metadata value type {type(item).__name__}")


def _set_struct(value: Value, item: Mapping[str, Any]) -> None:
    value.struct_value.Clear()
    update_struct(value.struct_value, item)
    value.struct_value.SetInParent()


def _set_list(value: Value, items: list[Any] | tuple[Any, ...]) -> None:
    value.list_value.Clear()
    values = value.list_value.values
    for inner in items:
        _set_value(values.add(), inner)
    value.list_value.SetInParent()


def fill_struct(struct: Struct, values: Mapping[str, Any]) -> None:
    """Clear `struct` and set it to `values` (JSON-like: str, number, bool, None, lists, mappings)."""
    struct.Clear()
    update_struct(struct, values)


def update_struct(struct: Struct, values: Mapping[str, Any]) -> None:
    """Set `values` into `struct`, keeping its other keys."""
    fields = struct.fields
    for key, item in values.items():
        _set_value(fields[key], item)


def set_ours(metadata: Metadata, values: Mapping[str, Any]) -> None:
    """Replace our namespace in `metadata` with `values` (other namespaces, e.g. EG's, stay)."""
    fill_struct(metadata.filter_metadata[METADATA_NAMESPACE], values)


def ours_struct(metadata: Metadata) -> Struct:
    """Our namespace's Struct, created if missing, for callers that write fields directly."""
    return metadata.filter_metadata[METADATA_NAMESPACE]


def ours(metadata: Metadata) -> dict[str, Any] | None:
    """Our namespace as a dict, or None if the resource is not one we generated or marked."""
    if METADATA_NAMESPACE not in metadata.filter_metadata:
        return None
    return MessageToDict(metadata.filter_metadata[METADATA_NAMESPACE])


def string_field(metadata: Metadata, key: str) -> str | None:
    """One string value of our namespace, without converting the whole Struct."""
    if METADATA_NAMESPACE not in metadata.filter_metadata:
        return None
    fields = metadata.filter_metadata[METADATA_NAMESPACE].fields
    if key not in fields:
        return None
    value = fields[key]
    return value.string_value if value.WhichOneof("kind") == "string_value" else None


def role(metadata: Metadata) -> str | None:
    return string_field(metadata, MetadataKey.ROLE)
