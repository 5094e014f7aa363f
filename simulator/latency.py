"""Latency model of one model server, fitted to the H100 measurements in docs/model-server-latency.md.

A Llama-3-8B-shaped transformer (bf16, CUDA graphs) on one H100 80GB:
decode step ms ~= 6.0 + 0.009 x running sequences + 0.042 x KV tokens held (thousands);
prefill ms ~= 5 + 0.0225 x uncached prompt tokens; about 420k KV tokens fit on the GPU.
"""

from __future__ import annotations

DECODE_BASE_MS = 6.0
DECODE_PER_SEQ_MS = 0.009
DECODE_PER_KTOKEN_MS = 0.042
PREFILL_BASE_MS = 5.0
PREFILL_PER_TOKEN_MS = 0.0225
H100_KV_CACHE_TOKENS = 420_000
LORA_LOAD_MS = 25.0
CHARS_PER_TOKEN = 4


def decode_step_ms(running: int, kv_tokens_held: float) -> float:
    """One decode iteration over the whole running batch."""
    return DECODE_BASE_MS + DECODE_PER_SEQ_MS * running + DECODE_PER_KTOKEN_MS * kv_tokens_held / 1000.0


def prefill_ms(uncached_prompt_tokens: int) -> float:
    """Prefill of the prompt tokens a step admits (summed over sequences); cached prefixes cost nothing."""
    if uncached_prompt_tokens <= 0:
        return 0.0
    return PREFILL_BASE_MS + PREFILL_PER_TOKEN_MS * uncached_prompt_tokens


def count_tokens(text_bytes: int) -> int:
    """Token count of a text of this many UTF-8 bytes (about 4 bytes a token; at least one)."""
    return max(1, -(-text_bytes // CHARS_PER_TOKEN))
