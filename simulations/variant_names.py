"""How the report shows suite variants: group, human label and order (the paper's Table 1).

A thin display layer over ``oppu.shared.personal.suite.parse_variant``, the one grammar of variant
names; this module adds no grammar of its own. Names the suite rejects are kept and shown
in group "Other", last, in their given order: never dropped.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from oppu.shared.personal.suite import PEFT_ALIASES, Variant, parse_variant

GROUPS = (
    "Non-personalized",
    "RAG",
    "Profile",
    "OPPU",
    "Profile + OPPU",
    "Baselines",
    "Other",
)
FAMILY_GROUPS = {
    "base": "Non-personalized",
    "random": "Non-personalized",
    "rag": "RAG",
    "profile": "Profile",
    "pooled": "Baselines",
    "majority": "Baselines",
    "top-bm25": "Baselines",
}
FAMILY_NAMES = {
    "base": "Non-personalized",
    "random": "Random history",
    "rag": "RAG",
    "pooled": "Pooled adapter",
}
LITERAL_LABELS = {"majority": "Majority label", "top-bm25": "Top BM25 item"}
FAMILY_ORDER = ("base", "random", "rag", "profile", "oppu", "pooled", "majority", "top-bm25")
PROFILE_ORDER = ("none", "pag", "gpg")
METHOD_NAMES = {"lora": "LoRA", "ia3": "IA3", "prompt_tuning": "prompt tuning"}
"""PEFT-method registry names -> how labels show them."""
_SHORT = {registry: short for short, registry in PEFT_ALIASES.items()}
_METHODS = tuple(_SHORT)  # registry names, in the suite's order (LoRA first)


def known_variant(name: str) -> Variant | None:
    """The suite's parse of ``name``, or None where the suite rejects it (group "Other")."""
    try:
        return parse_variant(name)
    except ValueError:
        return None


def method_named(variant: Variant) -> bool:
    """Whether the name spells out its PEFT method (oppu-lora-k0) rather than defaulting."""
    short = _SHORT.get(str(variant.peft_method))
    return short is not None and f"-{short}-" in f"-{variant.name}-"


def variant_group(name: str) -> str:
    """The Table 1 group a variant is listed under ("Other" for names the suite rejects)."""
    variant = known_variant(name)
    if variant is None:
        return "Other"
    if variant.family == "oppu":
        return "OPPU" if variant.profile == "none" else "Profile + OPPU"
    return FAMILY_GROUPS.get(variant.family, "Other")


def variant_label(name: str) -> str:
    """Human-readable name, e.g. "RAG (k=2)", "OPPU LoRA (k=0)", "PAG + OPPU (k=1)"."""
    variant = known_variant(name)
    if variant is None or variant_group(name) == "Other":
        return name
    if variant.family in LITERAL_LABELS:
        return LITERAL_LABELS[variant.family]
    parts = [variant.profile.upper()] if variant.profile != "none" else []
    if variant.family == "oppu":
        # Plain OPPU rows sit side by side per method, so always name it; after a profile
        # the default (LoRA) stays implicit, as in the paper's "PAG + OPPU".
        method = variant.peft_method
        if variant.profile == "none" or method_named(variant):
            parts.append(f"OPPU {METHOD_NAMES.get(str(method), str(method))}")
        else:
            parts.append("OPPU")
    elif variant.family in FAMILY_NAMES:
        parts.append(FAMILY_NAMES[variant.family])
    return f"{' + '.join(parts)} (k={variant.k})"


def variant_sort_key(variant: Variant) -> tuple[Any, ...]:
    """Order inside a group: the paper's (by k, then method, the explicitly named one after
    the default; profile groups by profile first, PAG before GPG)."""
    method = -1.0
    if variant.peft_method is not None:
        method = (_METHODS.index(variant.peft_method) if variant.peft_method in _METHODS
                  else len(_METHODS)) + (0.5 if method_named(variant) else 0.0)
    family = FAMILY_ORDER.index(variant.family) if variant.family in FAMILY_ORDER \
        else len(FAMILY_ORDER)
    profile = PROFILE_ORDER.index(variant.profile) if variant.profile in PROFILE_ORDER \
        else len(PROFILE_ORDER)
    if variant.profile != "none":
        return (profile, variant.k, family, method)
    return (family, variant.k, method)


def order_variants(names: Iterable[str]) -> list[tuple[str, list[str]]]:
    """Variants grouped in the paper's order; unknown names last, in their given order."""
    names = list(names)
    grouped: list[tuple[str, list[str]]] = []
    for group in GROUPS:
        members = [n for n in names if variant_group(n) == group]
        if group != "Other":
            members.sort(key=lambda n: variant_sort_key(parse_variant(n)))
        if members:
            grouped.append((group, members))
    return grouped


def ordered_names(names: Iterable[str]) -> list[str]:
    """Flat list of ``order_variants``."""
    return [name for _, members in order_variants(names) for name in members]
