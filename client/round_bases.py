"""A round's task-adapted bases on the client: each fetched, verified and loaded once.

A round names one base per prompt family its variants use (plain, rag-kJ, profile-kJ:
``oppu.shared.personal.bases``) or a single base for all. Deployment and simulation fetch
and load them the same way; they differ only in where a version comes from (``locate``) and
how a loaded model is kept (``load``: a simulation worker keeps every base of its run).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from oppu.shared.federation.round_config import RoundConfig


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


def load_round_bases(round_cfg: RoundConfig, locate: Callable[[str], str],
                     load: Callable[[str, str], tuple]) -> RoundBases:
    """Every base the round's variants need, each version located and loaded once.

    ``locate(version)`` is the verified directory of that base ("" : the default base);
    ``load(version, directory)`` gives ``(model, tokenizer)``.
    """
    loaded: dict[str, tuple] = {}

    def model_of(version: str) -> tuple:
        if version not in loaded:
            loaded[version] = load(version, locate(version))
        return loaded[version]

    model, tokenizer = model_of(round_cfg.base_version)
    versions = round_cfg.base_versions()
    if not versions:
        return RoundBases(model, tokenizer, None, {})
    needed = round_cfg.needed_bases()
    bases = {name: model_of(versions[name])[0] for name in needed}
    return RoundBases(model, tokenizer, bases, {name: versions[name] for name in needed})
