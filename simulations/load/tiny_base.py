"""The load test's base: a tiny random-init Llama, so the cost measured is the federation's.

2 layers, hidden 64, the embedded SmolLM2 tokenizer: ~3 M parameters, 13 MB. Built once as a
signed-manifest BaseStore artifact and cached under ``$OPPU_HOME/load-test``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TINY_MODEL_ID = "tiny-llama-2x64-random"
TINY_SEED = 1234
TINY_DIMS = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 4}


def tiny_base_dir() -> Path:
    from oppu.shared.paths import oppu_home

    return oppu_home() / "load-test" / TINY_MODEL_ID


def build_tiny_base(target: Path) -> Path:
    """A random-init 2-layer Llama with the embedded tokenizer, as a BaseStore artifact."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    from oppu.shared.atomic import atomic_directory
    from oppu.shared.llm.base_artifact import verify_artifact, write_manifest
    from oppu.shared.llm.model import load_tokenizer

    tokenizer = load_tokenizer(None)
    config = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=2048,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, **TINY_DIMS)
    torch.manual_seed(TINY_SEED)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    params = sum(p.numel() for p in model.parameters())
    with atomic_directory(target) as scratch:
        model.save_pretrained(scratch, safe_serialization=True)
        tokenizer.save_pretrained(scratch)
        write_manifest(scratch, model_id=TINY_MODEL_ID, task="LaMP_2N", variant="plain",
                       training={"random_init_seed": TINY_SEED, "parameters": params,
                                 **TINY_DIMS})
    verify_artifact(target)
    return target


def ensure_tiny_base() -> Path:
    """The cached tiny base; built in a child process so torch never loads in this one
    (this process is part of the measured tree)."""
    from oppu.shared.llm.base_artifact import MANIFEST_FILE

    target = tiny_base_dir()
    if not (target / MANIFEST_FILE).is_file():
        subprocess.run([sys.executable, "-m", "oppu.simulations.load_test", "--build-base",
                        str(target)], check=True)
    return target
