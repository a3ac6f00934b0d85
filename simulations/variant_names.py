"""How the report shows suite variants: group, human label and order (the paper's Table 1).

A thin display layer over the variant-family registry (``oppu.shared.personal.variants``):
each family says its group and label; this module only orders them. Names the registry
rejects are kept and shown in group "Other", last, in their given order: never dropped.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from oppu.shared.personal.peft_methods import PEFT_METHODS
from oppu.shared.personal.recipe import PROFILE_MODES
from oppu.shared.personal.variants import FAMILIES, Variant, ordered_families, parse_variant
from oppu.shared.personal.variants.oppu import method_named

OTHER = "Other"


def groups() -> tuple[str, ...]:
    """Report groups in the paper's order (families' first appearance), then "Other"."""
    names: dict[str, None] = {}
    for family in ordered_families():
        names.update(dict.fromkeys(family.groups()))
    return (*names, OTHER)


def known_variant(name: str) -> Variant | None:
    """The registry's parse of ``name``, or None where it rejects it (group "Other")."""
    try:
        return parse_variant(name)
    except ValueError:
        return None


def variant_group(name: str) -> str:
    """The Table 1 group a variant is listed under ("Other" for names the suite rejects)."""
    variant = known_variant(name)
    if variant is None:
        return OTHER
    return FAMILIES[variant.family].group_of(variant)


def variant_label(name: str) -> str:
    """Human-readable name, e.g. "RAG (k=2)", "OPPU LoRA (k=0)", "PAG + OPPU (k=1)"."""
    variant = known_variant(name)
    if variant is None:
        return name
    return FAMILIES[variant.family].label(variant)


def variant_sort_key(variant: Variant) -> tuple[Any, ...]:
    """Order inside a group: the paper's (by k, then method, the explicitly named one after
    the default; profile groups by profile first, PAG before GPG)."""
    methods = tuple(PEFT_METHODS)
    method = -1.0
    if variant.peft_method is not None:
        method = (methods.index(variant.peft_method) if variant.peft_method in methods
                  else len(methods)) + (0.5 if method_named(variant) else 0.0)
    family = FAMILIES[variant.family].order
    profile = PROFILE_MODES.index(variant.profile) if variant.profile in PROFILE_MODES \
        else len(PROFILE_MODES)
    if variant.profile != "none":
        return (profile, variant.k, family, method)
    return (family, variant.k, method)


def order_variants(names: Iterable[str]) -> list[tuple[str, list[str]]]:
    """Variants grouped in the paper's order; unknown names last, in their given order."""
    names = list(names)
    grouped: list[tuple[str, list[str]]] = []
    for group in groups():
        members = [n for n in names if variant_group(n) == group]
        if group != OTHER:
            members.sort(key=lambda n: variant_sort_key(parse_variant(n)))
        if members:
            grouped.append((group, members))
    return grouped


def ordered_names(names: Iterable[str]) -> list[str]:
    """Flat list of ``order_variants``."""
    return [name for _, members in order_variants(names) for name in members]
