"""Open-loop load generator: sends streaming completions at fixed arrival times and records each one.

Runs in its own process (`python -m hack.bench.loadgen JOB.json OUT.json`) so the simulated fleet's event
loop cannot delay its clock, and reports its own CPU use and how late it sent requests, so a run where
the harness (or the machine) was the bottleneck can be thrown out.

Job file: {"url": ..., "timeout": seconds, "requests": [{"at": seconds, "body": {...}, "headers": {...}}]}.
"""

from __future__ import annotations

import asyncio
import json
import math
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp

SHED_STATUSES = (429, 503)


@dataclass
class Record:
    """What happened to one request (times in seconds; ttft and e2e from the moment it was sent)."""

    scheduled: float
    sent: float
    status: int
    ttft: float | None
    e2e: float | None
    output_tokens: int
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None and self.ttft is not None


@dataclass(frozen=True)
class Summary:
    """Per-run statistics; latencies in milliseconds, rates per second."""

    requests: int
    ok: int
    ttft_p50_ms: float
    ttft_p90_ms: float
    ttft_p99_ms: float
    e2e_p90_ms: float
    tokens_per_s: float
    requests_per_s: float
    error_rate: float
    shed_rate: float


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 100]); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summarize(records: Sequence[Record], warmup: float = 0.0) -> Summary:
    """Stats over requests scheduled at or after `warmup` s; throughput over their send-to-finish span."""
    measured = [r for r in records if r.scheduled >= warmup]
    ok = [r for r in measured if r.ok]
    shed = sum(1 for r in measured if r.status in SHED_STATUSES)
    errors = sum(1 for r in measured if not r.ok and r.status not in SHED_STATUSES)
    ttfts = [r.ttft * 1000 for r in ok if r.ttft is not None]
    e2es = [r.e2e * 1000 for r in ok if r.e2e is not None]
    span = 0.0
    if ok:
        start = min(r.sent for r in measured)
        end = max(r.sent + (r.e2e or 0.0) for r in ok)
        span = max(end - start, 1e-9)
    n = len(measured)
    return Summary(
        requests=n,
        ok=len(ok),
        ttft_p50_ms=percentile(ttfts, 50),
        ttft_p90_ms=percentile(ttfts, 90),
        ttft_p99_ms=percentile(ttfts, 99),
        e2e_p90_ms=percentile(e2es, 90),
        tokens_per_s=sum(r.output_tokens for r in ok) / span if span else 0.0,
        requests_per_s=len(ok) / span if span else 0.0,
        error_rate=errors / n if n else 0.0,
        shed_rate=shed / n if n else 0.0,
    )


def _content_chunk(line: bytes) -> tuple[bool, int | None]:
    """(is a content token, usage completion_tokens or None) for one SSE line."""
    if not line.startswith(b"data: {"):
        return False, None
    if b'"usage":{' in line and b'"choices":[]' in line:
        payload = json.loads(line[6:])
        return False, int(payload["usage"]["completion_tokens"])
    # Only chunks that carry generated text count (a chat stream opens with an empty role delta).
    return (b'"text":"' in line and b'"text":""' not in line) or (
        b'"content":"' in line and b'"content":""' not in line
    ), None


async def send_one(
    session: aiohttp.ClientSession, url: str, item: dict[str, Any], scheduled: float, start: float
) -> Record:
    loop = asyncio.get_running_loop()
    sent = loop.time()
    record = Record(scheduled=scheduled, sent=sent - start, status=0, ttft=None, e2e=None, output_tokens=0)
    try:
        async with session.post(url, json=item["body"], headers=item.get("headers") or {}) as response:
            record.status = response.status
            if response.status != 200:
                await response.read()
                record.error = f"http {response.status}"
                return record
            chunks = 0
            usage: int | None = None
            done = False
            buffer = b""
            async for data in response.content.iter_any():
                buffer += data
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.startswith(b"data: [DONE]"):
                        done = True
                        continue
                    is_token, tokens = _content_chunk(line)
                    if tokens is not None:
                        usage = tokens
                    if is_token:
                        chunks += 1
                        if record.ttft is None:
                            record.ttft = loop.time() - sent
            record.e2e = loop.time() - sent
            record.output_tokens = usage if usage is not None else chunks
            if not done:
                record.error = "stream ended without [DONE]"
    except (TimeoutError, aiohttp.ClientError, ValueError, KeyError) as exc:
        record.error = f"{type(exc).__name__}: {exc}"
    return record


async def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Send every request at its time; returns records, lateness and this process's CPU seconds."""
    url = str(job["url"])
    items: list[dict[str, Any]] = sorted(job["requests"], key=lambda i: float(i["at"]))
    timeout = aiohttp.ClientTimeout(total=float(job.get("timeout", 300)))
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    wall_before = time.monotonic()
    loop = asyncio.get_running_loop()
    lateness: list[float] = []
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = loop.time() + 0.05
        tasks: list[asyncio.Task[Record]] = []
        for item in items:
            due = start + float(item["at"])
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            lateness.append(loop.time() - due)
            tasks.append(asyncio.create_task(send_one(session, url, item, float(item["at"]), start)))
        deadline = job.get("deadline")
        if deadline is not None and tasks:
            # A capacity probe: stop at the deadline, drop what still runs (its answers do not count).
            await asyncio.wait(tasks, timeout=max(0.0, start + float(deadline) - loop.time()))
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            records = [t.result() for t in tasks if not t.cancelled()]
        else:
            records = list(await asyncio.gather(*tasks))
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.monotonic() - wall_before
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    return {
        "records": [asdict(r) for r in records],
        "cpu_seconds": cpu,
        "wall_seconds": wall,
        "cpu_fraction": cpu / wall if wall > 0 else 0.0,
        "lateness_p99_ms": percentile([x * 1000 for x in lateness], 99),
        "lateness_max_ms": max(lateness, default=0.0) * 1000,
    }


def records_of(result: dict[str, Any]) -> list[Record]:
    return [Record(**r) for r in result["records"]]


def main(argv: Sequence[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m hack.bench.loadgen JOB.json OUT.json", file=sys.stderr)
        return 2
    job = json.loads(Path(argv[0]).read_text())
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # plain asyncio is fine, only slower
        pass
    result = asyncio.run(run_job(job))
    Path(argv[1]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
