"""Raw JSON requests through a `kubernetes.client.ApiClient` (its auth, TLS and host; no model classes).

Raw dicts are what the parsers take, and the generated model classes would cost a deserialize
per object per event.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ParamSpec

from kubernetes.client import ApiClient

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"

_P = ParamSpec("_P")


class KubeApiError(Exception):
    """A non-2xx answer from the API server; `status` is the HTTP status (0: no HTTP answer)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status


def resource_path(
    api_version: str,
    plural: str,
    namespace: str | None = None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    """`/api/v1/...` for the core group, `/apis/<group>/<version>/...` otherwise."""
    base = f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"
    path = f"{base}/namespaces/{namespace}/{plural}" if namespace else f"{base}/{plural}"
    if name:
        path += f"/{name}"
        if subresource:
            path += f"/{subresource}"
    return path


def open_request(
    api: ApiClient,
    method: str,
    path: str,
    query: Sequence[tuple[str, str]] = (),
    body: Any = None,
    content_type: str | None = None,
    timeout: float | tuple[float, float] | None = None,
) -> Any:
    """Send a request and return the unread urllib3 response; raises KubeApiError on non-2xx."""
    headers = {"Accept": JSON}
    if content_type:
        headers["Content-Type"] = content_type
    method, url, header_params, body, post_params = api.param_serialize(
        method=method,
        resource_path=path,
        query_params=list(query),
        header_params=headers,
        body=body,
        auth_settings=["BearerToken"],
    )
    response = api.call_api(
        method, url, header_params=header_params, body=body, post_params=post_params, _request_timeout=timeout
    ).response
    if not 200 <= response.status < 300:
        data = response.data
        response.release_conn()
        raise KubeApiError(response.status, _status_message(data))
    return response


def _read_json(open_fn: Callable[_P, Any]) -> Callable[_P, dict[str, Any]]:
    """`open_fn`, reading its answer as one JSON object (same parameters, so they are declared once)."""

    def read(*args: _P.args, **kwargs: _P.kwargs) -> dict[str, Any]:
        response = open_fn(*args, **kwargs)
        try:
            data = json.loads(response.data or b"{}")
        finally:
            response.release_conn()
        if not isinstance(data, dict):
            raise KubeApiError(response.status, "answer is not a JSON object")
        return data

    return read


request_json = _read_json(open_request)
"""A request whose answer is one JSON object (`open_request`'s parameters)."""


def iter_json_lines(response: Any) -> Iterator[dict[str, Any]]:
    """Decode a watch stream: one JSON object per line, chunks split anywhere."""
    pending = b""
    for chunk in response.stream(amt=None, decode_content=True):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line.strip():
                yield _json_object(line)
    if pending.strip():
        yield _json_object(pending)


def _json_object(line: bytes) -> dict[str, Any]:
    value = json.loads(line)
    if not isinstance(value, dict):
        raise ValueError("watch event is not a JSON object")
    return value


def _status_message(data: bytes | None) -> str:
    """The `message` of a Kubernetes Status body, or the raw body."""
    if not data:
        return ""
    try:
        status = json.loads(data)
    except ValueError:
        return data[:500].decode("utf-8", "replace")
    if isinstance(status, Mapping):
        return str(status.get("message") or status.get("reason") or "")
    return ""
