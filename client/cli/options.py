"""Typer options several client commands share, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from oppu.client.adapter_store import AdapterStore
from oppu.shared.paths import user_dir

TaskOpt = Annotated[str, typer.Option("--task", help="Task, e.g. LaMP_2N, LaMP-3 or 7.")]
BaseModelOpt = Annotated[
    str | None,
    typer.Option(
        "--base-model",
        help="Base LLM: a Hugging Face model id or a local directory. Default: the embedded "
        "SmolLM2-135M-Instruct (or the base your adapter was trained on).",
    ),
]
UserOpt = Annotated[
    str, typer.Option("--user", help="Name of the local profile whose adapters to use.")
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Where your adapters live (default: $OPPU_HOME/users/USER)."),
]
DeviceOpt = Annotated[
    str, typer.Option("--device", help="auto (CUDA when present, else CPU), cpu or cuda.")
]
PassphraseEnvOpt = Annotated[
    str | None,
    typer.Option(
        "--passphrase-env",
        help="Name of an environment variable holding a passphrase: your adapters are then "
        "encrypted at rest (the passphrase itself never goes on the command line).",
    ),
]



def trained_base(meta: dict) -> str | None:
    """The base an adapter was trained on, from its metadata (None: the embedded model)."""
    base = meta.get("base_model")
    return None if base in (None, "", "embedded") else base


def adapter_store(
    user: str, data_dir: Path | None, passphrase_env: str | None = None
) -> AdapterStore:
    from oppu.client.crypto import passphrase_from_env

    passphrase = passphrase_from_env(passphrase_env) if passphrase_env else None
    return AdapterStore(data_dir if data_dir is not None else user_dir(user), passphrase)
