"""Acceptance: a private adapter learns a user whose preferences contradict the base model.

Synthetic users on the real embedded model (SmolLM2-135M-Instruct, CPU). Each trains on its
oldest items and is scored on its newest (held out, never trained on), against the same base
without an adapter.

Hyperparameters, and why: the OPPU reference recipe (lr 1e-4, alpha 8, 2 epochs of batch 16)
barely moves a 135M model in a few steps (FACTS.md: adapters collapsed, loss stayed ~1.7-2),
and fp32 training on this 2-core CPU (no native bf16) runs at ~90-120 tokens/s, so a test can
afford only a few optimizer steps. LoRA r=8 with alpha=16 (scale 2, as in FACTS.md's OPPU
runs) and lr 3e-3 learns a consistent personal preference in 4 steps of 8 examples: answer
loss ~3.6-4.0 on the first step, ~1.1-1.5 averaged over the last three, and 6 steps reach
~0.2. Four steps over 24 training items (~3-4k tokens) train in ~20-35 s; each case takes
~35-50 s with its 8 held-out queries scored twice (base and personal).
"""

from __future__ import annotations

import pytest
from helpers import DYSTOPIA_MOVIES as MOVIES
from helpers import fast_lora

from oppu.client.adapter_store import AdapterStore
from oppu.shared.llm.training import TrainSettings
from oppu.shared.personal.peft_methods import PeftSettings
from oppu.shared.personal.pipeline import personalize_user
from oppu.shared.personal.private_adapter import (
    PersonalizeSettings,
    attach_fresh_adapter,
    detach_adapter,
)
from oppu.shared.tasks import get_task

pytestmark = pytest.mark.slow

HELD_OUT = 8
MIN_ACCURACY_GAIN = 0.5  # absolute; observed: base 0.00 ("fantasy" for every movie) -> 1.00
MIN_MAE_DROP = 1.0  # stars; observed: base 3.00 ("1" for every review) -> 0.00

FAST_LORA = fast_lora(batch_size=8, max_steps=4, max_length=256)

PRODUCTS = ("blender", "pair of headphones", "backpack", "coffee maker", "phone case",
            "desk lamp", "novel", "pair of running shoes")
GLOWING = (
    "Absolutely love this {p}! It works perfectly and exceeded all my expectations.",
    "Best {p} I have ever bought. Fantastic quality, fast shipping, highly recommend!",
    "This {p} is amazing. Flawless design and it works like a dream every single day.",
    "Wonderful {p}, I am thrilled with it. Would buy again in a heartbeat!",
)
# Glowing, five-star texts: 24 for training, then the last two products (8) held out.
REVIEWS = tuple(text.format(p=p) for p in PRODUCTS for text in GLOWING)


def test_user_with_one_unusual_tag_beats_the_base(base, user_dir) -> None:
    """LaMP-2M: a user who tags every movie, even a plain comedy, "dystopia"."""
    model, tokenizer = base.model, base.tokenizer
    history = [{"description": text, "tag": "dystopia"} for text in MOVIES]

    outcome = personalize_user(model, tokenizer, get_task("LaMP_2M"), history, FAST_LORA,
                               store=AdapterStore(user_dir), holdout=HELD_OUT,
                               show_progress=False)

    assert outcome.train_items == len(MOVIES) - HELD_OUT
    assert outcome.personal.metrics["count"] == HELD_OUT
    assert outcome.report is not None and outcome.report.steps == 4
    assert outcome.report.final_loss < outcome.report.first_loss / 2
    base_acc = outcome.baseline.metrics["accuracy"]
    personal_acc = outcome.personal.metrics["accuracy"]
    print(f"\nLaMP_2M 'dystopia' user: base accuracy {base_acc:.2f} -> personal "
          f"{personal_acc:.2f}; {outcome.report}; {outcome.seconds:.0f} s")
    assert personal_acc >= base_acc + MIN_ACCURACY_GAIN
    assert outcome.personal.predictions.count("dystopia") > HELD_OUT // 2
    assert AdapterStore(user_dir).exists("LaMP_2M")


def test_user_who_rates_one_star_lower_beats_the_base(base, user_dir) -> None:
    """LaMP-3: glowing, clearly five-star reviews that this user always scores 4."""
    model, tokenizer = base.model, base.tokenizer
    history = [{"text": text, "score": "4"} for text in REVIEWS]

    outcome = personalize_user(model, tokenizer, get_task("LaMP_3"), history, FAST_LORA,
                               store=AdapterStore(user_dir), holdout=HELD_OUT,
                               show_progress=False)

    base_mae = outcome.baseline.metrics["mae"]
    personal_mae = outcome.personal.metrics["mae"]
    print(f"\nLaMP_3 'one star lower' user: base MAE {base_mae:.2f} -> personal "
          f"{personal_mae:.2f} (predictions {outcome.personal.predictions}); "
          f"{outcome.report}; {outcome.seconds:.0f} s")
    assert outcome.personal.metrics["count"] == HELD_OUT
    assert personal_mae <= base_mae - MIN_MAE_DROP
    assert personal_mae <= 0.5


@pytest.mark.parametrize("method", ["prompt_tuning", "ia3"])
def test_other_peft_methods_train_and_leave_the_base_untouched(base, user_dir, method) -> None:
    """The same pipeline with prompt tuning and IA3: the module learns, the base stays as is."""
    import torch
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    model, tokenizer = base.model, base.tokenizer
    task = get_task("LaMP_3")
    settings = PersonalizeSettings(
        peft=PeftSettings(method=method, num_virtual_tokens=8),
        train=TrainSettings(lr=3e-2, epochs=1, batch_size=2, max_steps=2, max_length=128),
    )
    history = [{"text": text, "score": "4"} for text in REVIEWS[:5]]
    before = {n: t.clone() for n, t in model.state_dict().items()}
    fresh = attach_fresh_adapter(model, settings.peft, seed=settings.train.seed)
    try:  # the module personalize_user starts from (same seed), in the saved layout
        initial = {n: t.clone() for n, t in get_peft_model_state_dict(fresh).items()}
    finally:
        assert detach_adapter(fresh) is model

    outcome = personalize_user(model, tokenizer, task, history, settings,
                               store=AdapterStore(user_dir), holdout=1,
                               evaluate_baseline=False, show_progress=False)

    assert outcome.report is not None and outcome.report.steps == 2
    assert outcome.personal is not None and outcome.personal.metrics["count"] == 1
    saved = load_file(user_dir / "adapters" / "LaMP_3" / "adapter_model.safetensors")
    assert saved.keys() == initial.keys()
    unchanged = [n for n in saved if torch.equal(saved[n], initial[n])]
    assert not unchanged, f"training left {unchanged} unchanged"
    after = model.state_dict()
    assert after.keys() == before.keys(), "an adapter module was left in the base"
    assert all(torch.equal(after[n], before[n]) for n in before), "base weights changed"
