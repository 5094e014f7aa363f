"""Block-hashed prompt prefix cache with LRU eviction (what vLLM's automatic prefix caching does)."""

from __future__ import annotations

from collections import OrderedDict

import xxhash

from simulator.latency import CHARS_PER_TOKEN


def prompt_block_hashes(prompt: bytes, block_tokens: int, salt: str = "") -> list[int]:
    """Hash chain over the full blocks of a prompt; each hash covers its whole prefix (and the salt)."""
    block_bytes = block_tokens * CHARS_PER_TOKEN
    hashes: list[int] = []
    parent = xxhash.xxh64_intdigest(salt.encode())
    for start in range(0, len(prompt) - block_bytes + 1, block_bytes):
        parent = xxhash.xxh64_intdigest(parent.to_bytes(8, "little") + prompt[start : start + block_bytes])
        hashes.append(parent)
    return hashes


class PrefixCache:
    """Resident KV blocks by prefix hash; capacity in blocks, least recently used evicted first."""

    def __init__(self, capacity_blocks: int) -> None:
        self._capacity = max(0, capacity_blocks)
        self._blocks: OrderedDict[int, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._blocks)

    def lookup_and_insert(self, hashes: list[int]) -> int:
        """Number of leading blocks already cached; afterwards every block of the prompt is cached."""
        hit = 0
        for h in hashes:
            if h not in self._blocks:
                break
            self._blocks.move_to_end(h)
            hit += 1
        for h in hashes[hit:]:
            self._blocks[h] = None
        while len(self._blocks) > self._capacity:
            self._blocks.popitem(last=False)
        return hit

    def clear(self) -> None:
        self._blocks.clear()
