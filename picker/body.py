"""Request body of an OpenAI-style inference call: parse what routing needs, rewrite `model` in place."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from picker.errors import PickerError, bad_request


class ApiKind(enum.StrEnum):
    COMPLETIONS = "completions"
    CHAT_COMPLETIONS = "chat_completions"
    OTHER = "other"


@dataclass(frozen=True)
class ParsedBody:
    """What the picker reads from a request body."""

    model: str
    stream: bool
    prompt: str  # text for prefix affinity: the completion prompt, or chat messages flattened
    api: ApiKind
    include_usage: bool = False  # stream_options.include_usage: usage arrives in the last SSE chunk


def api_kind(path: str) -> ApiKind:
    """API type from the request path (query string ignored)."""
    bare = path.split("?", 1)[0].rstrip("/")
    if bare.endswith("/chat/completions"):
        return ApiKind.CHAT_COMPLETIONS
    if bare.endswith("/completions"):
        return ApiKind.COMPLETIONS
    return ApiKind.OTHER


def parse_body(raw: bytes, path: str = "/v1/completions", max_bytes: int | None = None) -> ParsedBody:
    """Parse and check a request body; raises PickerError(400) with a client-facing message."""
    if max_bytes is not None and len(raw) > max_bytes:
        raise bad_request(f"request body of {len(raw)} bytes exceeds the limit of {max_bytes} bytes")
    if not raw.strip():
        raise bad_request("request body is empty; expected a JSON object with a 'model' field")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"request body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise bad_request("request body must be a JSON object")
    model = doc.get("model")
    if model is None:
        raise bad_request("the 'model' field is required", "model")
    if not isinstance(model, str) or not model:
        raise bad_request("the 'model' field must be a non-empty string", "model")
    stream = doc.get("stream") is True
    options = doc.get("stream_options")
    include_usage = isinstance(options, Mapping) and options.get("include_usage") is True
    kind = api_kind(path)
    if kind is ApiKind.OTHER and "messages" in doc:
        kind = ApiKind.CHAT_COMPLETIONS
    elif kind is ApiKind.OTHER and "prompt" in doc:
        kind = ApiKind.COMPLETIONS
    prompt = (
        chat_prompt(doc.get("messages"))
        if kind is ApiKind.CHAT_COMPLETIONS
        else completion_prompt(doc.get("prompt"))
    )
    return ParsedBody(model=model, stream=stream, prompt=prompt, api=kind, include_usage=include_usage)


def completion_prompt(prompt: Any) -> str:
    """Prompt text: a string, or a list of strings joined; token-id lists become their decimal text."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):
        return "\n".join(completion_prompt(p) if not isinstance(p, int) else str(p) for p in prompt)
    return ""


def chat_prompt(messages: Any) -> str:
    """Messages flattened to `role\\ncontent\\n` blocks; array content contributes its text parts."""
    if not isinstance(messages, list):
        return ""
    parts: list[str] = []
    for message in messages:
        if not isinstance(message, Mapping):
            continue
        role = message.get("role")
        parts.append(f"{role if isinstance(role, str) else ''}\n{_content_text(message.get('content'))}\n")
    return "".join(parts)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [
            part["text"]
            for part in content
            if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        ]
        return "\n".join(texts)
    return ""


def rewrite_model(raw: bytes, target: str) -> bytes:
    """The body with its top-level `model` string replaced by `target`, every other byte unchanged.

    The caller has parsed `raw` already (so it is a valid JSON object with a string `model`).
    Splicing keeps key order, number formatting and whitespace exactly as the client sent them.
    """
    span = _sole_model_span(raw)
    if span is None:
        span = _top_level_string_span(raw, b"model")
    if span is None:  # cannot happen for a body parse_body accepted; re-serialize as a last resort
        doc = orjson.loads(raw)
        doc["model"] = target
        return orjson.dumps(doc)
    start, end = span
    return raw[:start] + orjson.dumps(target) + raw[end:]


_WHITESPACE = b" \t\r\n"


def _sole_model_span(raw: bytes) -> tuple[int, int] | None:
    """Fast path: the value span when `"model"` occurs once and no `\\u` escape could spell another key.

    A `"model"` token cannot lie inside a JSON string (its quotes would be escaped), and without
    `\\u` escapes the top-level key (known to exist) is spelled literally: the one occurrence is it.
    """
    if b"\\u" in raw or raw.count(b'"model"') != 1:
        return None
    j = _skip_ws(raw, raw.index(b'"model"') + 7)
    if j >= len(raw) or raw[j] != ord(":"):
        return None
    j = _skip_ws(raw, j + 1)
    if j >= len(raw) or raw[j] != ord('"'):
        return None
    return j, _string_end(raw, j)


def _top_level_string_span(raw: bytes, key: bytes) -> tuple[int, int] | None:
    """Byte span of the string value of the LAST top-level `key` (JSON parsers keep the last duplicate)."""
    found: tuple[int, int] | None = None
    n = len(raw)
    i = _skip_ws(raw, 0)
    if i >= n or raw[i] != ord("{"):
        return None
    i += 1
    depth = 1
    expect_key = True
    while i < n:
        c = raw[i]
        if c == ord('"'):
            end = _string_end(raw, i)
            if depth == 1 and expect_key:
                name = orjson.loads(raw[i:end])
                j = _skip_ws(raw, end)
                if j < n and raw[j] == ord(":"):
                    j = _skip_ws(raw, j + 1)
                    if name == key.decode() and j < n and raw[j] == ord('"'):
                        value_end = _string_end(raw, j)
                        found = (j, value_end)
                        i = value_end
                        expect_key = False
                        continue
                    i = j
                    expect_key = False
                    continue
            i = end
            continue
        if c in (ord("{"), ord("[")):
            depth += 1
        elif c in (ord("}"), ord("]")):
            depth -= 1
            if depth == 0:
                break
        elif c == ord(",") and depth == 1:
            expect_key = True
        i += 1
    return found


def _skip_ws(raw: bytes, i: int) -> int:
    while i < len(raw) and raw[i] in _WHITESPACE:
        i += 1
    return i


def _string_end(raw: bytes, start: int) -> int:
    """Index just past the closing quote of the JSON string opening at `start`."""
    i = start + 1
    while True:
        quote = raw.index(b'"', i)
        backslashes = 0
        k = quote - 1
        while raw[k] == ord("\\"):
            backslashes += 1
            k -= 1
        if backslashes % 2 == 0:
            return quote + 1
        i = quote + 1


__all__ = ["ApiKind", "ParsedBody", "PickerError", "api_kind", "parse_body", "rewrite_model"]
