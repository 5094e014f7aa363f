"""The canary annotations (api/canary.py): sticky key and pins, and how invalid ones are reported."""

from __future__ import annotations

import pytest

from api.canary import (
    ANNOTATION_CANARY_PINS,
    ANNOTATION_STICKY_KEY,
    CANARY_PINS_PATH,
    STICKY_KEY_PATH,
    Pin,
    StickyKey,
    StickySource,
    canary_annotations,
    check_pin_targets,
    parse_canary,
)
from api.model import ObjectMeta


def _meta(**annotations: str) -> ObjectMeta:
    return ObjectMeta("default", "m", annotations=tuple(sorted(annotations.items())))


def _with(sticky: str | None = None, pins: str | None = None) -> ObjectMeta:
    values = {}
    if sticky is not None:
        values[ANNOTATION_STICKY_KEY] = sticky
    if pins is not None:
        values[ANNOTATION_CANARY_PINS] = pins
    return _meta(**values)


def test_no_annotations_declare_nothing() -> None:
    canary = parse_canary(_meta(other="x"))
    assert (canary.sticky, canary.pins, canary.errors) == (None, (), ())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("header:x-session-id", StickyKey(StickySource.HEADER, "x-session-id")),
        ("header:X-User-ID", StickyKey(StickySource.HEADER, "x-user-id")),  # header names are lower-cased
        (" cookie: session ", StickyKey(StickySource.COOKIE, "session")),
        ("cookie:Session_ID", StickyKey(StickySource.COOKIE, "Session_ID")),  # cookie names keep their case
    ],
)
def test_sticky_key(text: str, expected: StickyKey) -> None:
    canary = parse_canary(_with(sticky=text))
    assert canary.errors == ()
    assert canary.sticky == expected
    assert str(expected) == f"{expected.source.value}:{expected.name}"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("x-session-id", "must be 'header:<name>' or 'cookie:<name>'"),
        ("query:user", "must be 'header:<name>' or 'cookie:<name>'"),
        ("header:", "must not be empty"),
        ("header:bad name", "does not match pattern"),
        ("header::authority", "does not match pattern"),
        ("header:x-gateway-destination-endpoint", "is reserved"),
    ],
)
def test_invalid_sticky_key_is_left_out_with_its_path(text: str, problem: str) -> None:
    canary = parse_canary(_with(sticky=text))
    assert canary.sticky is None
    (error,) = canary.errors
    assert error.startswith(f"{STICKY_KEY_PATH}: ")
    assert problem in error


def test_pins() -> None:
    text = """
- {header: x-canary, value: always, target: sql-lora}
- header: X-User-Group
  value: 1
  target: tweet-summary
"""
    canary = parse_canary(_with(pins=text))
    assert canary.errors == ()
    assert canary.pins == (
        Pin("x-canary", "always", "sql-lora"),
        Pin("x-user-group", "1", "tweet-summary"),  # the scalar stays the string written
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("- [unclosed", f"{CANARY_PINS_PATH}: not valid YAML (line 1)"),
        ("header: x", f"{CANARY_PINS_PATH}: must be a non-empty YAML list"),
        ("[]", f"{CANARY_PINS_PATH}: must be a non-empty YAML list"),
        ("- just-a-string", f"{CANARY_PINS_PATH}[0]: must be a mapping"),
        ("- {value: a, target: t}", f"{CANARY_PINS_PATH}[0].header: required"),
        ("- {header: h, target: t}", f"{CANARY_PINS_PATH}[0].value: required"),
        ("- {header: h, value: '', target: t}", f"{CANARY_PINS_PATH}[0].value: must not be empty"),
        ("- {header: h, value: a}", f"{CANARY_PINS_PATH}[0].target: required"),
        ("- {header: h, value: a, target: t, match: prefix}", f"{CANARY_PINS_PATH}[0].match: unknown field"),
        ("- {header: 'a b', value: a, target: t}", f"{CANARY_PINS_PATH}[0].header: 'a b' does not match"),
        ("- {header: x-gateway-x, value: a, target: t}", f"{CANARY_PINS_PATH}[0].header: header 'x-gateway"),
        (
            "- {header: h, value: a, target: t}\n- {header: H, value: a, target: u}",
            f"{CANARY_PINS_PATH}[1]: pins header 'h' value 'a' again (first at [0])",
        ),
        ("\n".join([f"- {{header: h, value: v{i}, target: t}}" for i in range(17)]), "at most 16 pins"),
    ],
)
def test_invalid_pins_are_all_left_out(text: str, problem: str) -> None:
    canary = parse_canary(_with(pins=text))
    assert canary.pins == ()
    assert any(e.startswith(problem) or problem in e for e in canary.errors), canary.errors


def test_one_invalid_annotation_keeps_the_other() -> None:
    canary = parse_canary(_with(sticky="nonsense", pins="- {header: x-canary, value: always, target: b}"))
    assert canary.sticky is None
    assert canary.pins == (Pin("x-canary", "always", "b"),)
    assert len(canary.errors) == 1
    canary = parse_canary(_with(sticky="cookie:session", pins="- oops"))
    assert canary.sticky == StickyKey(StickySource.COOKIE, "session")
    assert canary.pins == ()


def test_pin_targets_must_be_target_models() -> None:
    pins = (Pin("x-canary", "always", "b"), Pin("x-canary", "never", "c"))
    assert check_pin_targets(pins, ["a", "b"]) == [
        f"{CANARY_PINS_PATH}[1].target: 'c' is not one of the target models (a, b)"
    ]
    assert check_pin_targets(pins, ["a", "b", "c"]) == []


def test_canary_annotations_lists_only_ours() -> None:
    meta = _meta(**{ANNOTATION_STICKY_KEY: "header:x", "other": "y"})
    assert canary_annotations(meta) == ((ANNOTATION_STICKY_KEY, "header:x"),)
