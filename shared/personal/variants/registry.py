"""The registry of variant families: every compared method of a suite belongs to one.

A family declares its names (regular expressions over ``<family>-k<J>`` style names), its
place in the report (group, order, label), which tasks it suits, and how it evaluates one
user. The grammar of suite names, the report's groups and labels and the CLI help all read
this registry, so a new family is one module and one ``register_family`` call.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from oppu.shared.personal.bases import base_kind
from oppu.shared.personal.evaluation import EvalQuery, EvalResult
from oppu.shared.tasks import TaskSpec

K = r"-k(?P<k>0|[1-9]\d*)"
"""``-kJ`` with J >= 0 (retrieved history items)."""
K1 = r"-k(?P<k>[1-9]\d*)"
"""``-kJ`` with J >= 1 (families that only make sense with retrieved items)."""


@dataclass(frozen=True)
class Variant:
    """One compared method: a family with its number of retrieved items, profile mode and,
    for families that train, the PEFT method (a registry name)."""

    name: str
    family: str
    k: int = 0
    profile: str = "none"
    peft_method: str | None = None

    @property
    def trains(self) -> bool:
        """Whether this variant trains a private adapter for the user."""
        return FAMILIES[self.family].trains

    @property
    def adapter_key(self) -> tuple[str, int, str] | None:
        """Variants with the same key share one trained adapter (oppu-k0 and oppu-lora-k0)."""
        return (str(self.peft_method), self.k, self.profile) if self.trains else None


class UserRunView(Protocol):
    """What a family may use of one user's run (``oppu.shared.personal.user_run.UserRun``)."""

    model: Any
    history: list[Mapping]
    queries: list[EvalQuery]

    def evaluate(self, model: Any, k: int, mode: str = "none", retrieval: str = "bm25"
                 ) -> EvalResult: ...
    def scored(self, predictions: list[str]) -> EvalResult: ...
    def top_items(self, k: int) -> Sequence[Sequence[Mapping]]: ...
    def target_text(self, item: Mapping) -> str: ...
    def majority_label(self) -> str: ...
    def personal(self, variant: Variant) -> EvalResult: ...
    def pooled(self, k: int) -> EvalResult: ...


class Family:
    """Base of a variant family; subclasses set the class attributes and ``evaluate``."""

    name: ClassVar[str]
    forms: ClassVar[tuple[str, ...]]
    """How its names look, for help texts, e.g. ``rag-kJ (J>=1)``."""
    group: ClassVar[str]
    """The report's row group (the paper's Table 1 sections)."""
    order: ClassVar[int]
    """Position among families within a group (lower first)."""
    trains: ClassVar[bool] = False

    def patterns(self) -> tuple[str, ...]:
        """Regular expressions a name must fully match (groups: k, profile, peft)."""
        raise NotImplementedError

    def variant(self, name: str, groups: Mapping[str, str | None]) -> Variant:
        return Variant(name, self.name, int(groups.get("k") or 0),
                       groups.get("profile") or "none")

    def group_of(self, variant: Variant) -> str:
        return self.group

    def groups(self) -> tuple[str, ...]:
        """Every group its variants may be listed under."""
        return (self.group,)

    def label(self, variant: Variant) -> str:
        """Human-readable row name, e.g. "RAG (k=2)"."""
        raise NotImplementedError

    def unsupported(self, task: TaskSpec) -> str | None:
        """Why ``task`` cannot have this family (None when it can)."""
        return None

    def needs_history(self) -> bool:
        """Whether it needs the user's history at all (training or counting labels)."""
        return self.trains

    def base(self, variant: Variant) -> str | None:
        """The task-adapted base it runs on (``oppu.shared.personal.bases``); None when it
        uses no model. By default the base trained on its own prompt shape."""
        return base_kind(variant.k, variant.profile).name

    def evaluate(self, run: UserRunView, variant: Variant) -> EvalResult:
        raise NotImplementedError


FAMILIES: dict[str, Family] = {}
"""Family name -> family; ``ordered_families`` gives them in the paper's order."""


def register_family(family: Family) -> Family:
    if family.name in FAMILIES:
        raise ValueError(f"Variant family {family.name!r} is already registered.")
    FAMILIES[family.name] = family
    return family


def ordered_families() -> list[Family]:
    """The registered families by their ``order`` (the paper's)."""
    return sorted(FAMILIES.values(), key=lambda family: family.order)


def variant_forms() -> tuple[str, ...]:
    """Every valid form of variant name; J is the number of BM25-retrieved items."""
    return tuple(form for family in ordered_families() for form in family.forms)


def parse_variant(name: str) -> Variant:
    """The variant a name stands for; ValueError naming it and the valid forms otherwise."""
    for family in ordered_families():
        for pattern in family.patterns():
            match = re.fullmatch(pattern, name)
            if match is not None:
                return family.variant(name, match.groupdict())
    hint = ""
    if re.fullmatch(r"(random|rag)-k0", name):
        hint = " Retrieval variants need J >= 1 (with no items they are base-k0)."
    raise ValueError(f"Unknown suite variant {name!r}.{hint} Valid forms: "
                     f"{', '.join(variant_forms())}; e.g. rag-k1, oppu-ia3-k0.")
