"""Polling the picker replicas' `/measurements` and keeping the previous polls: one window per `advance()`.

Thin I/O around rollout/windows.py; how replicas coming, going and failing are counted is in
docs/rollout.md, "Windows".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog

from rollout.judgement import TargetWindow
from rollout.windows import (
    MeasurementsError,
    ReplicaWindow,
    TargetKey,
    Window,
    merge,
    replica_delta,
    target_windows,
)

log = structlog.get_logger(__name__)

MEASUREMENTS_PATH = "/measurements"  # picker/metrics.py serves it; not imported: rollout needs no picker
Discover = Callable[[], Awaitable[Sequence[str]]]


@dataclass(frozen=True)
class Poll:
    """One replica's answer: its document, or why there is none."""

    url: str
    doc: dict[str, Any] | None = None
    error: str | None = None


async def poll_one(session: aiohttp.ClientSession, url: str, timeout: float = 2.0) -> Poll:
    """GET one replica's measurements; any failure (connection, status, timeout, not JSON) is an error."""
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            if response.status != 200:
                return Poll(url, error=f"HTTP {response.status}")
            doc = await response.json(content_type=None)
    except TimeoutError:
        return Poll(url, error=f"no answer within {timeout:g}s")
    except (aiohttp.ClientError, ValueError) as exc:
        return Poll(url, error=f"{type(exc).__name__}: {exc}")
    if not isinstance(doc, dict):
        return Poll(url, error="answer is not a JSON object")
    return Poll(url, doc=doc)


async def poll(
    urls: Sequence[str], session: aiohttp.ClientSession | None = None, timeout: float = 2.0
) -> list[Poll]:
    """Every replica at once, in the order of `urls`."""
    if session is None:
        async with aiohttp.ClientSession() as own:
            return await poll(urls, own, timeout)
    return list(await asyncio.gather(*(poll_one(session, url, timeout) for url in urls)))


@dataclass(frozen=True)
class TrackedWindow:
    """One `advance()`: the merged window, each target's TargetWindow, and whether it can be trusted."""

    window: Window
    targets: Mapping[TargetKey, TargetWindow]
    baseline: bool = False  # the first call: no window yet, only the starting point
    started: float | None = None  # the controller's clock at the previous and this call
    ended: float = 0.0
    replicas: Mapping[str, str] = field(default_factory=dict)  # URL -> replica (pod) name

    @property
    def complete(self) -> bool:
        """False for the baseline, or when a replica's share of the window is unknown."""
        return not self.baseline and self.window.complete

    def target(self, pool: str, model: str, target: str) -> TargetWindow:
        """The target's window; an empty one (no samples: inconclusive) if no replica saw it."""
        return self.targets.get((pool, model, target), TargetWindow())


class WindowTracker:
    """Keeps the last poll of each replica URL; each `advance()` polls them all and returns the window
    since the previous call. Replicas come from a static list or a discovery coroutine."""

    def __init__(
        self,
        urls: Sequence[str] | Discover,
        *,
        timeout: float = 2.0,
        tpot_kind: str = "streaming",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._discover: Discover = urls if callable(urls) else _static(tuple(urls))
        self.timeout = timeout
        self.tpot_kind = tpot_kind
        self._clock = clock
        self._previous: dict[str, dict[str, Any]] = {}
        self._last_call: float | None = None

    def reset(self) -> None:
        """Forget every poll: the next `advance()` is a baseline again (e.g. at a weight change)."""
        self._previous.clear()
        self._last_call = None

    async def advance(self, session: aiohttp.ClientSession | None = None) -> TrackedWindow:
        """Poll every replica and return the window since the previous call."""
        started, now = self._last_call, self._clock()
        missing: dict[str, str] = {}
        try:
            urls = tuple(dict.fromkeys(await self._discover()))
        except Exception as exc:  # discovery failed: nothing is known about this window
            log.warning("replica discovery failed", error=str(exc))
            self.reset()
            return TrackedWindow(merge([], {"<discovery>": str(exc)}), {}, True, started, now)
        for gone in set(self._previous) - set(urls):
            # Scaled away or rolled: what it counted since its last poll is lost with it.
            log.info("picker replica gone", url=gone, replica=self._previous[gone].get("replica"))
            del self._previous[gone]
        polls = await poll(urls, session, self.timeout)
        shares: list[ReplicaWindow] = []
        names: dict[str, str] = {}
        for p in polls:
            share, why = self._share(p, started)
            if share is not None:
                shares.append(share)
                names[p.url] = share.replica
            if why is not None and (started is not None or p.doc is None):
                missing[p.url] = why
        try:
            window = merge(shares, missing)
        except MeasurementsError as exc:
            log.warning("replicas cannot be merged", error=str(exc))
            window = merge([], {**missing, "<merge>": str(exc)})
        self._last_call = now
        if started is None:
            return TrackedWindow(window, {}, True, None, now, names)
        if window.missing:
            log.warning("window incomplete", missing=window.missing)
        if window.restarted:
            log.info("picker replicas restarted within the window", replicas=window.restarted)
        return TrackedWindow(window, target_windows(window, self.tpot_kind), False, started, now, names)

    def _share(self, p: Poll, started: float | None) -> tuple[ReplicaWindow | None, str | None]:
        """This replica's part of the window and, if its part is not all there, why."""
        if p.doc is None:
            # Without a baseline the next answer cannot be split between this window and the next.
            self._previous.pop(p.url, None)
            return None, p.error
        previous = self._previous.get(p.url)
        try:
            share = replica_delta(previous, p.doc)
        except (MeasurementsError, KeyError, TypeError, ValueError) as exc:
            self._previous.pop(p.url, None)
            return None, f"bad document: {exc}"
        self._previous[p.url] = p.doc
        if previous is not None:
            return share, None
        if started is not None and share.since >= started:
            return share, None  # started within the window: everything it counted is in it
        return None, "first poll of a replica that ran before the window: its share is unknown"


def _static(urls: tuple[str, ...]) -> Discover:
    async def discover() -> Sequence[str]:
        return urls

    return discover
