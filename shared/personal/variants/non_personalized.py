"""The task-adapted base with no personal parameters: alone (``base-k0``), with J random
history items (``random-kJ``, which tells relevance apart from merely seeing more text), or
with the top-J BM25 items (``rag-kJ``)."""

from __future__ import annotations

from typing import ClassVar

from oppu.shared.personal.variants.registry import K1, Family, Variant, register_family


class Base(Family):
    name = "base"
    forms = ("base-k0",)
    group = "Non-personalized"
    order = 0

    def patterns(self) -> tuple[str, ...]:
        return (r"base-k(?P<k>0)",)

    def label(self, variant: Variant) -> str:
        return f"Non-personalized (k={variant.k})"

    def evaluate(self, run, variant: Variant):
        return run.evaluate(run.model, variant.k)


class RandomHistory(Family):
    name = "random"
    forms = ("random-kJ (J>=1)",)
    group = "Non-personalized"
    order = 1

    def patterns(self) -> tuple[str, ...]:
        return (r"random" + K1,)

    def label(self, variant: Variant) -> str:
        return f"Random history (k={variant.k})"

    def evaluate(self, run, variant: Variant):
        return run.evaluate(run.model, variant.k, retrieval="random")


class Rag(Family):
    name = "rag"
    forms: ClassVar[tuple[str, ...]] = ("rag-kJ (J>=1)",)
    group = "RAG"
    order = 2

    def patterns(self) -> tuple[str, ...]:
        return (r"rag" + K1,)

    def label(self, variant: Variant) -> str:
        return f"RAG (k={variant.k})"

    def evaluate(self, run, variant: Variant):
        return run.evaluate(run.model, variant.k)


register_family(Base())
register_family(RandomHistory())
register_family(Rag())
