"""``oppu-client train``: personalize on your own history, with no coordinator involved."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from oppu.client.cli.options import (
    BaseModelOpt,
    DataDirOpt,
    DeviceOpt,
    PassphraseEnvOpt,
    TaskOpt,
    UserOpt,
    adapter_store,
)
from oppu.client.cli.report import print_outcome
from oppu.shared.cli_support import console, friendly_errors, quiet_libraries
from oppu.shared.data import read_history
from oppu.shared.personal.pipeline import personalize_user
from oppu.shared.personal.recipe import DEFAULT_RECIPE, recipe_from_options
from oppu.shared.personal.recipe_options import (
    BatchSizeOpt,
    EpochsOpt,
    HoldoutOpt,
    KOpt,
    LoraAlphaOpt,
    LoraROpt,
    LrOpt,
    MaxStepsOpt,
    PeftOpt,
    ProfileOpt,
    SeedOpt,
)
from oppu.shared.personal.selection import SelectionSettings
from oppu.shared.tasks import get_task


@friendly_errors
def train(
    history: Annotated[Path, typer.Option("--history", help="Your history (JSONL).")],
    task: TaskOpt,
    base_model: BaseModelOpt = None,
    user: UserOpt = "default",
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "auto",
    peft: PeftOpt = "lora",
    lora_r: LoraROpt = 8,
    lora_alpha: LoraAlphaOpt = DEFAULT_RECIPE.peft.alpha,
    k: KOpt = 0,
    profile: ProfileOpt = "none",
    passphrase_env: PassphraseEnvOpt = None,
    epochs: EpochsOpt = 0,
    lr: LrOpt = DEFAULT_RECIPE.train.lr,
    batch_size: BatchSizeOpt = 8,
    max_steps: MaxStepsOpt = 0,
    seed: SeedOpt = 0,
    holdout: HoldoutOpt = 0.2,
    resume: Annotated[
        bool, typer.Option("--continue", help="Continue your adapter on new history items.")
    ] = False,
    select: Annotated[bool, typer.Option(
        "--select/--no-select", help="Choose the learning rate and epochs on your newest "
        "training items, and keep the adapter only if it beats the base there (default). "
        "--no-select trains once with --lr and --epochs.")] = True,
) -> None:
    """Train your private adapter on your history and compare it with the base, locally."""
    quiet_libraries()
    spec = get_task(task)
    items = read_history(history, spec)
    settings = recipe_from_options(peft=peft, lora_r=lora_r, lora_alpha=lora_alpha, lr=lr,
                                   epochs=epochs, batch_size=batch_size, max_steps=max_steps,
                                   seed=seed, k=k, profile=profile)
    store = adapter_store(user, data_dir, passphrase_env)
    if resume and store.exists(spec.name) and base_model is None:
        base_model = store.metadata(spec.name).get("base_model") or None
    from oppu.shared.llm.model import load_base_model

    console.print(f"Loading base model ({base_model or 'embedded SmolLM2-135M-Instruct'})...")
    model, tokenizer, plan = load_base_model(base_model, device=device)
    console.print(f"{len(items)} history items, task {spec.name}, {peft} on {plan.device}.")
    outcome = personalize_user(
        model, tokenizer, spec, items, settings, store=store,
        base_source=base_model or "embedded", holdout=holdout, resume=resume,
        selection=SelectionSettings() if select else None,
    )
    print_outcome(outcome)
