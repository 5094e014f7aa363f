"""The SSE body of a streaming completion: tokens as the engine produces them, or on a stretched clock."""

from __future__ import annotations

import asyncio

from aiohttp import web

from simulator.engine import Engine, Sequence
from simulator.openai_api import StreamChunks, filler_text

STREAM_MIN_INTERVAL_S = 0.002  # streaming writes at most this often; tokens due meanwhile share one write
STREAM_WAIT_POLL_S = 0.005  # how often a queued streaming request looks whether it started


async def write_stream(
    request: web.Request,
    response: web.StreamResponse,
    chunks: StreamChunks,
    engine: Engine,
    seq: Sequence,
    include_usage: bool,
) -> None:
    """Write every token of `seq` to a prepared response, then usage and [DONE]; drop it on an abort."""
    loop = asyncio.get_running_loop()
    # vLLM sends a chat's role delta with the first output, so it marks the time to first token too.
    opening = chunks.role()
    stretched = seq.token_times is not None
    sent = 0
    while True:
        finished = seq.done.done()
        if finished and seq.done.result() == "abort":
            # A killed server drops the connection mid-stream.
            if request.transport is not None:
                request.transport.close()
            return
        # The last token goes out only with the finish, so it can carry finish_reason.
        produced = seq.generated if finished else min(engine.tokens_generated(seq), seq.max_tokens - 1)
        ready = produced
        if stretched:
            now = loop.time()
            ready = sent
            while ready < produced and engine.emit_time(seq, ready) <= now:
                ready += 1
        if ready > sent:
            last = finished and ready == seq.max_tokens
            parts = [opening] if sent == 0 and opening is not None else []
            parts += [
                chunks.token(filler_text(i, i + 1), "length" if last and i == ready - 1 else None)
                for i in range(sent, ready)
            ]
            await response.write(b"".join(parts))
            sent = ready
        if finished and sent == seq.generated:
            break
        if sent < produced:  # a stretched sequence's tokens wait for their time
            await asyncio.sleep(max(STREAM_MIN_INTERVAL_S, engine.emit_time(seq, sent) - loop.time()))
            continue
        due = engine.next_token_at(seq)
        delay = STREAM_WAIT_POLL_S if due is None else max(STREAM_MIN_INTERVAL_S, due - loop.time())
        await asyncio.wait([seq.done], timeout=delay)
    if include_usage:
        await response.write(chunks.usage(seq.prompt_tokens, sent))
    await response.write(chunks.done())
    await response.write_eof()
