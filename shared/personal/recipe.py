"""The recipe of a private adapter, and its one mapping from command-line options.

A recipe is the private module (PEFT method and its hyperparameters), how it trains, and the
non-parametric knowledge used with it (top-k retrieved history items, a generated profile).
``oppu-client train``/``join`` and ``oppu-coordinator start``/``simulate`` build it with
``recipe_from_options``; a federated round carries it as ``RoundConfig`` fields, read back by
``RoundConfig.recipe()``. Whole-number options use 0 for "the default" (the task's epochs, no
step cap), as Flower run configs cannot hold None.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from oppu.shared.llm.training import TrainSettings
from oppu.shared.personal.peft_methods import PeftSettings
from oppu.shared.personal.profile_writer import MODES

PROFILE_MODES = ("none", *MODES)
"""No profile, or one of the generated profiles (PAG, GPG)."""

DEFAULT_LR = 1e-3
DEFAULT_LORA_ALPHA = 16
"""The default model's recipe, where the 7B paper's (lr 1e-4, alpha 8) barely moves a 135M
model: on a real annotator's history (tweeteval F_14) lr 1e-4 left every prediction at the
base's ("Hateful" for all 40 held-out items, 0.175) while lr 1e-3 with alpha 16 learned the
user's label (0.825). Used when recipe selection is off or has too few items to choose on;
selection's grid spans it (``selection.SelectionSettings``)."""


@dataclass(frozen=True)
class PersonalizeSettings:
    """The private module, its training recipe, and the non-parametric knowledge used with it:
    top-k retrieved history items and an optional generated profile (PAG or GPG)."""

    peft: PeftSettings = field(default_factory=PeftSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    k: int = 0
    profile: str = "none"

    def __post_init__(self) -> None:
        if self.k < 0:
            raise ValueError(f"k (retrieved history items) must be >= 0 (got {self.k}).")
        if self.profile not in PROFILE_MODES:
            raise ValueError(f"profile must be one of {PROFILE_MODES} (got {self.profile!r}).")

    def with_knowledge(self, *, peft_method: str, k: int, profile: str) -> PersonalizeSettings:
        """The same recipe for another PEFT method, k or profile (a suite variant's)."""
        return replace(self, peft=replace(self.peft, method=peft_method), k=k, profile=profile)


def recipe_from_options(
    *,
    peft: str = "lora",
    lora_r: int = 8,
    lora_alpha: int = DEFAULT_LORA_ALPHA,
    lr: float = DEFAULT_LR,
    epochs: int | None = 0,
    batch_size: int = 8,
    max_steps: int | None = 0,
    seed: int = 0,
    k: int = 0,
    profile: str = "none",
) -> PersonalizeSettings:
    """The one mapping from options (CLI or run config) to a recipe; 0 or None: default."""
    return PersonalizeSettings(
        peft=PeftSettings(method=peft, r=lora_r, alpha=lora_alpha),
        train=TrainSettings(lr=lr, epochs=epochs or None, batch_size=batch_size,
                            max_steps=max_steps or None, seed=seed),
        k=k, profile=profile)


def recipe_options(recipe: PersonalizeSettings) -> dict[str, object]:
    """``recipe_from_options``'s keyword arguments for ``recipe`` (its inverse)."""
    return {"peft": recipe.peft.method, "lora_r": recipe.peft.r, "lora_alpha": recipe.peft.alpha,
            "lr": recipe.train.lr, "epochs": recipe.train.epochs or 0,
            "batch_size": recipe.train.batch_size, "max_steps": recipe.train.max_steps or 0,
            "seed": recipe.train.seed, "k": recipe.k, "profile": recipe.profile}


DEFAULT_RECIPE = recipe_from_options()
"""What ``train``, ``join`` (through the round's defaults) and ``simulate`` use by default."""
