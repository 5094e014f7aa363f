"""Canary annotations on an InferenceModel (or any object naming weighted targets): sticky key and pins.

The CRD schema is upstream's, so these live in annotations of our domain:

- `extension.inference-gateway.io/sticky-key`: `header:<name>` or `cookie:<name>`. Envoy hashes that value
  to choose the weighted target, so one key always gets one target; requests without it draw at random.
- `extension.inference-gateway.io/canary-pins`: a YAML list of `{header, value, target}`. A request whose
  header equals `value` (exact) goes to `target`, whatever the weights say.

Parsing never raises: an invalid annotation is reported in `Canary.errors` and left out (the object keeps
its plain weighted split), the other annotation still applies.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from api.contract import CLIENT_HEADER_PREFIX
from api.model import ObjectMeta
from api.validation import FieldErrors

ANNOTATION_DOMAIN = "extension.inference-gateway.io/"
ANNOTATION_STICKY_KEY = f"{ANNOTATION_DOMAIN}sticky-key"
ANNOTATION_CANARY_PINS = f"{ANNOTATION_DOMAIN}canary-pins"
CANARY_ANNOTATIONS = (ANNOTATION_STICKY_KEY, ANNOTATION_CANARY_PINS)
STICKY_KEY_PATH = f"metadata.annotations[{ANNOTATION_STICKY_KEY}]"
CANARY_PINS_PATH = f"metadata.annotations[{ANNOTATION_CANARY_PINS}]"

# Keys of our route metadata (METADATA_NAMESPACE) on sticky and pinned model routes, for config_dump.
METADATA_STICKY_KEY = "sticky_key"  # "header:<name>" / "cookie:<name>" on a sticky weighted route
METADATA_PIN = "pin"  # {header, value, target} on a pin route

# RFC 9110 token: what a header field name (and an RFC 6265 cookie name) may be made of.
TOKEN_PATTERN = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
NAME_MAX = 256
PIN_VALUE_MAX = 1024
PINS_MAX = 16
_PIN_KEYS = ("header", "value", "target")


class StickySource(enum.StrEnum):
    HEADER = "header"
    COOKIE = "cookie"


@dataclass(frozen=True)
class StickyKey:
    """Where the request's stickiness key is read from; header names are lower-case."""

    source: StickySource
    name: str

    def __str__(self) -> str:
        return f"{self.source.value}:{self.name}"


@dataclass(frozen=True)
class Pin:
    """Requests whose `header` (lower-case) equals `value` go to `target`."""

    header: str
    value: str
    target: str


@dataclass(frozen=True)
class Canary:
    """What an object's canary annotations declare; `errors` are `<field path>: <problem>` lines."""

    sticky: StickyKey | None = None
    pins: tuple[Pin, ...] = ()
    errors: tuple[str, ...] = ()


def canary_annotations(meta: ObjectMeta) -> tuple[tuple[str, str], ...]:
    """The canary annotations `meta` carries (they change what is compiled without a new generation)."""
    return tuple((k, v) for k, v in meta.annotations if k in CANARY_ANNOTATIONS)


def parse_canary(meta: ObjectMeta) -> Canary:
    """Both annotations of `meta`; an invalid one is left out and explained in `errors`."""
    annotations = dict(meta.annotations)
    errors = FieldErrors()
    sticky = None
    if ANNOTATION_STICKY_KEY in annotations:
        sticky = _sticky_key(annotations[ANNOTATION_STICKY_KEY], errors)
    pins: tuple[Pin, ...] = ()
    if ANNOTATION_CANARY_PINS in annotations:
        pin_errors = FieldErrors()
        pins = _pins(annotations[ANNOTATION_CANARY_PINS], pin_errors)
        if pin_errors:
            pins = ()
            errors.items.extend(pin_errors.items)
    return Canary(sticky=sticky, pins=pins, errors=tuple(errors.items))


def check_pin_targets(pins: Sequence[Pin], targets: Iterable[str]) -> list[str]:
    """Errors for pins naming a target that is not one of `targets` (the object's target models)."""
    known = list(dict.fromkeys(targets))
    return [
        f"{CANARY_PINS_PATH}[{i}].target: {pin.target!r} is not one of the target models ({', '.join(known)})"
        for i, pin in enumerate(pins)
        if pin.target not in known
    ]


def _sticky_key(text: str, errors: FieldErrors) -> StickyKey | None:
    source, sep, name = text.strip().partition(":")
    if not sep or source not in tuple(StickySource):
        errors.add(STICKY_KEY_PATH, f"must be 'header:<name>' or 'cookie:<name>', got {text!r}")
        return None
    kind = StickySource(source)
    checked = _name(name.strip(), STICKY_KEY_PATH, errors, header=kind is StickySource.HEADER)
    return None if checked is None else StickyKey(kind, checked)


def _name(name: str, path: str, errors: FieldErrors, header: bool) -> str | None:
    """A header (lower-cased) or cookie name: an HTTP token; x-gateway-* headers are the gateway's own."""
    checked = errors.check_string(name, path, min_len=1, max_len=NAME_MAX, pattern=TOKEN_PATTERN)
    if checked is None or not header:
        return checked
    lowered = checked.lower()
    if lowered.startswith(CLIENT_HEADER_PREFIX):
        # The gateway strips or sets these before routing, so a client's value never reaches the route.
        errors.add(path, f"header {lowered!r} is reserved ({CLIENT_HEADER_PREFIX}* belongs to the gateway)")
        return None
    return lowered


def _pins(text: str, errors: FieldErrors) -> tuple[Pin, ...]:
    try:
        # BaseLoader keeps scalars as written: `value: 1` or `value: yes` stay the strings "1" and "yes".
        doc: Any = yaml.load(text, Loader=yaml.BaseLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        errors.add(CANARY_PINS_PATH, f"not valid YAML{where}")
        return ()
    if not isinstance(doc, list) or not doc:
        errors.add(CANARY_PINS_PATH, "must be a non-empty YAML list of {header, value, target}")
        return ()
    if len(doc) > PINS_MAX:
        errors.add(CANARY_PINS_PATH, f"at most {PINS_MAX} pins, got {len(doc)}")
        return ()
    pins: list[Pin] = []
    seen: dict[tuple[str, str], int] = {}
    for i, item in enumerate(doc):
        path = f"{CANARY_PINS_PATH}[{i}]"
        if not isinstance(item, Mapping):
            errors.add(path, "must be a mapping with header, value and target")
            continue
        pin = _pin(item, path, errors)
        if pin is None:
            continue
        first = seen.setdefault((pin.header, pin.value), i)
        if first != i:
            errors.add(path, f"pins header {pin.header!r} value {pin.value!r} again (first at [{first}])")
            continue
        pins.append(pin)
    return tuple(pins)


def _pin(item: Mapping[str, Any], path: str, errors: FieldErrors) -> Pin | None:
    errors.unknown_fields(item, _PIN_KEYS, path)
    header_text = errors.string(item, "header", f"{path}.header", required=True)
    header = None if header_text is None else _name(header_text, f"{path}.header", errors, header=True)
    value = errors.string(item, "value", f"{path}.value", required=True, min_len=1, max_len=PIN_VALUE_MAX)
    if value is not None and any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        errors.add(f"{path}.value", "must not contain control characters")
        value = None
    target = errors.string(item, "target", f"{path}.target", required=True, min_len=1, max_len=NAME_MAX)
    if header is None or value is None or target is None:
        return None
    return Pin(header=header, value=value, target=target)
