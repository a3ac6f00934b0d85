"""The user's own label prior: how often they gave each answer, mixed into label scores.

A small model often cannot read a subjective task (whose tweets one annotator calls hateful)
from the text alone, but the user's history says how often they give each answer. Adding
``weight * log p_user(label)`` to the model's label log-likelihood moves its decisions toward
the user's habits; weight 0 is the model alone and ``MAJORITY`` (infinite weight) is always
answering the user's most frequent label, with the model only breaking ties. Selection picks
the weight on the user's own validation items, on this machine: nothing about it is shared.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

MAJORITY = math.inf
"""The weight at which the prior decides alone: the user's most frequent label."""

PRIOR_WEIGHTS: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, MAJORITY)
"""Weights selection tries, least intervention first (ties go to the earlier)."""


@dataclass(frozen=True)
class LabelPrior:
    """Add-one smoothed log-frequencies of the user's answers, and the weight they get."""

    log_probs: Mapping[str, float]
    weight: float = 0.0
    floor: float = 0.0
    """Log-probability of a label the user never gave (the add-one share)."""

    @classmethod
    def of(cls, answers: Iterable[str], labels: Sequence[str], weight: float = 0.0
           ) -> LabelPrior:
        """The prior of ``answers`` over ``labels`` (answers outside them are ignored)."""
        counts = Counter(a for a in answers if a in set(labels))
        total = sum(counts.values()) + len(labels)
        return cls({label: math.log((counts[label] + 1) / total) for label in labels},
                   weight, math.log(1 / total))

    def with_weight(self, weight: float) -> LabelPrior:
        return LabelPrior(self.log_probs, weight, self.floor)

    def log_prob(self, label: str) -> float:
        return self.log_probs.get(label, self.floor)

    def choose(self, labels: Sequence[str], scores: Sequence[float]) -> str:
        """The best label by ``score + weight * log prior`` (earliest among equals)."""
        if self.weight == MAJORITY:
            key = lambda i: (self.log_prob(labels[i]), scores[i])  # noqa: E731
        else:
            key = lambda i: scores[i] + self.weight * self.log_prob(labels[i])  # noqa: E731
        return labels[max(range(len(labels)), key=key)]

    @property
    def described(self) -> str:
        if self.weight == MAJORITY:
            return "your most frequent answer"
        return f"the model with your answer frequencies at weight {self.weight:g}"

    def to_dict(self) -> dict:
        return {"log_probs": dict(self.log_probs), "weight": weight_json(self.weight),
                "floor": self.floor}

    @classmethod
    def from_dict(cls, data: Mapping) -> LabelPrior:
        weight = data["weight"]
        return cls(dict(data["log_probs"]), MAJORITY if weight == "majority" else float(weight),
                   float(data["floor"]))


def weight_json(weight: float) -> float | str:
    """A weight as JSON can hold it (the infinite majority weight by name)."""
    return "majority" if weight == MAJORITY else weight
