"""OpenAI request validation and vLLM-shaped answers (bodies copied in shape from vLLM 0.32 captures)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any, Literal

SYSTEM_FINGERPRINT = "vllm-0.32.0-sim"
FILLER_WORDS = (
    " the",
    " model",
    " answers",
    " with",
    " simulated",
    " tokens",
    " for",
    " a",
    " gateway",
    " test",
    " and",
    " nothing",
    " here",
    " means",
    " anything",
    ".",
)

Kind = Literal["completion", "chat"]


class ApiError(Exception):
    """An error answered as vLLM does: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, err_type: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.err_type = err_type
        self.param = param

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.err_type,
                "param": self.param,
                "code": self.status,
            }
        }


def validation_error(field: str, err_kind: str, msg: str, value: Any) -> ApiError:
    """400 in the shape of vLLM's pydantic validation errors."""
    detail = {"type": err_kind, "loc": f"body.{field}", "msg": msg, "input": value}
    return ApiError(400, f"1 validation error:\n  {detail!r}", "Bad Request", f"body.{field}")


def not_found_model(model: str, valid: list[str]) -> ApiError:
    return ApiError(
        404,
        f"The model `{model}` does not exist. Valid aliases: {', '.join(valid)}.",
        "NotFoundError",
        "model",
    )


def internal_error(message: str = "simulated engine failure") -> ApiError:
    return ApiError(500, message, "InternalServerError")


@dataclass(frozen=True)
class InferenceRequest:
    """What the engine needs from a completions or chat request."""

    kind: Kind
    model: str | None  # None: the base model (vLLM's default when `model` is omitted)
    prompt: bytes  # the text whose tokens count as prompt and feed the prefix cache
    max_tokens: int | None
    stream: bool
    include_usage: bool


def _expect_number(body: dict[str, Any], name: str) -> None:
    value = body.get(name)
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
        return
    raise validation_error(name, "float_parsing", "Input should be a valid number", value)


def _expect_positive_int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise validation_error(name, "int_parsing", "Input should be a valid integer", value)
    if value < 1:
        raise validation_error(
            name, "greater_than_equal", "Input should be greater than or equal to 1", value
        )
    return value


def _chat_prompt(messages: Any) -> bytes:
    if not isinstance(messages, list) or not messages:
        if messages is None:
            raise validation_error("messages", "missing", "Field required", None)
        raise validation_error("messages", "list_type", "Input should be a non-empty list", messages)
    parts: list[str] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise validation_error(
                f"messages.{i}", "model_type", "Input should be a message with a role", message
            )
        content = message.get("content")
        if isinstance(content, list):
            texts = [p.get("text", "") for p in content if isinstance(p, dict)]
            content = "".join(t for t in texts if isinstance(t, str))
        elif content is None:
            content = ""
        elif not isinstance(content, str):
            raise validation_error(
                f"messages.{i}.content", "string_type", "Input should be a valid string", content
            )
        # A stand-in for the chat template: role markers around each message.
        parts.append(f"<|{message['role']}|>{content}\n")
    return "".join(parts).encode()


def _completion_prompt(prompt: Any) -> bytes:
    if isinstance(prompt, str):
        return prompt.encode()
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt):
            return "".join(prompt).encode()
        if all(isinstance(p, int) and not isinstance(p, bool) for p in prompt):
            # Token ids: keep one token (about 4 bytes) per id so counts and prefixes stay meaningful.
            return b"".join(int(p).to_bytes(4, "little", signed=True) for p in prompt)
    if prompt is None:
        raise validation_error("prompt", "missing", "Field required", None)
    raise validation_error("prompt", "string_type", "Input should be a valid string or list", prompt)


def parse_request(kind: Kind, raw: bytes) -> tuple[InferenceRequest, Any]:
    """Validate a request body; returns the request and the decoded JSON (for /sim/stats)."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"JSON decode error: {exc}", "Bad Request") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "Request body must be a JSON object", "Bad Request")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise validation_error("model", "string_type", "Input should be a valid string", model)
    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        _expect_number(body, name)
    max_tokens = _expect_positive_int(body, "max_tokens")
    if kind == "chat":
        max_tokens = _expect_positive_int(body, "max_completion_tokens") or max_tokens
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise validation_error("stream", "bool_parsing", "Input should be a valid boolean", stream)
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise validation_error("stream_options", "model_type", "Input should be an object", options)
    include_usage = bool(options and options.get("include_usage"))
    prompt = _chat_prompt(body.get("messages")) if kind == "chat" else _completion_prompt(body.get("prompt"))
    request = InferenceRequest(kind, model, prompt, max_tokens, bool(stream), include_usage)
    return request, body


def context_length_error(max_model_len: int, prompt_tokens: int, max_tokens: int) -> ApiError:
    total = prompt_tokens + max_tokens
    return ApiError(
        400,
        f"This model's maximum context length is {max_model_len} tokens. However, you requested {total} "
        f"tokens ({prompt_tokens} in the messages, {max_tokens} in the completion). "
        "Please reduce the length of the messages or completion.",
        "BadRequestError",
    )


def filler_text(start: int, end: int) -> str:
    """Generated text for tokens [start, end): one filler word per token."""
    n = len(FILLER_WORDS)
    return "".join(FILLER_WORDS[i % n] for i in range(start, end))


def new_request_id(kind: Kind) -> str:
    return ("chatcmpl-" if kind == "chat" else "cmpl-") + os.urandom(8).hex()


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
        "prompt_tokens_details": None,
        "completion_tokens_details": None,
    }


def completion_body(
    kind: Kind,
    request_id: str,
    model: str,
    text: str,
    finish_reason: str,
    prompt_tokens: int,
    completion_tokens: int,
) -> dict[str, Any]:
    """A non-streaming answer with the keys of vLLM's completion/chat captures."""
    created = int(time.time())
    if kind == "chat":
        choice: dict[str, Any] = {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": text,
                "refusal": None,
                "annotations": None,
                "audio": None,
                "function_call": None,
                "reasoning": None,
            },
            "logprobs": None,
            "finish_reason": finish_reason,
            "stop_reason": None,
            "token_ids": None,
            "routed_experts": None,
        }
        return {
            "id": request_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [choice],
            "service_tier": None,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "usage": _usage(prompt_tokens, completion_tokens),
            "prompt_logprobs": None,
            "prompt_token_ids": None,
            "prompt_text": None,
            "kv_transfer_params": None,
            "ec_transfer_params": None,
            "metrics": None,
        }
    choice = {
        "index": 0,
        "text": text,
        "logprobs": None,
        "finish_reason": finish_reason,
        "stop_reason": None,
        "token_ids": None,
        "prompt_logprobs": None,
        "prompt_token_ids": None,
        "routed_experts": None,
    }
    return {
        "id": request_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [choice],
        "service_tier": None,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "usage": _usage(prompt_tokens, completion_tokens),
        "kv_transfer_params": None,
        "ec_transfer_params": None,
        "metrics": None,
    }


class StreamChunks:
    """SSE `data:` lines of one streamed answer, shaped like vLLM's chunks."""

    def __init__(self, kind: Kind, request_id: str, model: str) -> None:
        self.kind = kind
        self.head = {
            "id": request_id,
            "object": "chat.completion.chunk" if kind == "chat" else "text_completion",
            "created": int(time.time()),
            "model": model,
        }

    @staticmethod
    def sse(payload: dict[str, Any]) -> bytes:
        return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"

    def role(self) -> bytes | None:
        """Chat streams open with an empty assistant delta before any token."""
        if self.kind != "chat":
            return None
        choice = {
            "index": 0,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": None,
        }
        return self.sse({**self.head, "choices": [choice], "prompt_token_ids": None, "prompt_text": None})

    def token(self, text: str, finish_reason: str | None) -> bytes:
        choice: dict[str, Any]
        if self.kind == "chat":
            choice = {
                "index": 0,
                "delta": {"content": text},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        if finish_reason is not None or self.kind == "completion":
            choice["stop_reason"] = None
        choice["token_ids"] = None
        return self.sse({**self.head, "choices": [choice]})

    def usage(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        usage = {
            "prompt_tokens": prompt_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "completion_tokens": completion_tokens,
        }
        return self.sse(
            {**self.head, "choices": [], "usage": usage, "system_fingerprint": SYSTEM_FINGERPRINT}
        )

    @staticmethod
    def done() -> bytes:
        return b"data: [DONE]\n\n"


def model_card(
    model_id: str, root: str, parent: str | None, max_len: int | None, created: int, permission_id: str
) -> dict[str, Any]:
    """One entry of vLLM's /v1/models (an adapter names its base model as parent)."""
    permission = {
        "id": permission_id,
        "object": "model_permission",
        "created": created,
        "allow_create_engine": False,
        "allow_sampling": True,
        "allow_logprobs": True,
        "allow_search_indices": False,
        "allow_view": True,
        "allow_fine_tuning": False,
        "organization": "*",
        "group": None,
        "is_blocking": False,
    }
    return {
        "id": model_id,
        "object": "model",
        "created": created,
        "owned_by": "vllm",
        "root": root,
        "parent": parent,
        "max_model_len": max_len,
        "permission": [permission],
    }
