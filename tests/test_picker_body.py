"""Request body parsing and the in-place `model` rewrite."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from picker.body import ApiKind, api_kind, parse_body, rewrite_model
from picker.errors import PickerError


def test_completion_prompt_and_flags() -> None:
    body = b'{"model": "lora-request", "prompt": "Write as if you were a critic", "max_tokens": 10}'
    parsed = parse_body(body, "/v1/completions")
    assert parsed.model == "lora-request"
    assert parsed.prompt == "Write as if you were a critic"
    assert parsed.api is ApiKind.COMPLETIONS
    assert not parsed.stream


def test_completion_prompt_list() -> None:
    parsed = parse_body(b'{"model": "m", "prompt": ["a", "b"]}', "/v1/completions")
    assert parsed.prompt == "a\nb"


def test_chat_string_and_array_content() -> None:
    body = {
        "model": "tiny",
        "messages": [
            {"role": "system", "content": "be brief"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "hello"}, {"type": "image_url", "image_url": {}}],
            },
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    parsed = parse_body(json.dumps(body).encode(), "/v1/chat/completions?x=1")
    assert parsed.api is ApiKind.CHAT_COMPLETIONS
    assert parsed.prompt == "system\nbe brief\nuser\nhello\n"
    assert parsed.stream and parsed.include_usage


def test_api_kind_from_path() -> None:
    assert api_kind("/v1/chat/completions") is ApiKind.CHAT_COMPLETIONS
    assert api_kind("/v1/completions/") is ApiKind.COMPLETIONS
    assert api_kind("/v1/embeddings") is ApiKind.OTHER


@pytest.mark.parametrize(
    ("body", "fragment", "param"),
    [
        (b"", "empty", None),
        (b"not json", "not valid JSON", None),
        (b'{"model": "m"', "not valid JSON", None),
        (b"[1, 2]", "JSON object", None),
        (b'{"prompt": "x"}', "'model' field is required", "model"),
        (b'{"model": 7, "prompt": "x"}', "non-empty string", "model"),
        (b'{"model": null}', "required", "model"),
        (b'{"model": ""}', "non-empty string", "model"),
    ],
)
def test_bad_bodies_are_400(body: bytes, fragment: str, param: str | None) -> None:
    with pytest.raises(PickerError) as info:
        parse_body(body)
    assert info.value.status == 400
    assert fragment in info.value.message
    assert info.value.param == param
    error = orjson.loads(info.value.body())["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == 400


def test_oversized_body_is_400() -> None:
    body = b'{"model": "m", "prompt": "' + b"x" * 100 + b'"}'
    with pytest.raises(PickerError) as info:
        parse_body(body, max_bytes=50)
    assert info.value.status == 400
    assert "exceeds the limit of 50 bytes" in info.value.message


def test_rewrite_changes_only_the_model_value() -> None:
    body = b'{ "temperature": 0.50,\n  "model" :"lora-request", "prompt": "model", "extra": {"model": "x"}}'
    out = rewrite_model(body, "meta-llama/Llama-3.1-8B")
    assert out == body.replace(b'"lora-request"', b'"meta-llama/Llama-3.1-8B"')
    assert orjson.loads(out)["extra"] == {"model": "x"}


def test_rewrite_handles_escapes_and_duplicates() -> None:
    body = b'{"a": "q\\"uote\\\\", "model": "first", "model": "sec\\"ond", "z": [1, {"model": 2}]}'
    assert parse_body(body).model == 'sec"ond'
    out = rewrite_model(body, 'new"one')
    assert orjson.loads(out)["model"] == 'new"one'
    assert out.startswith(b'{"a": "q\\"uote\\\\", "model": "first", "model": "new\\"one"')


def test_rewrite_finds_an_escaped_top_level_key_not_a_nested_literal_one() -> None:
    body = b'{"extra": {"model": "alias"}, "mod\\u0065l": "alias"}'
    assert parse_body(body).model == "alias"
    out = orjson.loads(rewrite_model(body, "base"))
    assert out == {"extra": {"model": "alias"}, "model": "base"}


def test_rewrite_model_with_slash_and_unicode() -> None:
    body = '{"model":"m","prompt":"héllo"}'.encode()
    out = rewrite_model(body, "org/модель")
    doc = orjson.loads(out)
    assert doc == {"model": "org/модель", "prompt": "héllo"}


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=8).filter(lambda k: k != "model"),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=10),
            lambda inner: (
                st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
            ),
            max_leaves=8,
        ),
        max_size=5,
    ),
    st.text(min_size=1, max_size=20),
    st.text(min_size=1, max_size=20),
)
def test_rewrite_property(other: dict[str, object], model: str, target: str) -> None:
    doc = {**other, "model": model}
    for ascii_only in (False, True):  # True: \\u escapes everywhere (the general path)
        raw = json.dumps(doc, ensure_ascii=ascii_only).encode()
        out = json.loads(rewrite_model(raw, target))  # json: exact for integers beyond 64 bits
        assert out == {**doc, "model": target}
