"""Errors the picker answers with: HTTP status, GIE error code, and an OpenAI-style JSON body."""

from __future__ import annotations

import enum

import orjson


class ErrorCode(enum.StrEnum):
    """GIE error codes (also the `error_code` metric label)."""

    BAD_REQUEST = "BadRequest"
    NOT_FOUND = "NotFound"
    RESOURCE_EXHAUSTED = "InferencePoolResourceExhausted"
    SERVICE_UNAVAILABLE = "ServiceUnavailable"
    INTERNAL = "Internal"
    MODEL_SERVER_ERROR = "ModelServerError"


# The `type` field of the body, named like vLLM's own error bodies so clients see one shape.
_ERROR_TYPES = {
    400: "BadRequestError",
    404: "NotFoundError",
    429: "RateLimitError",
    500: "InternalServerError",
    503: "ServiceUnavailableError",
}

_CODES_BY_STATUS = {
    400: ErrorCode.BAD_REQUEST,
    404: ErrorCode.NOT_FOUND,
    429: ErrorCode.RESOURCE_EXHAUSTED,
    500: ErrorCode.INTERNAL,
    503: ErrorCode.SERVICE_UNAVAILABLE,
}


class PickerError(Exception):
    """A request the picker answers itself, with `status` and an OpenAI-style body."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        # What the director had resolved when it refused (labels of the error metric).
        self.model = ""
        self.target = ""
        self.pool = ""

    @property
    def code(self) -> ErrorCode:
        return _CODES_BY_STATUS.get(self.status, ErrorCode.INTERNAL)

    def body(self) -> bytes:
        return error_body(self.status, self.message, self.param)


def bad_request(message: str, param: str | None = None) -> PickerError:
    return PickerError(400, message, param)


def error_body(status: int, message: str, param: str | None = None) -> bytes:
    """`{"error": {"message", "type", "param", "code"}}` as vLLM writes it (code = HTTP status)."""
    return orjson.dumps(
        {
            "error": {
                "message": message,
                "type": _ERROR_TYPES.get(status, "InternalServerError"),
                "param": param,
                "code": status,
            }
        }
    )
