"""The request side of a state-of-the-world xDS stream, shared by the picker's EDS and the local
gateway's ADS server: requests are read in the background so the server can wait for whichever
comes first, the next request or a change of what it serves.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Generic, TypeVar

_Request = TypeVar("_Request")


class Changed:
    """What `StreamRequests.next` returns when the change it was given happened first."""


CHANGED = Changed()


class StreamRequests(Generic[_Request]):
    """Reads one stream's requests into a queue; `async with` stops the reader when the stream ends."""

    def __init__(self, requests: AsyncIterator[_Request]) -> None:
        self._queue: asyncio.Queue[_Request | None] = asyncio.Queue()
        self._requests = requests
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> StreamRequests[_Request]:
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader

    async def _read(self) -> None:
        try:
            async for request in self._requests:
                await self._queue.put(request)
        finally:
            await self._queue.put(None)

    async def next(self, change: Callable[[], Awaitable[object]]) -> _Request | Changed | None:
        """The next request (None: the client closed the stream), or CHANGED when what `change()`
        awaits completes first. A request already queued wins at once; the wait is cancelled if
        the request comes first."""
        if not self._queue.empty():
            return self._queue.get_nowait()
        waiter = asyncio.ensure_future(change())
        get = asyncio.create_task(self._queue.get())
        done, _ = await asyncio.wait({get, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            waiter.cancel()
        if get in done:
            return get.result()
        get.cancel()  # a cancelled Queue.get leaves its item queued
        return CHANGED
