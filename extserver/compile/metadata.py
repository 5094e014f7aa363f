"""Our metadata on generated clusters and routes: one namespace, read back to find what we own."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from envoy.config.core.v3.base_pb2 import Metadata
from google.protobuf.json_format import MessageToDict
from google.protobuf.struct_pb2 import Struct

from api.contract import METADATA_NAMESPACE, MetadataKey


def set_ours(metadata: Metadata, values: Mapping[str, Any]) -> None:
    """Replace our namespace in `metadata` with `values` (other namespaces, e.g. EG's, stay)."""
    struct = Struct()
    struct.update(dict(values))
    metadata.filter_metadata[METADATA_NAMESPACE].CopyFrom(struct)


def ours(metadata: Metadata) -> dict[str, Any] | None:
    """Our namespace as a dict, or None if the resource is not one we generated or marked."""
    if METADATA_NAMESPACE not in metadata.filter_metadata:
        return None
    return MessageToDict(metadata.filter_metadata[METADATA_NAMESPACE])


def role(metadata: Metadata) -> str | None:
    values = ours(metadata)
    if values is None:
        return None
    value = values.get(MetadataKey.ROLE)
    return value if isinstance(value, str) else None
