"""Which task-adapted base a variant runs on, as the paper: one base per prompt family.

The paper adapts three kinds of base on the base users, differing only in the prompts they
learn from: plain queries (non-personalized and OPPU at k=0), queries with the user's top-J
retrieved history items (RAG and RAG+OPPU at k=J), and queries with the user's profile (PAG
and PAG+OPPU). Like the reference code (TamSiuhin/OPPU ``task_LoRA.py``, one task LoRA per k
and one with ``--add_profile``), every J is its own base: a base reads the prompt shape it
was trained on. A base's name says that shape: ``plain``, ``rag-kJ``, ``profile-kJ``.

The profile base learns from PAG profiles and serves GPG columns too, so GPG against PAG
compares the profile text alone, read by the same base.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

PLAIN = "plain"
PROFILE_BASE_WRITER = "pag"
"""The profile mode whose profiles the profile base learns from."""
_NAME = re.compile(r"(?:(?P<kind>rag|profile)-k(?P<k>0|[1-9]\d*)|plain)")


@dataclass(frozen=True)
class BaseKind:
    """The prompt shape a base is adapted on: ``variant`` is adapt's (plain, rag, profile)."""

    variant: str = PLAIN
    k: int = 0

    @property
    def name(self) -> str:
        return PLAIN if self.variant == PLAIN else f"{self.variant}-k{self.k}"


def base_kind(k: int, profile: str = "none") -> BaseKind:
    """The base for prompts with ``k`` retrieved items and a profile (``profile`` != none)."""
    if profile != "none":
        return BaseKind("profile", k)
    return BaseKind("rag", k) if k else BaseKind()


def parse_base_name(name: str) -> BaseKind:
    """``plain``, ``rag-kJ`` (J >= 1) or ``profile-kJ``; ValueError naming the forms."""
    match = _NAME.fullmatch(name)
    if match is None or (match["kind"] == "rag" and match["k"] == "0"):
        raise ValueError(f"Unknown base name {name!r}: use plain, rag-kJ (J >= 1) or "
                         "profile-kJ.")
    return BaseKind(match["kind"], int(match["k"])) if match["kind"] else BaseKind()


def base_of_manifest(variant: str, training: Mapping) -> BaseKind:
    """The kind of a saved base, from its manifest (``variant`` and ``training.k``)."""
    if variant == PLAIN:
        return BaseKind()
    return BaseKind(variant, int(training.get("k", 0)))


def ordered_bases(names: Iterable[str]) -> tuple[str, ...]:
    """Distinct base names, plain first, then as given (the order they are adapted in)."""
    unique = list(dict.fromkeys(names))
    return tuple(sorted(unique, key=lambda name: name != PLAIN))
