"""``oppu-client train``: personalize on your own history, with no coordinator involved."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from oppu.client.cli import app
from oppu.client.cli.options import (
    BaseModelOpt,
    DataDirOpt,
    DeviceOpt,
    KOpt,
    PassphraseEnvOpt,
    ProfileOpt,
    TaskOpt,
    UserOpt,
    adapter_store,
)
from oppu.client.cli.report import print_outcome
from oppu.shared.cli_support import console, friendly_errors, quiet_libraries
from oppu.shared.data import read_history
from oppu.shared.llm.training import TrainSettings
from oppu.shared.personal.peft_methods import PEFT_METHODS, PeftSettings
from oppu.shared.personal.pipeline import personalize_user
from oppu.shared.personal.private_adapter import PersonalizeSettings
from oppu.shared.tasks import get_task


@app.command()
@friendly_errors
def train(
    history: Annotated[Path, typer.Option("--history", help="Your history (JSONL).")],
    task: TaskOpt,
    base_model: BaseModelOpt = None,
    user: UserOpt = "default",
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "auto",
    peft: Annotated[
        str, typer.Option("--peft", help=f"Private module: {', '.join(PEFT_METHODS)}.")
    ] = "lora",
    k: KOpt = 0,
    profile: ProfileOpt = "none",
    passphrase_env: PassphraseEnvOpt = None,
    epochs: Annotated[int | None, typer.Option(help="Default: the task's (3 or 2).")] = None,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 1e-4,
    batch_size: Annotated[int, typer.Option(help="Examples per step.")] = 8,
    holdout: Annotated[
        float, typer.Option(help="Newest share of your history kept aside to evaluate on.")
    ] = 0.2,
    resume: Annotated[
        bool, typer.Option("--continue", help="Continue your adapter on new history items.")
    ] = False,
) -> None:
    """Train your private adapter on your history and compare it with the base, locally."""
    quiet_libraries()
    spec = get_task(task)
    items = read_history(history, spec)
    settings = PersonalizeSettings(
        peft=PeftSettings(method=peft),
        train=TrainSettings(lr=lr, epochs=epochs, batch_size=batch_size),
        k=k,
        profile=profile,
    )
    store = adapter_store(user, data_dir, passphrase_env)
    if resume and store.exists(spec.name) and base_model is None:
        base_model = store.metadata(spec.name).get("base_model") or None
    from oppu.shared.llm.model import load_base_model

    console.print(f"Loading base model ({base_model or 'embedded SmolLM2-135M-Instruct'})...")
    model, tokenizer, plan = load_base_model(base_model, device=device)
    console.print(f"{len(items)} history items, task {spec.name}, {peft} on {plan.device}.")
    outcome = personalize_user(
        model, tokenizer, spec, items, settings, store=store,
        base_source=base_model or "embedded", holdout=holdout, eval_k=k, resume=resume,
    )
    print_outcome(outcome)
