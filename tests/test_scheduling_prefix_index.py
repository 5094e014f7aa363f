"""Prompt block hashing and the per-endpoint LRU prefix index."""

from __future__ import annotations

from picker.scheduling.prefix_index import PrefixIndex, prompt_hashes


def test_hash_chain_shape() -> None:
    assert prompt_hashes("abc", "m", 4) == ()
    hashes = prompt_hashes("abcdefghij", "m", 4)  # two full blocks, partial tail ignored
    assert len(hashes) == 2
    assert prompt_hashes("abcdefgh", "m", 4) == hashes
    # Chained: the same second block after a different first block hashes differently.
    assert prompt_hashes("zzzzefgh", "m", 4)[1] != hashes[1]
    assert prompt_hashes("abcdefgh", "other-model", 4) != hashes
    assert len(prompt_hashes("x" * 20_000, "m", 64, max_blocks=256)) == 256


def test_match_counts_leading_blocks_only() -> None:
    index = PrefixIndex(100)
    hashes = prompt_hashes("a" * 40, "m", 4)  # 10 blocks
    index.record("e1", hashes[:3])
    index.record("e2", hashes)
    index.record("e3", hashes[:1] + hashes[2:])  # gap at block 1
    assert index.match(hashes) == {"e1": 3, "e2": 10, "e3": 1}
    assert index.match(()) == {}
    assert index.match(prompt_hashes("b" * 8, "m", 4)) == {}


def test_lru_evicts_oldest_blocks_per_endpoint() -> None:
    index = PrefixIndex(capacity_per_endpoint=3)
    old = prompt_hashes("o" * 12, "m", 4)
    new = prompt_hashes("n" * 12, "m", 4)
    index.record("e1", old)
    index.record("e2", old)
    index.record("e1", new)  # e1 forgets `old`, e2 keeps it
    assert index.match(old) == {"e2": 3}
    assert index.match(new) == {"e1": 3}
    assert index.blocks_held("e1") == 3


def test_under_capacity_pressure_a_prompt_loses_its_tail_before_its_head() -> None:
    """As vLLM evicts: an older prompt still matches by its head when a newer one needs room."""
    index = PrefixIndex(capacity_per_endpoint=12)
    old = prompt_hashes("o" * 40, "m", 4)  # 10 blocks
    new = prompt_hashes("n" * 20, "m", 4)  # 5 blocks: 3 of `old` must go
    index.record("e1", old)
    index.record("e1", new)
    assert index.match(old) == {"e1": 7}
    assert index.match(new) == {"e1": 5}
    # A prompt longer than the capacity keeps its head.
    small = PrefixIndex(capacity_per_endpoint=4)
    small.record("e1", old)
    assert small.match(old) == {"e1": 4}


def test_forget_drops_endpoint() -> None:
    index = PrefixIndex(10)
    hashes = prompt_hashes("q" * 8, "m", 4)
    index.record("e1", hashes)
    index.record("e2", hashes)
    index.forget(["e1", "unknown"])
    assert index.match(hashes) == {"e2": 2}
    assert index.endpoints() == frozenset({"e2"})
