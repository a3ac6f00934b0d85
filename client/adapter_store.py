"""A user's private adapters on disk, in peft's standard format, written atomically.

Layout: ``<user dir>/adapters/<task>/`` holds ``adapter_config.json`` and
``adapter_model.safetensors`` (loadable by ``PeftModel.from_pretrained`` anywhere) plus
``oppu_adapter.json`` describing how it was trained. A new adapter replaces the old one only
once it is completely written, so a crash or Ctrl-C mid-training keeps the previous one.
With a passphrase the same files are stored encrypted (``client/crypto.py``) and are only
decrypted into a temporary directory for the moment of loading.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from oppu.client.crypto import decrypted_copy, encrypt_dir, is_encrypted, read_decrypted
from oppu.shared.atomic import atomic_directory
from oppu.shared.errors import OppuError
from oppu.shared.personal.label_prior import LabelPrior

METADATA_FILE = "oppu_adapter.json"
CHOICE_SUFFIX = ".choice.json"
"""``adapters/<task>.choice.json``: what local selection chose last (adapter, previous or
base), with its validation numbers and label prior; ``ask`` answers accordingly."""
SEALED_CHOICE_SUFFIX = ".choice"
"""``adapters/<task>.choice/``: the same, encrypted, in a store with a passphrase."""
CHOICE_FILE = "choice.json"


@dataclass(frozen=True)
class StoredChoice:
    """What the last selection chose (``AdapterStore.choice``), and what follows from it."""

    data: dict

    @property
    def uses_base(self) -> bool:
        """Whether no adapter beat the base model: ``ask`` answers from the base."""
        return self.data.get("chosen") == "base"

    @property
    def prior(self) -> LabelPrior | None:
        """The label prior chosen (None: the model decides alone)."""
        if not self.data.get("prior"):
            return None
        prior = LabelPrior.from_dict(self.data["prior"])
        return prior if prior.weight else None

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.data.get("labels") or ())


def _scratch_root() -> str | None:
    """RAM-backed scratch where there is one, so plaintext never touches the disk."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() else None


@dataclass(frozen=True)
class AdapterStore:
    """Adapters of one user, one folder per task; encrypted at rest given a passphrase."""

    root: Path
    passphrase: str | None = field(default=None, repr=False)

    def path(self, task_name: str) -> Path:
        return self.root / "adapters" / task_name

    def exists(self, task_name: str) -> bool:
        path = self.path(task_name)
        return (path / "adapter_config.json").is_file() or is_encrypted(path)

    def require(self, task_name: str) -> None:
        """Raise the "train one first" error when this user has no adapter for the task."""
        if not self.exists(task_name):
            raise OppuError(
                f"No adapter for task {task_name} in {self.root}. Train one first: "
                f"oppu-client train --history YOUR_HISTORY.jsonl --task {task_name}"
            )

    def choice_path(self, task_name: str) -> Path:
        return self.root / "adapters" / f"{task_name}{CHOICE_SUFFIX}"

    def _sealed_choice_path(self, task_name: str) -> Path:
        """With a passphrase the choice (it holds the user's answer frequencies) is an
        encrypted directory, as the adapter is."""
        return self.root / "adapters" / f"{task_name}{SEALED_CHOICE_SUFFIX}"

    def record_choice(self, task_name: str, choice: dict) -> None:
        """Keep what selection chose (validation scores and the label prior: no item, no
        weight), encrypted at rest when the store has a passphrase."""
        from oppu.shared.atomic import write_text_atomic

        text = json.dumps(choice, indent=2, sort_keys=True)
        self.choice_path(task_name).parent.mkdir(parents=True, exist_ok=True)
        if self.passphrase is None:
            write_text_atomic(self.choice_path(task_name), text)
            return
        plain = Path(tempfile.mkdtemp(prefix="oppu-choice-", dir=_scratch_root()))
        try:
            (plain / CHOICE_FILE).write_text(text)
            encrypt_dir(plain, self.passphrase, dest=self._sealed_choice_path(task_name))
        finally:
            shutil.rmtree(plain, ignore_errors=True)
        self.choice_path(task_name).unlink(missing_ok=True)

    def choice(self, task_name: str) -> dict:
        """What the last selection chose ({} when none is on record)."""
        sealed = self._sealed_choice_path(task_name)
        try:
            if is_encrypted(sealed):
                text = read_decrypted(sealed, CHOICE_FILE, self._need_passphrase(sealed))
            else:
                text = self.choice_path(task_name).read_text()
            choice = json.loads(text)
        except (OSError, ValueError):
            return {}
        return choice if isinstance(choice, dict) else {}

    def kept(self, task_name: str) -> StoredChoice:
        """The last choice, read (and decrypted) once for everything a command asks of it."""
        return StoredChoice(self.choice(task_name))

    def uses_base(self, task_name: str) -> bool:
        return self.kept(task_name).uses_base

    def label_prior(self, task_name: str) -> LabelPrior | None:
        return self.kept(task_name).prior

    def encrypted(self, task_name: str) -> bool:
        return is_encrypted(self.path(task_name))

    def save(self, peft_model, task_name: str, metadata: dict) -> Path:
        """Write the adapter; it supersedes what an earlier selection chose (``ask`` uses
        it from now on)."""
        target = self._save(peft_model, task_name, metadata)
        self.choice_path(task_name).unlink(missing_ok=True)
        shutil.rmtree(self._sealed_choice_path(task_name), ignore_errors=True)
        return target

    def _save(self, peft_model, task_name: str, metadata: dict) -> Path:
        target = self.path(task_name)
        if self.passphrase is None:
            with atomic_directory(target) as scratch:
                self._write(peft_model, scratch, metadata)
            return target
        plain = Path(tempfile.mkdtemp(prefix="oppu-adapter-", dir=_scratch_root()))
        try:
            self._write(peft_model, plain, metadata)
            encrypt_dir(plain, self.passphrase, dest=target)  # swaps target in atomically
        finally:
            shutil.rmtree(plain, ignore_errors=True)
        return target

    @staticmethod
    def _write(peft_model, directory: Path, metadata: dict) -> None:
        peft_model.save_pretrained(directory)
        (directory / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True))

    def metadata(self, task_name: str) -> dict:
        path = self.path(task_name)
        if is_encrypted(path):
            return json.loads(read_decrypted(path, METADATA_FILE, self._need_passphrase(path)))
        meta = path / METADATA_FILE
        return json.loads(meta.read_text()) if meta.is_file() else {}

    def load(self, base_model, task_name: str, *, trainable: bool = False):
        """Plug the user's adapter into ``base_model`` (a PeftModel comes back)."""
        from peft import PeftModel

        self.require(task_name)
        path = self.path(task_name)
        if not is_encrypted(path):
            return PeftModel.from_pretrained(base_model, path, is_trainable=trainable)
        with decrypted_copy(path, self._need_passphrase(path),
                            scratch_root=_scratch_root()) as plain:
            return PeftModel.from_pretrained(base_model, plain, is_trainable=trainable)

    def _need_passphrase(self, path: Path) -> str:
        if self.passphrase is None:
            raise OppuError(
                f"The adapter in {path} is encrypted: pass --passphrase-env VAR naming an "
                "environment variable that holds your passphrase."
            )
        return self.passphrase
