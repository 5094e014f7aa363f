"""Token usage from a response body streamed through the picker: one JSON document, or SSE `data:` lines."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

MAX_JSON_BYTES = 4 * 1024 * 1024  # larger non-streamed answers are not parsed for usage


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class UsageReader:
    """Feed response body chunks in order; `usage` holds the last usage seen.

    JSON vs SSE comes from the content type when known, else from the body's first byte (a JSON
    answer starts with `{`, an SSE stream with `data:`, `event:`, `id:` or a `:` comment): with
    response headers skipped the picker only sees the body.
    """

    def __init__(self, content_type: str = "") -> None:
        self.sse: bool | None = ("text/event-stream" in content_type.lower()) if content_type else None
        self._buffer = bytearray()
        self._overflow = False
        self.usage: Usage | None = None

    def feed(self, chunk: bytes, end_of_stream: bool = False) -> None:
        if self.sse is None:
            head = chunk.lstrip()
            if not head:
                return  # nothing told yet (empty or whitespace chunk): an empty body has no usage
            self.sse = head[:1] not in (b"{", b"[")
        if self.sse:
            self._feed_sse(chunk, end_of_stream)
            return
        if end_of_stream and not self._buffer:  # the whole answer in one chunk: no copy
            self._take(_loads(chunk))
            return
        if not self._overflow:
            if len(self._buffer) + len(chunk) > MAX_JSON_BYTES:
                self._overflow = True
                self._buffer.clear()
            else:
                self._buffer += chunk
        if end_of_stream and not self._overflow and self._buffer:
            self._take(_loads(bytes(self._buffer)))
            self._buffer.clear()

    def _feed_sse(self, chunk: bytes, end_of_stream: bool) -> None:
        # Only lines that mention usage are decoded; a chunk without one is scanned, not split.
        if self._buffer:
            self._buffer += chunk
            data = bytes(self._buffer)
        else:
            data = chunk
        cut = data.rfind(b"\n") + 1
        complete, rest = (data, b"") if end_of_stream else (data[:cut], data[cut:])
        if b'"usage"' in complete:
            for line in complete.split(b"\n"):
                self._sse_line(line)
        self._buffer = bytearray(rest)

    def _sse_line(self, line: bytes) -> None:
        line = line.strip()
        if not line.startswith(b"data:"):
            return
        data = line[5:].strip()
        if data and data != b"[DONE]" and b'"usage"' in data:
            self._take(_loads(data))

    def _take(self, doc: Any) -> None:
        if not isinstance(doc, Mapping):
            return
        usage = doc.get("usage")
        if not isinstance(usage, Mapping):
            return
        prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
        completion = usage.get("completion_tokens", usage.get("output_tokens"))
        self.usage = Usage(
            prompt if isinstance(prompt, int) else None, completion if isinstance(completion, int) else None
        )


def _loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
