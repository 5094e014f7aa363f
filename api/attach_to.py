"""The `inference.networking.x-k8s.io/attach-to` annotation: a YAML block naming a Gateway listener."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from api.contract import ANNOTATION_ATTACH_TO
from api.model import AttachTo
from api.validation import (
    DNS_SUBDOMAIN_PATTERN,
    NAMESPACE_MAX,
    NAMESPACE_PATTERN,
    OBJECT_NAME_MAX,
    PORT_MAX,
    PORT_MIN,
    FieldErrors,
)

ATTACH_TO_PATH = f"metadata.annotations[{ANNOTATION_ATTACH_TO}]"
_KNOWN_KEYS = ("name", "namespace", "port")


class AttachToError(ValueError):
    """The annotation is invalid; `errors` lists each problem with its field path."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(self.errors))


def parse_attach_to(text: str, pool_namespace: str) -> AttachTo:
    """Parse the annotation text; the Gateway namespace defaults to the pool's own namespace."""
    errors = FieldErrors()
    try:
        # BaseLoader keeps every scalar a string, so `name: 0` or `name: 010` stay the names written.
        doc: Any = yaml.load(text, Loader=yaml.BaseLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise AttachToError([f"{ATTACH_TO_PATH}: not valid YAML{where}"]) from None
    if not isinstance(doc, Mapping):
        raise AttachToError(
            [f"{ATTACH_TO_PATH}: must be a YAML mapping with name, port and optional namespace"]
        )
    errors.unknown_fields(doc, _KNOWN_KEYS, ATTACH_TO_PATH)
    name = errors.string(
        doc,
        "name",
        f"{ATTACH_TO_PATH}.name",
        required=True,
        min_len=1,
        max_len=OBJECT_NAME_MAX,
        pattern=DNS_SUBDOMAIN_PATTERN,
    )
    namespace = errors.string(
        doc,
        "namespace",
        f"{ATTACH_TO_PATH}.namespace",
        min_len=1,
        max_len=NAMESPACE_MAX,
        pattern=NAMESPACE_PATTERN,
    )
    if isinstance(doc.get("port"), str) and doc["port"].strip().isdigit():
        doc = {**doc, "port": int(doc["port"])}
    port = errors.integer(
        doc, "port", f"{ATTACH_TO_PATH}.port", required=True, minimum=PORT_MIN, maximum=PORT_MAX
    )
    if errors or name is None or port is None:
        raise AttachToError(errors.items)
    return AttachTo(gateway_namespace=namespace or pool_namespace, gateway_name=name, port=port)


def render_attach_to(attach_to: AttachTo, pool_namespace: str) -> str:
    """The annotation text for `attach_to`; namespace is written only when it differs from the pool's."""
    doc: dict[str, Any] = {"name": attach_to.gateway_name, "port": attach_to.port}
    if attach_to.gateway_namespace != pool_namespace:
        doc["namespace"] = attach_to.gateway_namespace
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)
