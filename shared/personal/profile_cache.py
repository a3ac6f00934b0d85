"""The on-disk profile cache: one file per (task, mode) under the user's own data directory.

A profile is derived from private history, so it is stored only there and never sent
anywhere. The key covers everything that changes a profile (items, model, mode, prompt
version, settings), so a stale file is simply a miss.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from oppu.shared.atomic import write_text_atomic
from oppu.shared.data.items import resolve_task
from oppu.shared.personal.profile_prompts import PROMPT_VERSION
from oppu.shared.personal.profile_writer import (
    Generate,
    ProfileResult,
    check_mode,
    generate_profile,
)
from oppu.shared.tasks import TaskSpec


def model_id_of(model) -> str:
    """Where the base model came from (its source path or hub id)."""
    config = getattr(model, "config", None)
    return str(getattr(config, "_name_or_path", "") or getattr(model, "name_or_path", "") or "")


def model_identity(model) -> str:
    """What identifies the base's weights for a cache key: its source, plus the content
    version of an oppu base artifact (a base adapted again at the same path is another
    model, and what it wrote or trained must not be reused)."""
    from pathlib import Path

    from oppu.shared.llm.base_artifact import read_manifest

    source = model_id_of(model)
    manifest = read_manifest(Path(source)) if source and Path(source).is_dir() else None
    return source if manifest is None else f"{source}@{manifest.version}"


def profile_key(
    task_name: str,
    mode: str,
    history: Sequence[Mapping[str, Any]],
    model_id: str,
    settings: Mapping[str, Any] | None = None,
) -> str:
    """sha256 over everything that changes the profile: items, model, mode, prompts, settings."""
    payload = {
        "version": PROMPT_VERSION,
        "task": task_name,
        "mode": mode,
        "model": model_id,
        "settings": dict(settings or {}),
        "history": list(history),
    }
    blob = json.dumps(payload, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ProfileCache:
    """Profiles of one user, one file per (task, mode), under the user's data directory.

    The file remembers the key it was built for, so a changed history, model or setting is
    a miss and the rebuilt profile replaces the old one (no stale files pile up). Files are
    written atomically (and created owner-only by ``mkstemp``).
    """

    root: Path

    def path(self, task_name: str, mode: str) -> Path:
        return Path(self.root) / "profiles" / task_name / f"{check_mode(mode)}.json"

    def get(self, task_name: str, mode: str, key: str) -> str | None:
        """The cached profile if it was built for exactly ``key``, else None."""
        path = self.path(task_name, mode)
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # missing or unreadable: build again
        if not isinstance(record, dict) or record.get("key") != key:
            return None
        text = record.get("profile")
        return text if isinstance(text, str) else None

    def put(self, task_name: str, key: str, result: ProfileResult, model_id: str = "") -> Path:
        path = self.path(task_name, result.mode)
        record = {"key": key, "task": task_name, "model": model_id, "profile": result.text,
                  "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  **{k: v for k, v in asdict(result).items() if k != "text"}}
        write_text_atomic(path, json.dumps(record, indent=2, ensure_ascii=False) + "\n")
        return path

    def get_or_build(
        self,
        model,
        tokenizer,
        task: TaskSpec | str,
        history: Sequence[Mapping[str, Any]],
        *,
        mode: str = "pag",
        model_id: str | None = None,
        generate: Generate | None = None,
        **settings: Any,
    ) -> str:
        """The cached profile for this exact history and model, else a new one (then cached).

        ``settings`` are ``build_profile``'s keyword arguments (max_items, budget_tokens...).
        """
        spec = resolve_task(task)
        model_id = model_identity(model) if model_id is None else model_id
        key = profile_key(spec.name, check_mode(mode), history, model_id, settings)
        cached = self.get(spec.name, mode, key)
        if cached is not None:
            return cached
        result = generate_profile(model, tokenizer, spec, history, mode=mode,
                                  generate=generate, **settings)
        self.put(spec.name, key, result, model_id)
        return result.text
