"""A lean HTTP/1.1 GET client for scraping model servers: kept-alive connections per endpoint.

Scraping 1,000 pods every 50 ms is 20,000 requests a second; a general client (aiohttp: about
0.3 ms of CPU per request here) would need cores for that alone. This one writes a fixed request
and lets httptools (the C parser uvicorn uses) read the answer: tens of microseconds per request.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import cast

import httptools


class Unreachable(Exception):
    """No connection could be used: refused, reset, connect timeout, or dropped mid-answer."""


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection; one request at a time (the client never pipelines)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Response] | None = None
        self._parts: list[bytes] = []
        self._until_close = True  # neither Content-Length nor chunked: the body ends with the connection
        self._headers_done = False
        self.keep_alive = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, though they implement it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(Unreachable(f"malformed HTTP answer: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            if self._headers_done and self._until_close and exc is None:
                self._complete(False)  # a body delimited by the end of the connection
            else:
                self._fail(Unreachable(str(exc) if exc else "connection closed before the answer ended"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered == b"content-length" or (lowered == b"transfer-encoding" and b"chunked" in value.lower()):
            self._until_close = False

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._parts.append(body)

    def on_message_complete(self) -> None:
        self._complete(self._parser.should_keep_alive())

    # the client's side
    def request(self, raw: bytes, timeout_s: float) -> asyncio.Future[Response]:
        """The answer; fails with TimeoutError after `timeout_s` (and closes the connection)."""
        assert self.transport is not None and self._waiter is None
        # The loop is kept, and the timeout is a plain timer: on this VM every get_running_loop()
        # is a getpid() system call, and scraping makes thousands of requests a second.
        waiter = self._waiter = self._loop.create_future()
        timer = self._loop.call_later(timeout_s, self._time_out, waiter)
        waiter.add_done_callback(lambda _: timer.cancel())
        self._parts = []
        self._until_close = True
        self._headers_done = False
        self.transport.write(raw)
        return self._waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _time_out(self, waiter: asyncio.Future[Response]) -> None:
        if waiter is self._waiter:
            self._fail(TimeoutError("no complete answer in time"))
            self.close()  # a late answer would otherwise arrive for the next request

    def _complete(self, keep_alive: bool) -> None:
        waiter, self._waiter = self._waiter, None
        self.keep_alive = keep_alive
        if waiter is not None and not waiter.done():
            waiter.set_result(Response(self._parser.get_status_code(), b"".join(self._parts)))

    def _fail(self, error: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)


class EndpointClient:
    """GETs to one `host:port`, reusing idle connections; raises Unreachable or TimeoutError."""

    def __init__(
        self,
        address: str,
        *,
        use_tls: bool = False,
        connect_timeout_s: float = 0.25,
        timeout_s: float = 1.0,
    ) -> None:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"endpoint address must be host:port, got {address!r}")
        self.host = host.strip("[]")
        self.port = int(port)
        self._host_header = address.encode("ascii", "replace")
        self._ssl = ssl.create_default_context() if use_tls else None
        self.connect_timeout_s = connect_timeout_s
        self.timeout_s = timeout_s
        self._idle: list[_Connection] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    async def get(self, path: str) -> Response:
        connection = await self._connection()
        raw = b"GET %s HTTP/1.1\r\nHost: %s\r\nAccept: */*\r\n\r\n" % (
            path.encode("ascii"),
            self._host_header,
        )
        try:
            response = await connection.request(raw, self.timeout_s)
        except BaseException:
            connection.close()  # a late answer would otherwise arrive for the next request
            raise
        if connection.keep_alive and not connection.closed:
            self._idle.append(connection)
        else:
            connection.close()
        return response

    def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()

    async def _connection(self) -> _Connection:
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed:
                return connection
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, connection = await loop.create_connection(
                    lambda: _Connection(loop), self.host, self.port, ssl=self._ssl
                )
        except (OSError, TimeoutError) as exc:
            raise Unreachable(f"cannot connect to {self.host}:{self.port}: {exc or 'timeout'}") from None
        return connection
