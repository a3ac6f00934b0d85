"""A round's task-adapted bases on the client: each fetched, verified and loaded once.

A round names one base per prompt family its variants use (plain, rag-kJ, profile-kJ:
``oppu.shared.personal.bases``) or a single base for all. Deployment and simulation fetch
and load them the same way; they differ only in how one version is obtained (``obtain``: a
simulation worker keeps every base of its run loaded, so it fetches nothing twice).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from oppu.shared.federation.round_config import RoundConfig
from oppu.shared.llm.weight_sharing import share_identical_weights


@dataclass(frozen=True)
class RoundBases:
    """What ``run_variants`` takes: the default base and, per family, the base it runs on."""

    model: object
    """The round's default base (``base_version``): it writes the profiles."""
    tokenizer: object
    bases: dict[str, object] | None
    """Base name -> model; None when one base serves every variant."""
    versions: dict[str, str]
    """Base name -> version, as the round named them (empty: one base)."""


def load_round_bases(round_cfg: RoundConfig, obtain: Callable[[str], tuple]) -> RoundBases:
    """Every base the round's variants need, each version obtained once.

    ``obtain(version)`` gives ``(model, tokenizer)`` of that base, fetched and verified
    ("" : the default base). Bases held together share the weights they have in common
    (``weight_sharing``): each extra base of the embedded model costs ~70 MB, not ~540.
    """
    loaded: dict[str, tuple] = {}

    def model_of(version: str) -> tuple:
        if version not in loaded:
            model, tokenizer = obtain(version)
            share_identical_weights(model, [held for held, _ in loaded.values()])
            loaded[version] = (model, tokenizer)
        return loaded[version]

    model, tokenizer = model_of(round_cfg.base_version)
    versions = round_cfg.base_versions()
    if not versions:
        return RoundBases(model, tokenizer, None, {})
    needed = round_cfg.needed_bases()
    bases = {name: model_of(versions[name])[0] for name in needed}
    return RoundBases(model, tokenizer, bases, {name: versions[name] for name in needed})
