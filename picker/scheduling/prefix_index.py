"""Approximate prompt-prefix memory: which endpoint was recently sent which prompt blocks.

State is PER PICKER REPLICA: each replica only knows the prompts it routed itself, so with several
replicas the affinity is weaker (not wrong). It is a guess of each server's prefix cache, not a read.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import xxhash

DEFAULT_BLOCK_SIZE = 64  # bytes of prompt per block (~16 tokens of ~4 chars)
DEFAULT_MAX_BLOCKS = 256
DEFAULT_LRU_CAPACITY = 31_250  # blocks remembered per endpoint

# How a prompt is cut into hashed blocks: (block size in bytes, max blocks). Hashes of one scheme
# mean nothing to an index fed with another.
PromptScheme = tuple[int, int]


def prompt_hashes(
    prompt: str, model: str, block_size: int = DEFAULT_BLOCK_SIZE, max_blocks: int = DEFAULT_MAX_BLOCKS
) -> tuple[int, ...]:
    """xxhash64 chain over the full blocks of the UTF-8 prompt; block i is seeded with hash i-1.

    The chain starts from the model's hash, so equal prompts to different models never match; a
    trailing partial block is ignored, and a prompt shorter than one block gives no hashes.
    """
    limit = block_size * max_blocks
    # Each character is at least one byte: cutting the text first bounds the work on huge prompts.
    data = prompt[:limit].encode("utf-8", "surrogatepass")
    count = min(len(data) // block_size, max_blocks)
    previous = xxhash.xxh64_intdigest(model.encode("utf-8", "surrogatepass"))
    hashes = []
    digest = xxhash.xxh64_intdigest
    view = memoryview(data)
    for start in range(0, count * block_size, block_size):
        previous = digest(view[start : start + block_size], previous)
        hashes.append(previous)
    return tuple(hashes)


class PrefixIndex:
    """Per-endpoint LRU of block hashes plus a reverse map hash -> endpoints, for longest-prefix lookup."""

    def __init__(self, capacity_per_endpoint: int = DEFAULT_LRU_CAPACITY) -> None:
        if capacity_per_endpoint <= 0:
            raise ValueError("capacity_per_endpoint must be positive")
        self.capacity_per_endpoint = capacity_per_endpoint
        # Per endpoint, its blocks oldest first: OrderedDict's C moves and pops make `record` cheap
        # even for long prompts (one entry per 64 bytes), which it must be, as it runs per request.
        self._blocks: dict[str, OrderedDict[int, None]] = {}
        self._holders: dict[int, set[str]] = {}

    def record(self, endpoint: str, hashes: Sequence[int]) -> None:
        """Remember that `endpoint` ("ip:port") was just sent a prompt with these block hashes.

        Deepest block first, so the prompt's head ends up the most recent: under capacity pressure a
        prompt loses its tail before its head, as vLLM frees a request's blocks tail first. A prompt
        that lost its head would match nothing, however much of it were left.
        """
        blocks = self._blocks.get(endpoint)
        if blocks is None:
            blocks = self._blocks[endpoint] = OrderedDict()
        holders = self._holders
        capacity = self.capacity_per_endpoint
        for block in reversed(hashes):
            if block in blocks:  # already held (and so in its holders set): refresh recency only
                blocks.move_to_end(block)
                continue
            blocks[block] = None
            owners = holders.get(block)
            if owners is None:
                holders[block] = {endpoint}
            else:
                owners.add(endpoint)
            if len(blocks) > capacity:
                oldest, _ = blocks.popitem(last=False)
                self._evicted(endpoint, oldest)

    def match(self, hashes: Sequence[int]) -> dict[str, int]:
        """Endpoint -> number of leading blocks of `hashes` it holds (only endpoints with >= 1)."""
        matched: dict[str, int] = {}
        if not hashes:
            return matched
        alive = self._holders.get(hashes[0])
        if not alive:
            return matched
        alive = set(alive)
        depth = 1
        holders = self._holders
        for block in hashes[1:]:
            owners = holders.get(block)
            if owners is not None and len(owners) >= len(alive) and alive <= owners:
                depth += 1  # nobody drops out here: the common case, checked without a new set
                continue
            still = alive & owners if owners else set()
            if len(still) != len(alive):
                for endpoint in alive - still:
                    matched[endpoint] = depth
                if not still:
                    return matched
                alive = still
            depth += 1
        for endpoint in alive:
            matched[endpoint] = depth
        return matched

    def forget(self, endpoints: Iterable[str]) -> None:
        """Drop everything remembered for endpoints that are gone."""
        for endpoint in endpoints:
            blocks = self._blocks.pop(endpoint, None)
            if blocks is None:
                continue
            for block in list(blocks.keys()):
                self._evicted(endpoint, block)

    def endpoints(self) -> frozenset[str]:
        return frozenset(self._blocks)

    def blocks_held(self, endpoint: str) -> int:
        blocks = self._blocks.get(endpoint)
        return len(blocks) if blocks is not None else 0

    def _evicted(self, endpoint: str, block: int) -> None:
        owners = self._holders.get(block)
        if owners is not None:
            owners.discard(endpoint)
            if not owners:
                del self._holders[block]

    def __repr__(self) -> str:
        return f"PrefixIndex(endpoints={len(self._blocks)}, blocks={len(self._holders)})"

    def stats(self) -> dict[str, Any]:
        return {"endpoints": len(self._blocks), "distinct_blocks": len(self._holders)}
