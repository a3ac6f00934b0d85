"""The training loop's shortcuts change speed, never the loss: shared-prefix batches, the
contiguous head input and head-sharing attention give the plain path's loss and gradients and
leave nothing behind; sparse dropout drops with nn.Dropout's distribution."""

from __future__ import annotations

import pytest

from oppu.shared.llm.batching import shared_prompt_prefix, tokenize_example
from oppu.shared.llm.gqa_attention import GQA_SDPA, gqa_sdpa
from oppu.shared.llm.training import (
    MIN_SHARED_PREFIX,
    batch_loss,
    contiguous_head_input,
    frozen_weights_in_bf16,
)
from oppu.shared.personal.peft_methods import PeftSettings
from oppu.shared.personal.private_adapter import attach_fresh_adapter, detach_adapter
from oppu.shared.tasks import get_task

CATEGORIES = ("politics", "sports", "food & drink", "travel")


def _batch(tokenizer):
    task = get_task("LaMP_2N")
    items = [{"id": str(i), "title": f"Headline number {i}", "text": f"A story {i} " * (i + 1),
              "category": CATEGORIES[i % 4]} for i in range(4)]
    examples = [task.example_from_item(item, [], labels=CATEGORIES) for item in items]
    return [tokenize_example(tokenizer, ex, 256) for ex in examples]


def _loss_and_grads(model, batch, pad_id, *, share_prefix: bool, contiguous: bool,
                    gqa: bool = False):
    import contextlib

    import torch

    model.zero_grad(set_to_none=True)
    with contextlib.ExitStack() as stack:
        if contiguous:
            stack.enter_context(contiguous_head_input(model))
        if gqa:
            assert stack.enter_context(gqa_sdpa(model))  # SmolLM2: 9 query heads, 3 kv heads
        loss, _ = batch_loss(model, batch, pad_id, torch.device("cpu"),
                             share_prefix=share_prefix)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return float(loss.detach()), grads


@pytest.mark.slow
def test_shortcuts_give_the_plain_loss_and_gradients(base) -> None:
    batch = _batch(base.tokenizer)
    assert shared_prompt_prefix(batch) >= MIN_SHARED_PREFIX  # the prefix path is taken
    pad = base.tokenizer.pad_token_id
    model = attach_fresh_adapter(base.model, PeftSettings(method="lora", dropout=0.0))
    try:
        for _name, module in model.named_modules():  # B starts at 0: give it a real gradient
            if hasattr(module, "lora_B"):
                for layer in module.lora_B.values():
                    layer.weight.data.normal_(0, 0.02)
        plain_loss, plain = _loss_and_grads(model, batch, pad, share_prefix=False,
                                            contiguous=False)
        for share, contiguous, gqa in ((True, False, False), (False, True, False),
                                       (False, False, True), (True, True, True)):
            loss, grads = _loss_and_grads(model, batch, pad, share_prefix=share,
                                          contiguous=contiguous, gqa=gqa)
            assert loss == pytest.approx(plain_loss, rel=1e-4)
            for name, grad in grads.items():
                scale = float(plain[name].abs().max()) + 1e-12
                assert float((grad - plain[name]).abs().max()) / scale < 2e-3, name
        head = model.get_output_embeddings()
        assert not head._forward_pre_hooks  # the hook left with the context
        assert model.config._attn_implementation == "sdpa"  # and the attention came back
    finally:
        detach_adapter(model)


def _tiny_gqa_llama(attn: str = "sdpa"):
    """A 2-layer Llama sharing each key/value head between 2 query heads; no files needed."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=128, attn_implementation=attn)
    return LlamaForCausalLM(config)


def _tiny_batch():
    from oppu.shared.llm.batching import IGNORE, Tokenized

    prompt = list(range(3, 23))  # a 20-token shared prefix, then rows of different lengths
    rows = [prompt + [30 + i] * (2 + 3 * i) + [40 + i, 41] for i in range(3)]
    return [Tokenized(ids, [IGNORE] * (len(ids) - 2) + ids[-2:], False) for ids in rows]


@pytest.mark.parametrize("share_prefix", [False, True])
def test_head_sharing_attention_gives_the_same_loss_and_gradients(share_prefix: bool) -> None:
    import torch

    model = _tiny_gqa_llama()
    model.train()
    batch = _tiny_batch()

    def loss_and_grads():
        model.zero_grad(set_to_none=True)
        loss, _ = batch_loss(model, batch, 0, torch.device("cpu"), share_prefix=share_prefix)
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}

    plain_loss, plain = loss_and_grads()
    with gqa_sdpa(model) as switched:
        assert switched and model.config._attn_implementation == GQA_SDPA
        loss, grads = loss_and_grads()
    assert model.config._attn_implementation == "sdpa"
    assert loss == pytest.approx(plain_loss, rel=1e-5)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, plain[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("share_prefix", [False, True])
def test_attention_runs_in_fp32_under_cpu_autocast(monkeypatch, share_prefix: bool) -> None:
    """Under bf16 autocast the attention kernel still gets fp32 inputs (its bf16 backward was
    3.5x slower on CPU); the loss is the fp32 one within bf16's rounding."""
    import torch

    model = _tiny_gqa_llama()
    model.train()
    seen = []
    kernel = torch.nn.functional.scaled_dot_product_attention

    def spy(query, key, value, *args, **kwargs):
        seen.append((query.dtype, key.dtype, value.dtype, torch.is_autocast_enabled("cpu")))
        return kernel(query, key, value, *args, **kwargs)

    fp32_loss, _ = batch_loss(model, _tiny_batch(), 0, torch.device("cpu"),
                              share_prefix=share_prefix)
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    with gqa_sdpa(model), torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = batch_loss(model, _tiny_batch(), 0, torch.device("cpu"),
                             share_prefix=share_prefix)
    loss.backward()
    assert seen and set(seen) == {(torch.float32, torch.float32, torch.float32, False)}
    assert loss.item() == pytest.approx(fp32_loss.item(), rel=2e-2)


def test_frozen_weights_held_in_bf16_give_autocasts_numbers_and_come_back() -> None:
    """Holding the frozen weights in bf16 only saves autocast's casts: the same loss and
    gradients to the bit, the adapter still fp32, and the very fp32 weights back on exit."""
    import torch
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(_tiny_gqa_llama(), LoraConfig(r=4, target_modules=["q_proj",
                                                                               "v_proj"]))
    model.train()
    originals = {n: p for n, p in model.named_parameters()}

    def loss_and_grads():
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, _ = batch_loss(model, _tiny_batch(), 0, torch.device("cpu"), share_prefix=True)
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()
                             if p.requires_grad}

    plain_loss, plain = loss_and_grads()
    with frozen_weights_in_bf16(model, enabled=True):
        held = {n: p.dtype for n, p in model.named_parameters()}
        loss, grads = loss_and_grads()
    assert held["base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight"] == (
        torch.bfloat16)
    assert {held[n] for n, p in originals.items() if p.requires_grad} == {torch.float32}
    assert loss == plain_loss
    for name, grad in grads.items():
        assert torch.equal(grad, plain[name]), name
    assert all(p is originals[n] for n, p in model.named_parameters())


def test_head_sharing_attention_leaves_other_models_alone() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    eager = _tiny_gqa_llama("eager")
    with gqa_sdpa(eager) as switched:
        assert not switched and eager.config._attn_implementation == "eager"
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=4,
                         attn_implementation="sdpa")
    no_sharing = LlamaForCausalLM(config)
    with gqa_sdpa(no_sharing) as switched:
        assert not switched and no_sharing.config._attn_implementation == "sdpa"


# ---- sparse dropout ------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.05, 0.3, 0.7])
def test_sparse_dropout_drops_like_nn_dropout(p: float) -> None:
    import math

    import torch

    from oppu.shared.llm.sparse_dropout import SparseDropout

    torch.manual_seed(0)
    rows, cols = 400, 1000
    x = torch.ones(rows, cols, requires_grad=True)
    out = SparseDropout(p).train()(x)
    dropped = out == 0
    n = rows * cols
    assert abs(float(dropped.float().mean()) - p) < 5 * math.sqrt(p * (1 - p) / n)
    assert torch.equal(out[~dropped], torch.full_like(out[~dropped], 1 / (1 - p)))
    per_row = dropped.float().sum(dim=1)  # binomial(cols, p) per row
    assert float(per_row.std()) == pytest.approx(math.sqrt(cols * p * (1 - p)), rel=0.15)
    halves = dropped.view(-1).chunk(2)
    assert abs(float(halves[0].float().mean() - halves[1].float().mean())) < 0.01
    pairs = (dropped[:, :-1] & dropped[:, 1:]).float().mean()  # neighbours independent
    assert float(pairs) == pytest.approx(p * p, rel=0.1)
    out.backward(torch.ones_like(out))  # gradient: 1/(1-p) where kept, 0 where dropped
    assert torch.equal(x.grad, (~dropped).float() / (1 - p))


def test_sparse_dropout_is_the_identity_when_not_training() -> None:
    import torch

    from oppu.shared.llm.sparse_dropout import SparseDropout

    x = torch.randn(7, 11)
    assert torch.equal(SparseDropout(0.05).eval()(x), x)
    assert torch.equal(SparseDropout(0.0).train()(x), x)
    assert SparseDropout(0.05).train()(torch.empty(0, 4)).shape == (0, 4)


def test_dropped_positions_stay_exact_past_float32_integers() -> None:
    import torch

    from oppu.shared.llm.sparse_dropout import dropped_positions

    torch.manual_seed(0)
    n = 2**25 + 3  # float32 cannot count this far one by one
    positions = dropped_positions(n, 0.001, device=torch.device("cpu"))
    assert positions.dtype == torch.int64
    assert bool((positions[1:] > positions[:-1]).all())  # distinct, in order
    assert int(positions[0]) >= 0 and int(positions[-1]) < n
    assert int(positions[-1]) > n - 20_000  # covers the end too
    assert len(positions) == pytest.approx(n * 0.001, rel=0.02)


def test_sparse_dropout_is_swapped_in_for_lora_and_put_back() -> None:
    import torch
    from peft import LoraConfig, get_peft_model

    from oppu.shared.llm.sparse_dropout import SparseDropout, sparse_dropout

    model = get_peft_model(_tiny_gqa_llama(), LoraConfig(r=4, lora_dropout=0.05,
                                                         target_modules=["q_proj", "v_proj"]))
    model.train()
    originals = {name: m for name, m in model.named_modules() if type(m) is torch.nn.Dropout}
    assert len(originals) == 4  # 2 layers x (q, v)
    with sparse_dropout(model) as swapped:
        assert swapped == 4
        inside = {name: type(m) for name, m in model.named_modules() if name in originals}
        assert set(inside.values()) == {SparseDropout}
        model(input_ids=torch.tensor([[1, 2, 3, 4]])).logits.sum().backward()
    after = {name: m for name, m in model.named_modules() if name in originals}
    assert all(after[name] is module for name, module in originals.items())


@pytest.mark.slow
def test_each_epoch_end_is_told_how_many_epochs_are_done(base) -> None:
    """The base check and the recipe choice key their scores by this count: off by one, they
    would keep (and report) another epoch than the one they scored."""
    from oppu.shared.llm.training import TrainSettings, train_loop

    batch = _batch(base.tokenizer)
    model = attach_fresh_adapter(base.model, PeftSettings(method="lora"))
    try:
        told: list[int] = []
        report = train_loop(model, batch, TrainSettings(batch_size=4, lr=1e-3), epochs=3,
                            pad_id=base.tokenizer.pad_token_id, show_progress=False,
                            on_epoch_end=lambda done: told.append(done) or done == 2)
    finally:
        detach_adapter(model)
    assert told == [1, 2]  # stopped after the second epoch, as asked
    assert report.steps == 2


@pytest.mark.parametrize("share_prefix", [False, True])
def test_memory_chunks_give_the_whole_batch_loss_and_gradients(share_prefix: bool) -> None:
    """A batch over the position budget runs as several forward/backward passes; weighted by
    their answer tokens, they give the one-pass loss and gradients."""
    import torch

    from oppu.shared.llm.batching import IGNORE, Tokenized
    from oppu.shared.llm.training import batch_backward, batch_positions, memory_chunks

    model = _tiny_gqa_llama()
    model.train()
    batch = [*_tiny_batch(),  # answers of different lengths weigh their chunks differently
             Tokenized([*range(3, 23), 50, 51, 52, 53, 54],
                       [IGNORE] * 21 + [51, 52, 53, 54])]
    model.zero_grad(set_to_none=True)
    whole, tokens = batch_loss(model, batch, 0, torch.device("cpu"), share_prefix=share_prefix)
    whole.backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters()}

    budget = batch_positions(batch[:2], share_prefix=share_prefix)
    chunks = memory_chunks(batch, budget, share_prefix=share_prefix)
    assert len(chunks) >= 2 and sum(len(c) for c in chunks) == len(batch)
    assert all(batch_positions(c, share_prefix=share_prefix) <= budget for c in chunks)
    model.zero_grad(set_to_none=True)
    loss, chunked_tokens = batch_backward(model, batch, 0, torch.device("cpu"),
                                          share_prefix=share_prefix, max_positions=budget,
                                          use_bf16=False)
    assert chunked_tokens == tokens
    assert loss == pytest.approx(float(whole), rel=1e-5)
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, plain[name], rtol=1e-4, atol=1e-6, msg=name)


def test_a_batch_within_the_budget_runs_in_one_pass() -> None:
    """Every k=0 LaMP batch fits: the short path is the one it always was."""
    from oppu.shared.llm.training import MAX_POSITIONS, batch_positions, memory_chunks

    batch = _tiny_batch()
    assert batch_positions(batch, share_prefix=True) < batch_positions(batch, share_prefix=False)
    assert memory_chunks(batch, MAX_POSITIONS, share_prefix=True) == [batch]
    one_row = memory_chunks(batch, 1, share_prefix=False)  # a row over budget still runs
    assert [len(c) for c in one_row] == [1, 1, 1]


def test_kv_cache_path_uses_no_deprecated_argument(monkeypatch) -> None:
    """transformers 5.24 renamed ``past_key_values`` to ``cache`` and drops the old name in
    5.40: the prefix-sharing loss must already use the new one."""
    import torch
    from transformers.utils import generic

    warned: list[str] = []
    monkeypatch.setattr(generic.logger, "warning_once", lambda msg, *a, **k: warned.append(msg))
    loss, _ = batch_loss(_tiny_gqa_llama(), _tiny_batch(), 0, torch.device("cpu"),
                         share_prefix=True)
    assert torch.isfinite(loss)
    assert not [msg for msg in warned if "past_key_values" in msg]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_label_scoring_matches_one_row_per_label(attn: str) -> None:
    """Queries packed into one pass, their labels after their prompts under a block mask,
    score exactly as separate rows: a label that is only EOS, labels sharing first tokens,
    prompts of different lengths, and after a shared prefix in the cache."""
    import torch

    from oppu.shared.llm.inference import (
        _label_logprobs_full,
        _label_logprobs_packed,
        _prefix_cache,
    )

    model = _tiny_gqa_llama(attn).eval()
    prefix = list(range(3, 23))
    queries = [([50, 51, 52], [[30, 31, 2], [30, 2], [2], [40, 41, 42, 43, 2]]),
               ([53], [[30, 31, 32, 2], [30, 2]]),
               ([54, 55, 56, 57, 58, 59], [[44, 2], [2], [45, 46, 2]])]
    with torch.inference_mode():
        alone = [_label_logprobs_full(model, prefix + prompt, labels, 0)
                 for prompt, labels in queries]
        packed = _label_logprobs_packed(model, [(prefix + p, labels) for p, labels in queries])
        cache = _prefix_cache(model, prefix)
        after_prefix = _label_logprobs_packed(model, queries, cache)
        assert cache.get_seq_length() == len(prefix)  # left as it was found
        again = _label_logprobs_packed(model, queries[1:], cache)
    for expected, got, cached in zip(alone, packed, after_prefix, strict=True):
        assert torch.allclose(got, expected, atol=1e-5)
        assert torch.allclose(cached, expected, atol=1e-5)
    for expected, got in zip(alone[1:], again, strict=True):
        assert torch.allclose(got, expected, atol=1e-5)
