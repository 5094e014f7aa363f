"""`prefix-cache-scorer`: prefer endpoints recently sent the longest prefix of this prompt.

Score = leading prompt blocks the endpoint holds / max(prompt blocks, fullCreditBlocks), 0 for prompts
under one block. The prefill a cache hit saves grows with the matched length, so a short prompt matched
in full earns little: otherwise identical short prompts would all herd onto one pod.
The memory is the scorer's own `PrefixIndex`, PER PICKER REPLICA, fed by its `record(decision, now)`
(the scheduler calls it after each decision carried out): two prefix scorers with different block
sizes each hash and remember the prompt their own way.

Parameters: `blockSize` (64 bytes), `maxPrefixBlocksToMatch` (256), `lruCapacityPerServer` (31250),
`fullCreditBlocks` (16 blocks, about 256 tokens).
"""

from __future__ import annotations

from collections.abc import Sequence

from picker.scheduling.columns import Candidates
from picker.scheduling.framework import CycleState, Scores
from picker.scheduling.params import Params
from picker.scheduling.prefix_index import (
    DEFAULT_BLOCK_SIZE,
    DEFAULT_LRU_CAPACITY,
    DEFAULT_MAX_BLOCKS,
    PrefixIndex,
)
from picker.scheduling.types import Decision, Endpoint

TYPE = "prefix-cache-scorer"
DEFAULT_FULL_CREDIT_BLOCKS = 16


class PrefixCacheScorer:
    TYPE = TYPE
    BOUNDED = True  # scores always in [0, 1]

    def __init__(
        self,
        index: PrefixIndex | None = None,
        block_size: int = DEFAULT_BLOCK_SIZE,
        max_blocks: int = DEFAULT_MAX_BLOCKS,
        full_credit_blocks: int = DEFAULT_FULL_CREDIT_BLOCKS,
    ) -> None:
        self.index = index if index is not None else PrefixIndex()
        self.block_size = block_size
        self.max_blocks = max_blocks
        self.full_credit_blocks = full_credit_blocks

    def hashes(self, cycle: CycleState) -> tuple[int, ...]:
        """The prompt's block hashes in this scorer's scheme, computed once per cycle."""
        return cycle.prompt_hashes(self.block_size, self.max_blocks)

    def score(self, cycle: CycleState, candidates: Sequence[Endpoint]) -> Scores:
        hashes = self.hashes(cycle)
        if not hashes:
            return 0.0
        matched = self.index.match(hashes)
        if not matched:
            return 0.0
        block = self.block_size
        cycle.note_cached_prefix({a: depth * block for a, depth in matched.items()})
        total = float(max(len(hashes), self.full_credit_blocks))
        index = Candidates.of(candidates).positions()
        # Sparse: only endpoints holding a prefix get a score; the rest are 0 without a per-endpoint pass.
        return {index[a]: depth / total for a, depth in matched.items() if a in index}

    def record(self, decision: Decision, now: float) -> None:
        """The decision's primary was sent the prompt: it now holds the prompt's blocks."""
        hashes = decision.prefix_hashes.get((self.block_size, self.max_blocks))
        if hashes:
            self.index.record(decision.primary, hashes)


def from_parameters(params: Params) -> PrefixCacheScorer:
    block_size = params.integer("blockSize", DEFAULT_BLOCK_SIZE, minimum=1)
    max_blocks = params.integer("maxPrefixBlocksToMatch", DEFAULT_MAX_BLOCKS, minimum=1)
    capacity = params.integer("lruCapacityPerServer", DEFAULT_LRU_CAPACITY, minimum=1)
    full_credit = params.integer("fullCreditBlocks", DEFAULT_FULL_CREDIT_BLOCKS, minimum=1)
    params.done()
    return PrefixCacheScorer(PrefixIndex(capacity), block_size, max_blocks, full_credit)
