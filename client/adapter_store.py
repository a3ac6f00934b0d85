"""A user's private adapters on disk, in peft's standard format, written atomically.

Layout: ``<user dir>/adapters/<task>/`` holds ``adapter_config.json`` and
``adapter_model.safetensors`` (loadable by ``PeftModel.from_pretrained`` anywhere) plus
``oppu_adapter.json`` describing how it was trained. A new adapter replaces the old one only
once it is completely written, so a crash or Ctrl-C mid-training keeps the previous one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from oppu.shared.atomic import atomic_directory
from oppu.shared.errors import OppuError

METADATA_FILE = "oppu_adapter.json"


@dataclass(frozen=True)
class AdapterStore:
    """Adapters of one user, one folder per task."""

    root: Path

    def path(self, task_name: str) -> Path:
        return self.root / "adapters" / task_name

    def exists(self, task_name: str) -> bool:
        return (self.path(task_name) / "adapter_config.json").is_file()

    def save(self, peft_model, task_name: str, metadata: dict) -> Path:
        target = self.path(task_name)
        with atomic_directory(target) as scratch:
            peft_model.save_pretrained(scratch)
            (scratch / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True))
        return target

    def metadata(self, task_name: str) -> dict:
        path = self.path(task_name) / METADATA_FILE
        return json.loads(path.read_text()) if path.is_file() else {}

    def load(self, base_model, task_name: str, *, trainable: bool = False):
        """Plug the user's adapter into ``base_model`` (a PeftModel comes back)."""
        from peft import PeftModel

        if not self.exists(task_name):
            raise OppuError(
                f"No adapter for task {task_name} in {self.root}. Train one first: "
                f"oppu-client train --history YOUR_HISTORY.jsonl --task {task_name}"
            )
        return PeftModel.from_pretrained(base_model, self.path(task_name), is_trainable=trainable)
