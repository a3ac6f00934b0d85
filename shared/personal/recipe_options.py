"""Typer options of the private-adapter recipe, declared once for every command that takes
them (``oppu-client train``/``join``, ``oppu-coordinator start``/``simulate``).

Each maps onto one ``recipe_from_options`` keyword of the same name, so a command passes them
through unchanged and no option can be accepted and then dropped.
"""

from __future__ import annotations

from typing import Annotated

import typer

from oppu.shared.personal.peft_methods import PEFT_METHODS
from oppu.shared.personal.recipe import PROFILE_MODES

PeftOpt = Annotated[str, typer.Option(
    "--peft", help=f"Private module: {', '.join(PEFT_METHODS)}.")]
LoraROpt = Annotated[int, typer.Option("--lora-r", min=1, help="LoRA rank.")]
LoraAlphaOpt = Annotated[int, typer.Option("--lora-alpha", min=1, help="LoRA alpha.")]
LrOpt = Annotated[float, typer.Option("--lr", min=0.0, help="Learning rate.")]
EpochsOpt = Annotated[int, typer.Option("--epochs", min=0, help="0: the task's default.")]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Examples per step.")]
MaxStepsOpt = Annotated[int, typer.Option("--max-steps", min=0, help="Cap on steps (0: none).")]
SeedOpt = Annotated[int, typer.Option("--seed", min=0, help="Seed of the adapter's init and "
                                      "batch order.")]
KOpt = Annotated[int, typer.Option(
    "--k", min=0, help="History items retrieved (BM25) into each prompt.")]
ProfileOpt = Annotated[str, typer.Option(
    "--profile", help=f"Generated user profile in prompts: {', '.join(PROFILE_MODES)}.")]
HoldoutOpt = Annotated[float, typer.Option(
    "--holdout", min=0.0, help="Newest share (< 1) or count (>= 1) of each history kept aside "
    "to evaluate on.")]
