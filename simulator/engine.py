"""Continuous-batching engine of one simulated model server, advanced event by event.

Between two events (an admission, a finish, an abort) the batch is fixed, so the engine sleeps once
for the whole stretch ("segment") instead of once per token: the first step of a segment carries the
prefill of the sequences it admits (and LoRA loads), then every step decodes one token for every
running sequence. Token counts inside a segment are derived from the clock, so streaming handlers
can read them at any time. An arrival interrupts the segment at the end of the step in progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import OrderedDict, deque
from dataclasses import dataclass

from simulator.counters import TTFT_BUCKETS, EngineCounters
from simulator.latency import LORA_LOAD_MS, decode_step_ms, prefill_ms
from simulator.prefix_cache import PrefixCache


@dataclass(frozen=True)
class EngineConfig:
    """Capacity and speed of one engine."""

    max_num_seqs: int = 256
    kv_cache_tokens: int = 420_000
    block_size: int = 16
    max_loras: int = 1
    lora_load_ms: float = LORA_LOAD_MS
    time_scale: float = 1.0


@dataclass(eq=False)
class Sequence:
    """One request inside the engine; `generated` is its token count at the start of the current segment."""

    model: str
    adapter: str | None
    prompt_tokens: int
    max_tokens: int
    block_hashes: list[int]
    arrival: float
    done: asyncio.Future[str]  # result: finish reason ("length" or "abort")
    generated: int = 0
    cached_tokens: int = 0
    running: bool = False
    first_token_at: float | None = None
    # A degraded request's clock: the server emits its tokens at emit_time(), stretched by these factors
    # from the engine's own schedule (the batch itself is not slowed, so other models keep their pace).
    ttft_factor: float = 1.0
    tpot_factor: float = 1.0
    token_times: list[float] | None = None  # engine times of the tokens of finished segments, if stretched

    def __post_init__(self) -> None:
        if self.token_times is None and (self.ttft_factor != 1 or self.tpot_factor != 1):
            self.token_times = []


@dataclass(frozen=True)
class EngineSnapshot:
    """What the engine's scheduler state looks like now (the inputs of /metrics)."""

    running: int
    waiting: int
    waiting_deferred: int
    kv_tokens_held: int
    kv_cache_usage: float
    running_lora_adapters: tuple[str, ...]
    waiting_lora_adapters: tuple[str, ...]
    loaded_lora_adapters: tuple[str, ...]


class Engine:
    """Scheduler + simulated GPU of one server; call start() inside a running loop, stop() to end it."""

    def __init__(self, config: EngineConfig) -> None:
        if config.time_scale <= 0:
            raise ValueError("time_scale must be > 0")
        self.config = config
        self.slowdown = 1.0
        self.counters = EngineCounters()
        self.prefix_cache = PrefixCache(config.kv_cache_tokens // max(1, config.block_size))
        self._waiting: deque[Sequence] = deque()
        self._running: list[Sequence] = []
        self._kv_reserved = 0
        self._held_base = 0  # prompt + generated tokens of running sequences at segment start
        self._loras: OrderedDict[str, None] = OrderedDict()  # resident adapters, LRU first
        self._lora_users: dict[str, int] = {}  # running sequences per adapter, in first-use order
        self._in_segment = False
        self._seg_start = 0.0
        self._seg_first = 0.0
        self._seg_step = 1.0
        self._seg_steps = 0
        self._waiter: asyncio.Future[bool] | None = None
        self._task: asyncio.Task[None] | None = None

    # lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="sim-engine")

    async def stop(self) -> None:
        """Stop the loop and abort every sequence."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.reset()

    def reset(self) -> None:
        """Abort everything and forget caches (a restarted server)."""
        for seq in [*self._running, *self._waiting]:
            self._finish(seq, "abort")
        self._running.clear()
        self._waiting.clear()
        self._kv_reserved = 0
        self._held_base = 0
        self._loras.clear()
        self._lora_users.clear()
        self._in_segment = False
        self.prefix_cache.clear()
        self._wake()

    # requests ----------------------------------------------------------------------------------

    def fits(self, prompt_tokens: int, max_tokens: int) -> bool:
        """Whether a request could ever be admitted (its prompt and output fit the KV cache)."""
        return prompt_tokens + max_tokens <= self.config.kv_cache_tokens

    def submit(self, seq: Sequence) -> None:
        self._waiting.append(seq)
        if len(self._running) < self.config.max_num_seqs:
            self._wake()

    def abort(self, seq: Sequence) -> None:
        """Drop a sequence whose client went away."""
        if seq.done.done():
            return
        if seq.running:
            # Keep the segment's clock arithmetic consistent: its base tokens leave with it.
            self._running.remove(seq)
            self._release(seq)
        else:
            with contextlib.suppress(ValueError):
                self._waiting.remove(seq)
        self._finish(seq, "abort")
        self._wake()

    def tokens_generated(self, seq: Sequence) -> int:
        """Tokens produced so far, read off the clock inside the current segment."""
        if not seq.running or not self._in_segment:
            return seq.generated
        return min(seq.max_tokens, seq.generated + self._elapsed_steps(asyncio.get_running_loop().time()))

    def next_token_at(self, seq: Sequence) -> float | None:
        """Loop time of this sequence's next token, or None if not known yet (waiting, between segments)."""
        if not seq.running or not self._in_segment:
            return None
        k = self._elapsed_steps(asyncio.get_running_loop().time())
        if k >= self._seg_steps:
            return None
        return self._seg_start + self._seg_first + k * self._seg_step

    def emit_time(self, seq: Sequence, index: int) -> float:
        """Loop time at which token `index` (already produced) is due on the sequence's stretched clock."""
        first = seq.first_token_at
        assert first is not None, "token of a sequence that never started"
        if seq.token_times is not None and index < len(seq.token_times):
            produced_at = seq.token_times[index]
        else:  # a token of the current segment
            produced_at = self._seg_start + self._seg_first + (index - seq.generated) * self._seg_step
        return seq.arrival + seq.ttft_factor * (first - seq.arrival) + seq.tpot_factor * (produced_at - first)

    def set_slowdown(self, factor: float) -> None:
        if factor <= 0:
            raise ValueError("slowdown must be > 0")
        self.slowdown = factor
        self._wake()

    def snapshot(self) -> EngineSnapshot:
        held = self._held_base
        if self._in_segment:
            held += len(self._running) * self._elapsed_steps(asyncio.get_running_loop().time())
        waiting_loras: dict[str, None] = {}
        deferred = 0
        slot_free = len(self._loras) < self.config.max_loras or any(
            self._lora_users.get(a, 0) == 0 for a in self._loras
        )
        for seq in self._waiting:
            if seq.adapter is not None:
                waiting_loras[seq.adapter] = None
                if seq.adapter not in self._loras and not slot_free:
                    deferred += 1
        return EngineSnapshot(
            running=len(self._running),
            waiting=len(self._waiting),
            waiting_deferred=deferred,
            kv_tokens_held=held,
            kv_cache_usage=min(1.0, held / self.config.kv_cache_tokens)
            if self.config.kv_cache_tokens
            else 0.0,
            running_lora_adapters=tuple(self._lora_users),
            waiting_lora_adapters=tuple(waiting_loras),
            loaded_lora_adapters=tuple(self._loras),
        )

    # the loop ----------------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._running and not self._waiting:
                await self._sleep_or_wake(None)
                continue
            extra_ms, admitted = self._admit(loop.time())
            if not self._running:
                await self._sleep_or_wake(None)
                continue
            steps = min(s.max_tokens - s.generated for s in self._running)
            mid_held = self._held_base + len(self._running) * steps / 2
            step_ms = decode_step_ms(len(self._running), mid_held)
            scale = self.config.time_scale * self.slowdown / 1000.0
            now = loop.time()
            self._seg_start, self._seg_first = now, (step_ms + extra_ms) * scale
            self._seg_step, self._seg_steps = step_ms * scale, steps
            self._in_segment = True
            first_at = now + self._seg_first
            for seq in admitted:
                seq.first_token_at = first_at
                self.counters.observe_ttft(seq.ttft_factor * (first_at - seq.arrival))
            interrupted = await self._sleep_or_wake(self._seg_first + (steps - 1) * self._seg_step)
            done_steps = steps
            if interrupted:
                now = loop.time()
                k = self._elapsed_steps(now)
                if k < steps:
                    # An iteration in progress is never cut short: finish it, then reschedule.
                    self._seg_steps = k + 1
                    await asyncio.sleep(
                        max(0.0, self._seg_start + self._seg_first + k * self._seg_step - now)
                    )
                    done_steps = k + 1
            self._in_segment = False
            self._advance(done_steps)

    def _elapsed_steps(self, now: float) -> int:
        since_first = now - self._seg_start - self._seg_first
        if since_first < 0:
            return 0
        return min(self._seg_steps, 1 + math.floor(since_first / self._seg_step))

    def _admit(self, now: float) -> tuple[float, list[Sequence]]:
        """Move waiting sequences into the batch: FIFO on capacity, skipping those blocked on a LoRA slot."""
        cfg = self.config
        if not self._waiting or len(self._running) >= cfg.max_num_seqs:
            return 0.0, []
        admitted: list[Sequence] = []
        kept: deque[Sequence] = deque()
        uncached = 0
        lora_ms = 0.0
        capacity_blocked = False
        for seq in self._waiting:
            if capacity_blocked or len(self._running) >= cfg.max_num_seqs:
                kept.append(seq)
                continue
            if self._kv_reserved + seq.prompt_tokens + seq.max_tokens > cfg.kv_cache_tokens:
                capacity_blocked = True
                kept.append(seq)
                continue
            ok, cost = self._acquire_lora(seq.adapter)
            if not ok:
                kept.append(seq)
                continue
            lora_ms += cost
            hit_blocks = self.prefix_cache.lookup_and_insert(seq.block_hashes)
            seq.cached_tokens = min(hit_blocks * cfg.block_size, seq.prompt_tokens - 1)
            uncached += seq.prompt_tokens - seq.cached_tokens
            seq.running = True
            self._running.append(seq)
            self._kv_reserved += seq.prompt_tokens + seq.max_tokens
            self._held_base += seq.prompt_tokens
            if seq.adapter is not None:
                self._lora_users[seq.adapter] = self._lora_users.get(seq.adapter, 0) + 1
            c = self.counters
            c.prompt_tokens += seq.prompt_tokens
            c.prompt_tokens_cached += seq.cached_tokens
            c.prefix_queries += seq.prompt_tokens
            c.prefix_hits += seq.cached_tokens
            admitted.append(seq)
        self._waiting = kept
        return prefill_ms(uncached) + lora_ms, admitted

    def _acquire_lora(self, adapter: str | None) -> tuple[bool, float]:
        """Make the adapter resident; returns (admissible, load time ms)."""
        if adapter is None:
            return True, 0.0
        if adapter in self._loras:
            self._loras.move_to_end(adapter)
            return True, 0.0
        if len(self._loras) >= self.config.max_loras:
            victim = next((a for a in self._loras if self._lora_users.get(a, 0) == 0), None)
            if victim is None:
                return False, 0.0
            del self._loras[victim]
        self._loras[adapter] = None
        self.counters.lora_loads += 1
        return True, self.config.lora_load_ms

    def _advance(self, steps: int) -> None:
        self.counters.generation_tokens += steps * len(self._running)
        still: list[Sequence] = []
        finished: list[Sequence] = []
        for seq in self._running:
            if seq.token_times is not None:
                added = min(steps, seq.max_tokens - seq.generated)
                start = self._seg_start + self._seg_first
                seq.token_times.extend(start + j * self._seg_step for j in range(added))
            seq.generated = min(seq.max_tokens, seq.generated + steps)
            (finished if seq.generated >= seq.max_tokens else still).append(seq)
        self._running = still
        self._held_base = sum(s.prompt_tokens + s.generated for s in still)
        for seq in finished:
            self._release(seq)
            self._finish(seq, "length")

    def _release(self, seq: Sequence) -> None:
        seq.running = False
        self._kv_reserved -= seq.prompt_tokens + seq.max_tokens
        if self._in_segment:
            self._held_base -= seq.prompt_tokens + seq.generated
        if seq.adapter is not None:
            users = self._lora_users.get(seq.adapter, 0) - 1
            if users > 0:
                self._lora_users[seq.adapter] = users
            else:
                self._lora_users.pop(seq.adapter, None)

    def _finish(self, seq: Sequence, reason: str) -> None:
        seq.running = False
        if not seq.done.done():
            seq.done.set_result(reason)
            self.counters.success_by_reason[reason] = self.counters.success_by_reason.get(reason, 0) + 1

    async def _sleep_or_wake(self, delay: float | None) -> bool:
        """Sleep for delay seconds (None: forever) or until _wake(); True if woken."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiter = waiter
        handle = None
        if delay is not None:
            handle = loop.call_later(max(0.0, delay), _resolve, waiter, False)
        try:
            return await waiter
        finally:
            if handle is not None:
                handle.cancel()
            self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None:
            _resolve(self._waiter, True)


__all__ = ["TTFT_BUCKETS", "Engine", "EngineConfig", "EngineCounters", "EngineSnapshot", "Sequence"]


def _resolve(fut: asyncio.Future[bool], value: bool) -> None:
    if not fut.done():
        fut.set_result(value)


def wall_time() -> float:
    """Unix time, for metric values that are timestamps."""
    return time.time()
