"""What a saved private adapter records about itself, and the user's label universe."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence

from oppu.shared.personal.recipe import PersonalizeSettings
from oppu.shared.tasks import TaskKind, TaskSpec


def item_key(item: Mapping) -> str:
    """A stable fingerprint of an item, to know which history an adapter has seen."""
    return hashlib.sha256(json.dumps(item, sort_keys=True, default=str).encode()).hexdigest()[:16]


def adapter_metadata(task: TaskSpec, settings: PersonalizeSettings, *, base_model: str,
                     peft: str, profile: str | None, labels: Sequence[str] | None,
                     item_keys: set[str], history_items: int, **extra: object) -> dict:
    """What a saved adapter records: enough to reload it, continue it, and explain it."""
    return {
        "task": task.name,
        **extra,
        "base_model": base_model,
        "peft": peft,
        "k": settings.k,
        "profile": settings.profile,
        "profile_text": profile,
        "labels": list(labels) if labels else None,
        "train": settings.train.to_dict(),
        "trained_item_keys": sorted(item_keys),
        "history_items": history_items,
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def history_labels(task: TaskSpec, history: Sequence[Mapping]) -> tuple[str, ...] | None:
    """The task's labels plus any the user's own history uses (their label universe); a
    custom task that lists no labels takes them from the history alone."""
    if task.target_field is None or task.kind == TaskKind.GENERATION:
        return None
    seen = dict.fromkeys(task.labels)
    for item in history:
        seen.setdefault(str(item.get(task.target_field, "")).strip())
    seen.pop("", None)
    return tuple(seen) or None
