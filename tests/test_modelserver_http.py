"""The scraper's HTTP client against real sockets: a scripted asyncio server on a free port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from picker.modelserver.http import EndpointClient, Unreachable

Answer = Callable[[bytes], bytes | None]  # request bytes -> raw answer (None: hang)


class Server:
    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                request = await reader.readuntil(b"\r\n\r\n")
                self.requests.append(request)
                raw = self.answer(request)
                if raw is None:
                    await asyncio.sleep(10)
                    return
                writer.write(raw)
                await writer.drain()
                if b"connection: close" in raw.lower():
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()

    @property
    def address(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"


async def serve(answer: Answer) -> AsyncIterator[Server]:
    server = Server(answer)
    server.server = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    try:
        yield server
    finally:
        server.server.close()


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


@pytest.fixture
async def metrics_server() -> AsyncIterator[Server]:
    async for server in serve(lambda _: ok(b"vllm:num_requests_running 1\n")):
        yield server


async def test_answers_reuse_one_kept_alive_connection(metrics_server: Server) -> None:
    client = EndpointClient(metrics_server.address)
    for _ in range(5):
        response = await client.get("/metrics")
        assert (response.status, response.body) == (200, b"vllm:num_requests_running 1\n")
    assert metrics_server.connections == 1
    assert metrics_server.requests[0].startswith(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:")
    client.close()


async def test_concurrent_requests_open_a_second_connection(metrics_server: Server) -> None:
    client = EndpointClient(metrics_server.address)
    first, second = await asyncio.gather(client.get("/metrics"), client.get("/v1/models"))
    assert first.status == second.status == 200
    assert metrics_server.connections == 2
    client.close()


async def test_chunked_and_close_delimited_bodies() -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    async for server in serve(lambda _: chunked):
        client = EndpointClient(server.address)
        assert (await client.get("/")).body == b"hello world"
        assert (await client.get("/")).body == b"hello world"
        assert server.connections == 1
        client.close()
    until_close = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it"
    async for server in serve(lambda _: until_close):
        client = EndpointClient(server.address)
        assert (await client.get("/")).body == b"all of it"
        assert (await client.get("/")).body == b"all of it"  # a new connection each time
        assert server.connections == 2
        client.close()


async def test_error_status_is_an_answer() -> None:
    async for server in serve(lambda _: b"HTTP/1.1 503 Unavailable\r\nContent-Length: 4\r\n\r\nbusy"):
        client = EndpointClient(server.address)
        response = await client.get("/metrics")
        assert (response.status, response.body) == (503, b"busy")
        client.close()


async def test_refused_port_is_unreachable() -> None:
    async for server in serve(lambda _: ok(b"")):
        address = server.address
    client = EndpointClient(address)  # the server is gone: connection refused
    with pytest.raises(Unreachable):
        await client.get("/metrics")


async def test_hanging_answer_times_out_and_the_connection_is_not_reused() -> None:
    answers = iter([None, ok(b"late but fine")])
    async for server in serve(lambda _: next(answers)):
        client = EndpointClient(server.address, timeout_s=0.2)
        with pytest.raises(TimeoutError):
            await client.get("/metrics")
        assert (await client.get("/metrics")).body == b"late but fine"
        assert server.connections == 2
        client.close()


async def test_answer_cut_short_or_malformed_is_unreachable() -> None:
    async for server in serve(
        lambda _: b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\nshort"
    ):
        client = EndpointClient(server.address)
        with pytest.raises(Unreachable):
            await client.get("/metrics")
        client.close()
    async for server in serve(lambda _: b"NOT HTTP AT ALL\r\n\r\n"):
        client = EndpointClient(server.address)
        with pytest.raises(Unreachable):
            await client.get("/metrics")
        client.close()


def test_address_must_have_a_port() -> None:
    with pytest.raises(ValueError, match="host:port"):
        EndpointClient("10.0.0.1")


def test_works_on_uvloop_as_the_picker_runs_it() -> None:
    import uvloop

    async def scenario() -> tuple[int, int]:
        async for server in serve(lambda _: ok(b"ok")):
            client = EndpointClient(server.address)
            statuses = [(await client.get("/metrics")).status for _ in range(3)]
            client.close()
            return sum(statuses), server.connections
        raise AssertionError("the server did not start")

    assert uvloop.run(scenario()) == (600, 1)
