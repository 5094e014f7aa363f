"""Builds a tiny random Llama, a byte-level tokenizer and LoRA adapters; runs inside the vLLM venv.

Invoked by ``hack.vllm.setup`` as ``<vllm-venv>/bin/python build_tiny_model.py '<json spec>'``; it must
not import the project (its venv has transformers/peft/torch, the project's has not). Nothing is fetched
from a hub: the tokenizer and weights are made here from fixed seeds.
"""

# mypy: disable-error-code="import-not-found"
# (torch, transformers, tokenizers and peft exist only in the vLLM venv, not in the project venv)

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# Shapes vLLM's CPU build accepts: head_dim 64 (hidden 128 / 2 heads); head_dim 16 is rejected.
HIDDEN = 128
HEADS = 2
LAYERS = 2
INTERMEDIATE = 256
MAX_POSITIONS = 2048
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")


def build_tokenizer(out: Path) -> Any:
    """A byte-level BPE without merges: every byte is a token, so any text round-trips."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for char in sorted(alphabet):
        vocab[char] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="</s>",
        model_max_length=MAX_POSITIONS,
    )
    tokenizer.save_pretrained(out)
    return tokenizer


def build_model(out: Path, tokenizer: Any) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1234)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN,
        num_attention_heads=HEADS,
        num_key_value_heads=HEADS,
        num_hidden_layers=LAYERS,
        intermediate_size=INTERMEDIATE,
        max_position_embeddings=MAX_POSITIONS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    # bfloat16 on disk: the dtype the server runs in, so vLLM loads without casting every weight.
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)


def build_adapter(model_dir: Path, final_model_dir: Path, out: Path, seed: int, rank: int) -> None:
    """A LoRA on q_proj/v_proj with random non-zero A and B, so each adapter changes the output."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    base = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16)
    config = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        target_modules=["q_proj", "v_proj"],
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
        init_lora_weights=False,  # peft's default leaves B at zero, which would make adapters no-ops
    )
    torch.manual_seed(seed)
    peft_model = get_peft_model(base, config)
    peft_model.save_pretrained(out, safe_serialization=True)
    # Point the adapter at where the base model will live after the atomic rename.
    config_path = out / "adapter_config.json"
    saved = json.loads(config_path.read_text())
    saved["base_model_name_or_path"] = str(final_model_dir)
    config_path.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")


def main() -> int:
    spec = json.loads(sys.argv[1])
    out = Path(spec["out"])
    final = Path(spec["final"])
    model_dir = out / "model"
    tokenizer = build_tokenizer(model_dir)
    build_model(model_dir, tokenizer)
    for index, name in enumerate(spec["adapters"]):
        build_adapter(model_dir, final / "model", out / "adapters" / name, 100 + index, spec["lora_rank"])
    print(json.dumps({"vocab_size": len(tokenizer), "adapters": spec["adapters"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
