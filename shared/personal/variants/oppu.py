"""OPPU itself: a private PEFT module trained on the user's history, used with top-J items
and optionally a profile (``oppu-kJ``, ``oppu-ia3-kJ``, ``pag-oppu-kJ``). The PEFT methods
come from the PEFT-method registry."""

from __future__ import annotations

import re
from collections.abc import Mapping

from oppu.shared.personal.peft_methods import DEFAULT_PEFT_METHOD, PEFT_METHODS, short_names
from oppu.shared.personal.variants.registry import Family, K, Variant, register_family


class Oppu(Family):
    name = "oppu"
    group = "OPPU"
    order = 4
    trains = True

    @property
    def forms(self) -> tuple[str, ...]:  # type: ignore[override]
        methods = "|".join(short_names())
        return ("oppu-kJ", f"oppu-{{{methods}}}-kJ", "pag-oppu-kJ", "gpg-oppu-kJ",
                f"{{pag|gpg}}-oppu-{{{methods}}}-kJ")

    def patterns(self) -> tuple[str, ...]:
        methods = "|".join(re.escape(short) for short in short_names())
        return (rf"(?:(?P<profile>pag|gpg)-)?oppu(?:-(?P<peft>{methods}))?" + K,)

    def variant(self, name: str, groups: Mapping[str, str | None]) -> Variant:
        short = groups.get("peft")
        method = short_names()[short] if short else DEFAULT_PEFT_METHOD
        return Variant(name, self.name, int(groups.get("k") or 0),
                       groups.get("profile") or "none", method)

    def group_of(self, variant: Variant) -> str:
        return "OPPU" if variant.profile == "none" else "Profile + OPPU"

    def groups(self) -> tuple[str, ...]:
        return ("OPPU", "Profile + OPPU")

    def label(self, variant: Variant) -> str:
        # Plain OPPU rows sit side by side per method, so always name it; after a profile
        # the default (LoRA) stays implicit, as in the paper's "PAG + OPPU".
        parts = [variant.profile.upper()] if variant.profile != "none" else []
        method = PEFT_METHODS[str(variant.peft_method)]
        if variant.profile == "none" or method_named(variant):
            parts.append(f"OPPU {method.label}")
        else:
            parts.append("OPPU")
        return f"{' + '.join(parts)} (k={variant.k})"

    def evaluate(self, run, variant: Variant):
        return run.personal(variant)


def method_named(variant: Variant) -> bool:
    """Whether the name spells out its PEFT method (oppu-lora-k0) rather than defaulting."""
    method = PEFT_METHODS.get(str(variant.peft_method))
    return method is not None and f"-{method.short}-" in f"-{variant.name}-"


def personal_variant_name(peft_method: str, k: int, profile: str) -> str:
    """The variant a recipe trains: ``oppu-kJ``, ``oppu-ia3-kJ``, ``pag-oppu-kJ``, ..."""
    prefix = "" if profile == "none" else f"{profile}-"
    short = PEFT_METHODS[peft_method].short
    method = "" if peft_method == DEFAULT_PEFT_METHOD else f"{short}-"
    return f"{prefix}oppu-{method}k{k}"


register_family(Oppu())
