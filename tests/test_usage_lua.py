"""The usage Lua filter in real Envoy 1.40: token usage reaches the access log, the response is untouched.

Runs real Envoy (the compiled filter and per-route config, an aiohttp upstream, a file access log that
prints the usage metadata); Envoy's file log is flushed every 20 ms here instead of every 10 s.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from google.protobuf.json_format import MessageToDict

from api.contract import USAGE_METADATA_NAMESPACE, UsageMetadataKey
from extserver.compile import naming
from extserver.compile.filters.usage import build_usage_filter, enable_on_route
from localgateway.envoy import envoy_binary
from tests.ports import free_port

STARTUP_SECONDS = 30.0
PAUSE_SECONDS = 0.03  # between SSE writes: long enough that Envoy reads them as separate chunks

Write = bytes | float  # bytes to send, or seconds to pause


def _sse(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


def _chunk(text: str, usage: dict[str, int] | None = None) -> dict[str, Any]:
    return {"object": "text_completion", "choices": [{"index": 0, "text": text}], "usage": usage}


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


@dataclass
class Upstream:
    """Scripted answers per path; `release` holds the rest of /gated until the test sets it."""

    scripts: dict[str, list[Write]] = field(default_factory=dict)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    finished: dict[str, float] = field(default_factory=dict)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        script = self.scripts[request.path]
        answer = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await answer.prepare(request)
        for index, step in enumerate(script):
            if isinstance(step, float):
                await asyncio.sleep(step)
                continue
            await answer.write(step)
            if request.path == "/gated" and index == 0:
                await asyncio.wait_for(self.release.wait(), timeout=10)
        self.finished[request.path] = time.monotonic()
        await answer.write_eof()
        return answer


def _bootstrap(listener_port: int, upstream_port: int, access_log: Path) -> dict[str, Any]:
    """Static Envoy config: the compiled usage filter, enabled on /v1 routes as compiled, off on /off."""
    usage = USAGE_METADATA_NAMESPACE
    log_format = (
        f"%REQ(:PATH)% %DYNAMIC_METADATA({usage}:{UsageMetadataKey.PROMPT_TOKENS})% "
        f"%DYNAMIC_METADATA({usage}:{UsageMetadataKey.COMPLETION_TOKENS})% "
        f"%START_TIME(%s.%6f)% %DYNAMIC_METADATA({usage}:{UsageMetadataKey.FIRST_CHUNK_US})%\n"
    )
    enabled = {naming.USAGE_FILTER: MessageToDict(enable_on_route())}
    routes = [
        {"match": {"prefix": "/off"}, "route": {"cluster": "upstream"}},
        {"match": {"prefix": "/"}, "route": {"cluster": "upstream"}, "typed_per_filter_config": enabled},
    ]
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
        "HttpConnectionManager",
        "stat_prefix": "usage",
        "route_config": {
            "name": "usage",
            "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}],
        },
        "http_filters": [
            MessageToDict(build_usage_filter()),
            {
                "name": naming.ROUTER_FILTER,
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            },
        ],
        "access_log": [
            {
                "name": "envoy.access_loggers.file",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                    "path": str(access_log),
                    "log_format": {"text_format_source": {"inline_string": log_format}},
                },
            }
        ],
    }
    endpoint = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": upstream_port}}}
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "usage",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": listener_port}},
                    "filter_chains": [
                        {"filters": [{"name": naming.HCM_FILTER, "typed_config": hcm}]},
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "upstream",
                    "type": "STATIC",
                    "load_assignment": {
                        "cluster_name": "upstream",
                        "endpoints": [{"lb_endpoints": [{"endpoint": endpoint}]}],
                    },
                }
            ],
        },
    }


@dataclass
class Gateway:
    url: str
    upstream: Upstream
    access_log: Path
    process: subprocess.Popen[bytes]
    log: Path

    async def usage_of(self, path: str) -> tuple[str, str]:
        """(prompt_tokens, completion_tokens) as the access log printed them for `path` ("-": absent)."""
        fields = await self._logged(path)
        return fields[0], fields[1]

    async def first_chunk_after_start(self, path: str) -> float | None:
        """Seconds from the request's start to the first response body chunk (None: not logged)."""
        _, _, start, first_chunk_us = await self._logged(path)
        return None if first_chunk_us == "-" else float(first_chunk_us) / 1e6 - float(start)

    async def _logged(self, path: str) -> list[str]:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.access_log.exists():
                for line in self.access_log.read_text().splitlines():
                    logged_path, *fields = line.split(" ")
                    if logged_path == path:
                        return fields
            await asyncio.sleep(0.02)
        raise AssertionError(f"no access log line for {path}:\n{_tail(self.log)}")


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


def _start_envoy(bootstrap: dict[str, Any], directory: Path) -> tuple[subprocess.Popen[bytes], Path]:
    config = directory / "bootstrap.json"
    config.write_text(json.dumps(bootstrap))
    log = directory / "envoy.log"
    address = directory / "admin-address"
    cmd = [
        envoy_binary(),
        "-c",
        str(config),
        "--admin-address-path",
        str(address),
        "-l",
        "warning",
        "--concurrency",
        "1",
        "--disable-hot-restart",
        # The file access log is flushed every 10 s by default; the test reads it right away.
        "--file-flush-interval-msec",
        "20",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return process, log


async def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"envoy exited:\n{_tail(log)}")
            try:
                async with session.get(f"{url}/off/ready") as answer:
                    await answer.read()
                    return
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
    raise TimeoutError(f"envoy did not start:\n{_tail(log)}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    upstream = Upstream()
    upstream.scripts["/off/ready"] = [b"ok"]
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", upstream.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    upstream_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", upstream_port).start()
    directory = Path(tempfile.mkdtemp(prefix="usage-lua-"))
    listener_port = free_port()
    access_log = directory / "access.log"
    process, log = _start_envoy(_bootstrap(listener_port, upstream_port, access_log), directory)
    try:
        url = f"http://127.0.0.1:{listener_port}"
        await _wait_ready(url, process, log)
        yield Gateway(url, upstream, access_log, process, log)
    finally:
        _stop(process)
        await runner.cleanup()


async def _fetch(gateway: Gateway, path: str, script: list[Write]) -> bytes:
    """POST `path`; the upstream plays `script`. Returns the body the client got."""
    gateway.upstream.scripts[path] = script
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{gateway.url}{path}", data=b"{}") as answer,
    ):
        assert answer.status == 200
        return await answer.read()


def _sent(script: list[Write]) -> bytes:
    return b"".join(step for step in script if isinstance(step, bytes))


async def test_json_answer_with_usage(gateway: Gateway) -> None:
    body = json.dumps({"id": "x", "choices": [{"text": "hello"}], "usage": _usage(12, 34)}, indent=2)
    script: list[Write] = [body.encode()]
    assert await _fetch(gateway, "/v1/json", script) == _sent(script)
    assert await gateway.usage_of("/v1/json") == ("12", "34")


async def test_sse_usage_in_the_last_event_split_at_every_byte(gateway: Gateway) -> None:
    """The final event is cut into two writes at every offset; the key, the colon or the number split
    anywhere must still be found whole (and a cut number never taken in part)."""
    final = _sse(_chunk("", _usage(123, 4567)))
    head = [_sse(_chunk(word)) for word in ("Hello", " there", ", friend")]
    start = final.index(b'"usage"')
    for cut in range(start, len(final)):
        path = f"/v1/sse/{cut}"
        script: list[Write] = [
            *head,
            PAUSE_SECONDS,
            final[:cut],
            PAUSE_SECONDS,
            final[cut:],
            b"data: [DONE]\n\n",
        ]
        assert await _fetch(gateway, path, script) == _sent(script)
        assert await gateway.usage_of(path) == ("123", "4567"), cut


async def test_continuous_usage_last_one_wins(gateway: Gateway) -> None:
    script: list[Write] = []
    for completion in range(1, 8):
        script += [_sse(_chunk(f"t{completion}", _usage(9, completion))), PAUSE_SECONDS]
    script.append(b"data: [DONE]\n\n")
    assert await _fetch(gateway, "/v1/continuous", script) == _sent(script)
    assert await gateway.usage_of("/v1/continuous") == ("9", "7")


async def test_no_usage_leaves_metadata_absent_and_the_response_intact(gateway: Gateway) -> None:
    script: list[Write] = [_sse(_chunk("no")), PAUSE_SECONDS, _sse(_chunk(" usage")), b"data: [DONE]\n\n"]
    assert await _fetch(gateway, "/v1/none", script) == _sent(script)
    assert await gateway.usage_of("/v1/none") == ("-", "-")


async def test_escaped_usage_inside_generated_text_is_not_taken(gateway: Gateway) -> None:
    """Real usage first, then text (JSON-escaped by the server) that looks like usage: the text loses."""
    fake = 'as JSON: {"prompt_tokens": 99, "completion_tokens": 98}'
    body = json.dumps({"usage": _usage(5, 6), "choices": [{"text": fake}]})
    assert '\\"prompt_tokens\\": 99' in body
    script: list[Write] = [body.encode()]
    assert await _fetch(gateway, "/v1/escaped", script) == _sent(script)
    assert await gateway.usage_of("/v1/escaped") == ("5", "6")
    sse: list[Write] = [_sse(_chunk(fake)), PAUSE_SECONDS, b"data: [DONE]\n\n"]
    assert await _fetch(gateway, "/v1/escaped-sse", sse) == _sent(sse)
    assert await gateway.usage_of("/v1/escaped-sse") == ("-", "-")


async def test_large_body_passes_byte_identical_with_usage_at_the_end(gateway: Gateway) -> None:
    text = 'say "prompt_tokens": 1, ' * (1024 * 1024 // 24)  # ~1 MiB, escaped by json.dumps: never taken
    body = json.dumps({"choices": [{"text": text}], "usage": _usage(1000, 2000)}).encode()
    script: list[Write] = [body[i : i + 100_000] for i in range(0, len(body), 100_000)]
    assert await _fetch(gateway, "/v1/large", script) == body
    assert await gateway.usage_of("/v1/large") == ("1000", "2000")


async def test_first_chunk_time_is_the_first_body_chunk_not_the_headers(gateway: Gateway) -> None:
    """The upstream sends its headers at once and the first event after a pause: TTFT sees the pause."""
    pause = 0.2
    script: list[Write] = [pause, _sse(_chunk("first")), PAUSE_SECONDS, _sse(_chunk("", _usage(3, 2)))]
    assert await _fetch(gateway, "/v1/first-chunk", script) == _sent(script)
    first_chunk = await gateway.first_chunk_after_start("/v1/first-chunk")
    assert first_chunk is not None
    assert pause <= first_chunk < pause + 5  # the pause at least; the upper bound only catches a unit error


async def test_route_without_the_per_route_config_does_not_run_the_filter(gateway: Gateway) -> None:
    script: list[Write] = [json.dumps({"usage": _usage(1, 2)}).encode()]
    assert await _fetch(gateway, "/off/json", script) == _sent(script)
    assert await gateway.usage_of("/off/json") == ("-", "-")
    assert await gateway.first_chunk_after_start("/off/json") is None


async def test_first_sse_event_reaches_the_client_before_the_upstream_sends_the_last(
    gateway: Gateway,
) -> None:
    """No buffering: the upstream holds its later events until the client has the first one."""
    first = _sse(_chunk("first"))
    rest = [_sse(_chunk("second")), _sse(_chunk("", _usage(3, 2))), b"data: [DONE]\n\n"]
    gateway.upstream.scripts["/gated"] = [first, *rest]
    received = b""
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{gateway.url}/gated", data=b"{}") as answer,
    ):
        while len(received) < len(first):
            received += await asyncio.wait_for(answer.content.readany(), timeout=5)
        got_first_at = time.monotonic()
        assert "/gated" not in gateway.upstream.finished
        gateway.upstream.release.set()
        received += await answer.read()
    assert received == first + b"".join(rest)
    assert gateway.upstream.finished["/gated"] > got_first_at
    assert await gateway.usage_of("/gated") == ("3", "2")
