"""Where oppu keeps its files: one root (OPPU_HOME) so users can move or wipe it."""

from __future__ import annotations

import os
from pathlib import Path

OPPU_HOME_ENV = "OPPU_HOME"


def oppu_home() -> Path:
    """Root of oppu's local state; ``$OPPU_HOME`` or ``~/.cache/oppu``."""
    root = os.environ.get(OPPU_HOME_ENV)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "oppu"


def models_dir() -> Path:
    """Cache of converted base models (safetensors)."""
    return oppu_home() / "models"


def user_dir(user: str = "default") -> Path:
    """A user's private data: adapters, profiles. Never leaves the client."""
    return oppu_home() / "users" / user
