"""Request mirrors: Gateway API's RequestMirror filter, on an HTTPRoute rule or as our annotation."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from api.contract import ANNOTATION_MIRROR
from api.model import GROUP_GA, GROUP_X, ObjectMeta
from api.parse import KIND_POOL

MIRROR_PATH = f"metadata.annotations[{ANNOTATION_MIRROR}]"


@dataclass(frozen=True)
class MirrorSpec:
    """One mirror: where copies go and how many. `problem` is set (and nothing mirrored) when invalid."""

    kind: str  # KIND_POOL or "Service"
    namespace: str
    name: str
    percent: float  # 0..100
    port: int | None = None  # Services only
    filter_index: int = -1  # the RequestMirror filter's index in its HTTPRoute rule; -1 for annotations
    declared_by: str = ""  # where it was written, for status messages
    problem: str | None = None
    invalid_percent: bool = False  # the problem is the percent or fraction (its own status reason)

    @property
    def is_pool(self) -> bool:
        return self.kind == KIND_POOL


def parse_request_mirror(
    mirror: Any, path: str, namespace: str, filter_index: int = -1, declared_by: str = ""
) -> MirrorSpec:
    """A RequestMirror filter body (`backendRef`, `percent` or `fraction`) -> MirrorSpec (pure)."""

    def invalid(message: str, kind: str = "", name: str = "") -> MirrorSpec:
        return MirrorSpec(kind, namespace, name, 0.0, None, filter_index, declared_by, f"{path}{message}")

    if not isinstance(mirror, Mapping):
        return invalid(": must be a mapping with backendRef and optional percent or fraction")
    ref = mirror.get("backendRef")
    if not isinstance(ref, Mapping) or not isinstance(ref.get("name"), str) or not ref.get("name"):
        return invalid(".backendRef.name: required")
    group, kind = str(ref.get("group") or ""), str(ref.get("kind") or "Service")
    name = str(ref["name"])
    target_ns = str(ref.get("namespace") or namespace)
    if kind == KIND_POOL and group in (GROUP_GA, GROUP_X):
        port = None
    elif kind == "Service" and group in ("", "core"):
        port = _int(ref.get("port"))
        if port is None or not 1 <= port <= 65535:
            return invalid(".backendRef.port: a Service mirror needs a port in 1..65535", kind, name)
    else:
        return invalid(f".backendRef: {group or 'core'}/{kind} cannot be mirrored to", kind, name)
    percent, problem = _percent(mirror, path)
    if problem is not None:
        return MirrorSpec(kind, target_ns, name, 0.0, port, filter_index, declared_by, problem, True)
    return MirrorSpec(kind, target_ns, name, percent, port, filter_index, declared_by)


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _percent(mirror: Mapping[str, Any], path: str) -> tuple[float, str | None]:
    """Gateway API: `percent` (0..100) or `fraction` (numerator <= denominator, denominator default
    100, > 0); neither means every request."""
    if "percent" in mirror and "fraction" in mirror:
        return 0.0, f"{path}: only one of percent and fraction may be set"
    if "percent" in mirror:
        percent = _int(mirror["percent"])
        if percent is None or not 0 <= percent <= 100:
            return 0.0, f"{path}.percent: must be an integer in 0..100, got {mirror['percent']!r}"
        return float(percent), None
    if "fraction" in mirror:
        fraction = mirror["fraction"]
        if not isinstance(fraction, Mapping):
            return 0.0, f"{path}.fraction: must be a mapping with numerator and optional denominator"
        numerator = _int(fraction.get("numerator"))
        denominator = _int(fraction.get("denominator", 100))
        if numerator is None or numerator < 0:
            return 0.0, f"{path}.fraction.numerator: must be an integer >= 0"
        if denominator is None or denominator <= 0:
            return 0.0, f"{path}.fraction.denominator: must be an integer > 0"
        if numerator > denominator:
            return 0.0, f"{path}.fraction: numerator must not exceed denominator"
        return 100.0 * numerator / denominator, None
    return 100.0, None


def mirror_annotation(meta: ObjectMeta, kind: str) -> MirrorSpec | None:
    """The mirror an InferencePool or InferenceModel declares in its annotation (attach-to setups)."""
    text = dict(meta.annotations).get(ANNOTATION_MIRROR)
    if text is None:
        return None
    declared_by = f"{kind} {meta.namespace}/{meta.name}"
    try:
        doc: Any = yaml.safe_load(text)
    except yaml.YAMLError:
        return MirrorSpec(
            "", meta.namespace, "", 0.0, None, -1, declared_by, f"{MIRROR_PATH}: not valid YAML"
        )
    return parse_request_mirror(doc, MIRROR_PATH, meta.namespace, -1, declared_by)


def rule_mirrors(
    namespace: str, route_name: str, rule_index: int, rule: Mapping[str, Any]
) -> tuple[MirrorSpec, ...]:
    """The RequestMirror filters of one HTTPRoute rule, in filter order."""
    declared_by = f"HTTPRoute {namespace}/{route_name}"
    out = []
    for index, flt in enumerate(rule.get("filters") or []):
        if isinstance(flt, Mapping) and flt.get("type") == "RequestMirror":
            path = f"spec.rules[{rule_index}].filters[{index}].requestMirror"
            out.append(parse_request_mirror(flt.get("requestMirror"), path, namespace, index, declared_by))
    return tuple(out)
