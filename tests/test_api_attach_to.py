"""api/attach_to.py: the attach-to annotation, its defaults and its errors."""

from __future__ import annotations

import pytest

from api.attach_to import AttachToError, parse_attach_to, render_attach_to
from api.model import AttachTo

P = "metadata.annotations[inference.networking.x-k8s.io/attach-to]"


def test_seed_form_defaults_namespace_to_the_pool() -> None:
    assert parse_attach_to("name: inference-gateway\nport: 8081\n", "team-a") == AttachTo(
        "team-a", "inference-gateway", 8081
    )


def test_explicit_namespace_and_numeric_looking_name() -> None:
    assert parse_attach_to("name: 010\nport: '80'\nnamespace: gw-ns", "x") == AttachTo("gw-ns", "010", 80)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("name: gw\nport: 0", f"{P}.port: must be between 1 and 65535"),
        ("name: gw\nport: 65536", f"{P}.port: must be between 1 and 65535"),
        ("name: gw\nport: http", f"{P}.port: must be an integer, got string"),
        ("name: gw", f"{P}.port: required"),
        ("port: 80", f"{P}.name: required"),
        ("name: Gw_1\nport: 80", f"{P}.name: 'Gw_1' does not match pattern"),
        ("name: gw\nport: 80\nnamespace: A", f"{P}.namespace: 'A' does not match pattern"),
        ("name: gw\nport: 80\nlistener: x", f"{P}.listener: unknown field"),
        ("- gw", f"{P}: must be a YAML mapping"),
        ("name: [gw\nport: 80", f"{P}: not valid YAML"),
    ],
)
def test_errors_name_the_field(text: str, error: str) -> None:
    with pytest.raises(AttachToError) as caught:
        parse_attach_to(text, "default")
    assert any(e.startswith(error) for e in caught.value.errors), caught.value.errors
    assert isinstance(caught.value, ValueError)


def test_all_errors_reported_together() -> None:
    with pytest.raises(AttachToError) as caught:
        parse_attach_to("port: 0", "default")
    assert len(caught.value.errors) == 2


@pytest.mark.parametrize("attach", [AttachTo("default", "0", 1), AttachTo("other", "gw.example", 65535)])
def test_render_round_trips(attach: AttachTo) -> None:
    assert parse_attach_to(render_attach_to(attach, "default"), "default") == attach
