"""Defaults of the quick start: the bundled sample and a private-adapter recipe for ~135M bases.

The quick start itself is ``oppu-coordinator demo``: a federated simulation
(``oppu.simulations.simulate``) of the sample's test users.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from oppu.shared.personal.recipe import DEFAULT_RECIPE, PersonalizeSettings


def sample_dir() -> Path:
    """The bundled HuffPost LaMP-2N-like sample (4 test users, 80 base users)."""
    return Path(str(resources.files("oppu.shared.sample") / "huffpost_lamp2n"))


def small_model_personal_settings() -> PersonalizeSettings:
    """Private-adapter recipe for a ~135M base: the product default (``DEFAULT_RECIPE``).

    The reference recipe (lr 1e-4, alpha 8) barely moves a 135M model in the few steps a
    short history gives (FACTS.md: adapters collapsed or stayed at the base); see
    ``oppu.shared.personal.recipe.DEFAULT_LR`` for how the default was chosen.
    """
    return DEFAULT_RECIPE
