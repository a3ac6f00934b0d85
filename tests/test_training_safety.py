"""A user's adapter survives interruptions, resumes on new items only, and is plain peft.

Real embedded model on CPU, tiny histories and one or two optimizer steps per run: these
tests check what happens around training, not how well it learns (test_personalization).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from oppu.client.adapter_store import AdapterStore
from oppu.shared.data import read_history
from oppu.shared.errors import InputError, OppuError
from oppu.shared.llm.inference import label_log_likelihoods
from oppu.shared.llm.training import TrainSettings
from oppu.shared.personal import pipeline as workflow
from oppu.shared.personal import user_run
from oppu.shared.personal.adapter_meta import history_labels, item_key
from oppu.shared.personal.evaluation import evaluate_queries
from oppu.shared.personal.peft_methods import PeftSettings
from oppu.shared.personal.pipeline import heldout_queries, personalize_user
from oppu.shared.personal.private_adapter import PersonalizeSettings, train_private_adapter
from oppu.shared.tasks import get_task

pytestmark = pytest.mark.slow

TASK = get_task("LaMP_3")
# One step per run (batch 8 >= history), at the personalization tests' learning rate.
TINY = PersonalizeSettings(
    peft=PeftSettings(method="lora", r=8, alpha=16),
    train=TrainSettings(lr=3e-3, epochs=1, batch_size=8, max_length=128),
)
REVIEWS = [
    {"text": f"This {product} is wonderful, I love it and use it every day.", "score": "4"}
    for product in ("kettle", "scarf", "umbrella", "notebook", "mouse", "lamp", "mug", "clock")
]


def _run(base, history, store, **kwargs) -> workflow.Outcome:
    kwargs = {"holdout": 0, "evaluate_baseline": False, "show_progress": False, **kwargs}
    return personalize_user(base.model, base.tokenizer, TASK, history, TINY, store=store,
                            **kwargs)


def _snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (hidden and temporary ones included) and its SHA-256."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _assert_base_is_clean(model) -> None:
    names = [n for n, _ in model.named_modules() if "lora" in n or "ia3" in n]
    assert not names, f"adapter modules left in the shared base: {names[:3]}"
    assert not any(p.requires_grad for p in model.parameters()), "the base is no longer frozen"


def test_interrupted_training_keeps_the_previous_adapter(base, user_dir, monkeypatch) -> None:
    import torch

    store = AdapterStore(user_dir)
    _run(base, REVIEWS[:2], store)
    saved = _snapshot(user_dir)
    assert {"adapters/LaMP_3/adapter_model.safetensors",
            "adapters/LaMP_3/adapter_config.json"} <= saved.keys()

    steps = []
    real_step = torch.optim.AdamW.step

    def step_then_ctrl_c(self, *args, **kwargs):
        result = real_step(self, *args, **kwargs)
        steps.append(result)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch.optim.AdamW, "step", step_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        _run(base, REVIEWS[:4], store)

    assert len(steps) == 1, "the interrupt should come after the first optimizer step"
    assert _snapshot(user_dir) == saved, "the previous adapter changed, or temp files remain"
    _assert_base_is_clean(base.model)


def test_interrupted_save_keeps_the_previous_adapter(base, user_dir, monkeypatch) -> None:
    import peft.peft_model

    store = AdapterStore(user_dir)
    _run(base, REVIEWS[:2], store)
    saved = _snapshot(user_dir)

    def half_written(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(peft.peft_model, "safe_save_file", half_written)
    with pytest.raises(KeyboardInterrupt):
        _run(base, REVIEWS[:4], store)

    assert _snapshot(user_dir) == saved, "the previous adapter changed, or temp files remain"
    _assert_base_is_clean(base.model)


def test_resume_trains_only_new_items_on_the_existing_adapter(
    base, user_dir, monkeypatch
) -> None:
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    store = AdapterStore(user_dir)
    first = _run(base, REVIEWS[:4], store)
    assert first.report is not None and first.report.examples == 4
    keys_before = store.metadata("LaMP_3")["trained_item_keys"]
    assert sorted(keys_before) == sorted(item_key(item) for item in REVIEWS[:4])
    weights_before = load_file(store.path("LaMP_3") / "adapter_model.safetensors")

    calls = []
    real_train = user_run.train_private_adapter

    def spy(model, tokenizer, task, history, settings, **kwargs):
        start = {k: v.clone() for k, v in get_peft_model_state_dict(model).items()}
        calls.append((start, list(history)))
        return real_train(model, tokenizer, task, history, settings, **kwargs)

    monkeypatch.setattr(user_run, "train_private_adapter", spy)
    second = _run(base, REVIEWS[:6], store, resume=True)

    assert second.report is not None and second.report.examples == 2
    (start_weights, trained_on), = calls
    assert trained_on == REVIEWS[4:6], "already-seen items were trained again"
    assert start_weights.keys() == weights_before.keys()
    assert all(start_weights[k].equal(weights_before[k]) for k in weights_before), (
        "resume did not start from the saved adapter"
    )
    meta = store.metadata("LaMP_3")
    assert set(keys_before) < set(meta["trained_item_keys"])
    assert sorted(meta["trained_item_keys"]) == sorted(item_key(item) for item in REVIEWS[:6])
    assert meta["history_items"] == 6
    weights_after = load_file(store.path("LaMP_3") / "adapter_model.safetensors")
    assert any(not weights_after[k].equal(weights_before[k]) for k in weights_before)

    saved = _snapshot(user_dir)
    third = _run(base, REVIEWS[:6], store, resume=True)  # nothing new: no training, no save
    assert third.report is None and len(calls) == 1
    assert _snapshot(user_dir) == saved
    _assert_base_is_clean(base.model)


def test_saved_adapter_is_plain_peft_and_predicts_the_same(base, user_dir) -> None:
    import torch
    from peft import PeftModel

    from oppu.shared.llm.model import load_base_model

    store = AdapterStore(user_dir)
    history = REVIEWS[:6]
    outcome = _run(base, history, store, holdout=2)
    path = Path(outcome.adapter_path)
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in path.iterdir()}
    assert json.loads((path / "adapter_config.json").read_text())["peft_type"] == "LORA"

    train, heldout = history[:4], history[4:]
    labels = history_labels(TASK, history)
    queries = heldout_queries(TASK, train, heldout, labels)
    fresh, _, _ = load_base_model(base.source, device="cpu")
    plain = PeftModel.from_pretrained(fresh, path)  # no oppu code involved in loading
    plain.eval()
    ours = store.load(base.model, "LaMP_3")
    try:
        for query in queries:
            prompt = TASK.build_prompt(query.input)
            expected = label_log_likelihoods(ours, base.tokenizer, prompt, labels)
            got = label_log_likelihoods(plain, base.tokenizer, prompt, labels)
            assert torch.allclose(torch.tensor(got), torch.tensor(expected), atol=1e-4)
            with plain.disable_adapter():
                bare = label_log_likelihoods(plain, base.tokenizer, prompt, labels)
            assert max(abs(a - b) for a, b in zip(got, bare, strict=True)) > 1e-3, (
                "the adapter does not change the model: this comparison proves nothing"
            )
        result = evaluate_queries(plain, base.tokenizer, TASK, queries, labels=labels)
    finally:
        ours.unload()
    assert result.predictions == outcome.personal.predictions
    _assert_base_is_clean(base.model)


def test_empty_history_file_or_list_is_a_clear_error(base, tmp_path) -> None:
    empty = tmp_path / "history.jsonl"
    empty.write_text("\n")
    with pytest.raises(InputError, match="empty"):
        read_history(empty, TASK)
    with pytest.raises(ValueError, match="empty"):
        train_private_adapter(base.model, base.tokenizer, TASK, [], TINY)


def test_personalizing_an_empty_history_is_a_clear_error(base, user_dir) -> None:
    """Not a silent no-op: the caller (a Flower client, a script) must learn nothing trained."""
    with pytest.raises((ValueError, OppuError), match="empty"):
        _run(base, [], AdapterStore(user_dir))
    assert not AdapterStore(user_dir).exists("LaMP_3")
    _assert_base_is_clean(base.model)
