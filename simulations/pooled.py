"""The pooled baseline: one non-personal adapter trained on all test users' histories at once.

It tells what personal parameters add beyond simply training on more data (OPPU Table 1).
Retrieval during training stays within each user's own history, as at test time. A finished
adapter is reused when its inputs and recipe are unchanged, so a long simulation can resume.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

from oppu.shared.atomic import atomic_directory
from oppu.shared.personal.adapter_meta import history_labels, item_key
from oppu.shared.personal.private_adapter import (
    fresh_adapter,
    train_on_examples,
    training_examples,
)
from oppu.shared.personal.profile_cache import model_identity
from oppu.shared.personal.profiles import model_id_of
from oppu.shared.personal.recipe import PersonalizeSettings
from oppu.shared.tasks import Example, TaskSpec

METADATA_FILE = "oppu_pooled.json"
FORMAT_VERSION = 1


def pooled_examples(task: TaskSpec, histories: Sequence[Sequence[Mapping]], k: int,
                    labels: Sequence[str] | None = None) -> list[Example]:
    """Every user's training examples, each retrieving only from that user's own items."""
    return [ex for history in histories for ex in training_examples(task, history, k, labels)]


def pooled_key(model, task: TaskSpec, histories: Sequence[Sequence[Mapping]],
               settings: PersonalizeSettings, labels: Sequence[str] | None) -> str:
    """A hash of everything the adapter depends on: a different one means train again."""
    inputs = {
        "version": FORMAT_VERSION,
        "task": task.to_dict(),
        "base_model": model_identity(model),
        "histories": [[item_key(item) for item in history] for history in histories],
        "labels": list(labels) if labels is not None else None,
        "peft": asdict(settings.peft),
        "train": settings.train.to_dict(),
        "k": settings.k,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def _saved_key(out_dir: Path) -> str | None:
    if not (out_dir / "adapter_config.json").is_file():
        return None
    try:
        return json.loads((out_dir / METADATA_FILE).read_text()).get("key")
    except (OSError, ValueError, AttributeError):
        return None


def train_pooled_adapter(
    model,
    tokenizer,
    task: TaskSpec,
    histories: Sequence[Sequence[Mapping]],
    settings: PersonalizeSettings,
    out_dir: Path,
    *,
    labels: Sequence[str] | None = None,
    show_progress: bool = True,
) -> Path:
    """Train one fresh adapter on all ``histories`` together and save it to ``out_dir``.

    Same recipe as a private adapter (``settings``; its profile is not used: a profile is
    personal). ``labels`` defaults to the task's plus every label the histories use; pass
    the labels the suite evaluates with. ``model`` is left clean. If ``out_dir`` already
    holds the adapter for these exact inputs, it is returned without training.
    """
    out_dir = Path(out_dir)
    histories = [list(history) for history in histories if history]
    if not histories:
        raise ValueError("No history to pool: every user's history is empty.")
    if labels is None:
        labels = history_labels(task, [item for history in histories for item in history])
    key = pooled_key(model, task, histories, settings, labels)
    if _saved_key(out_dir) == key:
        return out_dir
    examples = pooled_examples(task, histories, settings.k, labels)
    with fresh_adapter(model, settings.peft, seed=settings.train.seed) as peft_model:
        report = train_on_examples(peft_model, tokenizer, examples, settings.train,
                                   epochs=settings.train.epochs or task.epochs,
                                   show_progress=show_progress, description="pooled adapter")
        with atomic_directory(out_dir) as scratch:
            peft_model.save_pretrained(scratch)
            (scratch / METADATA_FILE).write_text(json.dumps({
                "key": key, "task": task.name, "base_model": model_id_of(model),
                "users": len(histories), "items": len(examples), "k": settings.k,
                "peft": settings.peft.method, "train": settings.train.to_dict(),
                "steps": report.steps, "final_loss": report.final_loss,
                "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }, indent=2, sort_keys=True))
    return out_dir
