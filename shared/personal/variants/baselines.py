"""Baselines that say what personal parameters add: one adapter trained on all test users'
pooled histories (more data, nothing personal), and two trivial per-user answers (the
user's most frequent label; the label of the top BM25 history item)."""

from __future__ import annotations

from oppu.shared.personal.bases import PLAIN
from oppu.shared.personal.variants.registry import Family, K, Variant, register_family
from oppu.shared.tasks import TaskKind


class Pooled(Family):
    name = "pooled"
    forms = ("pooled-kJ",)
    group = "Baselines"
    order = 5

    def patterns(self) -> tuple[str, ...]:
        return (r"pooled" + K,)

    def label(self, variant: Variant) -> str:
        return f"Pooled adapter (k={variant.k})"

    def base(self, variant: Variant) -> str | None:
        return PLAIN  # the pooled adapter is trained on the plain base

    def evaluate(self, run, variant: Variant):
        return run.pooled(variant.k)


class Majority(Family):
    name = "majority"
    forms = ("majority",)
    group = "Baselines"
    order = 6

    def patterns(self) -> tuple[str, ...]:
        return ("majority",)

    def label(self, variant: Variant) -> str:
        return "Majority label"

    def unsupported(self, task) -> str | None:
        if task.kind == TaskKind.GENERATION:
            return f"{task.name} is a generation task: there is no label to take the majority of"
        if task.target_field is None:
            return f"{task.name} history items carry no label"
        return None

    def needs_history(self) -> bool:
        return True

    def base(self, variant: Variant) -> str | None:
        return None

    def evaluate(self, run, variant: Variant):
        return run.scored([run.majority_label()] * len(run.queries))


class TopBm25(Family):
    name = "top-bm25"
    forms = ("top-bm25",)
    group = "Baselines"
    order = 7

    def patterns(self) -> tuple[str, ...]:
        return ("top-bm25",)

    def label(self, variant: Variant) -> str:
        return "Top BM25 item"

    def unsupported(self, task) -> str | None:
        if task.kind != TaskKind.GENERATION and task.target_field is None:
            return f"{task.name} history items carry no label"
        return None

    def base(self, variant: Variant) -> str | None:
        return None

    def evaluate(self, run, variant: Variant):
        return run.scored([run.target_text(top[0]) if top else ""
                           for top in run.top_items(1)])


register_family(Pooled())
register_family(Majority())
register_family(TopBm25())
