"""The training loop's shortcuts change speed, never the loss: shared-prefix batches and the
contiguous head input give the plain path's loss and gradients, and leave no hook behind."""

from __future__ import annotations

import pytest

from oppu.client.peft_methods import PeftSettings
from oppu.client.personalize import attach_fresh_adapter, detach_adapter
from oppu.shared.batching import shared_prompt_prefix, tokenize_example
from oppu.shared.tasks import get_task
from oppu.shared.training import MIN_SHARED_PREFIX, batch_loss, contiguous_head_input

CATEGORIES = ("politics", "sports", "food & drink", "travel")


def _batch(tokenizer):
    task = get_task("LaMP_2N")
    items = [{"id": str(i), "title": f"Headline number {i}", "text": f"A story {i} " * (i + 1),
              "category": CATEGORIES[i % 4]} for i in range(4)]
    examples = [task.example_from_item(item, [], labels=CATEGORIES) for item in items]
    return [tokenize_example(tokenizer, ex, 256) for ex in examples]


def _loss_and_grads(model, batch, pad_id, *, share_prefix: bool, contiguous: bool):
    import torch

    model.zero_grad(set_to_none=True)
    if contiguous:
        with contiguous_head_input(model):
            loss, _ = batch_loss(model, batch, pad_id, torch.device("cpu"),
                                 share_prefix=share_prefix)
    else:
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
        for share, contiguous in ((True, False), (False, True), (True, True)):
            loss, grads = _loss_and_grads(model, batch, pad, share_prefix=share,
                                          contiguous=contiguous)
            assert loss == pytest.approx(plain_loss, rel=1e-4)
            for name, grad in grads.items():
                scale = float(plain[name].abs().max()) + 1e-12
                assert float((grad - plain[name]).abs().max()) / scale < 2e-3, name
        head = model.get_output_embeddings()
        assert not head._forward_pre_hooks  # the hook left with the context
    finally:
        detach_adapter(model)
