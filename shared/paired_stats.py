"""Paired comparisons of two variants from statistics that add up across users.

A difference between two rows of Table 1 means something only with its uncertainty, and the
coordinator only ever sees sums (SecAgg+). So each user adds, per compared pair (variant A,
reference B, evaluated on the same queries), a small block of summable statistics:

- over users (every task kind): the number of users with queries, and the positive part,
  negative part and square of ``d = metric_A(user) - metric_B(user)`` (the user's own primary
  metric: accuracy, MAE or ROUGE-1). Their sums give a paired t-test and a confidence
  interval over users, the unit the paper's claim is about ("helps users").
- over examples: the same for ``e = score_A(example) - score_B(example)``. For classification
  ``e`` is +1 where only A is right and -1 where only B is, so its positive and negative parts
  are McNemar's discordant counts and give the exact test.

Every statistic is >= 0 (SecAgg+ encodes values in ``[0, stat-bound]``), which is why each
difference travels as its positive and negative parts. The distributions come from scipy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from oppu.shared.metrics import ClassificationMetric, MetricSpec, Stats, close_le_rounded
from oppu.shared.stat_tests import mcnemar, paired_t

PAIR_SEPARATOR = " vs "
"""``"<variant> vs <reference>"``: a comparison's block name."""


def pair_name(variant: str, reference: str) -> str:
    return f"{variant}{PAIR_SEPARATOR}{reference}"


def split_pair(name: str) -> tuple[str, str]:
    variant, _, reference = name.partition(PAIR_SEPARATOR)
    return variant, reference


class PairMetric(MetricSpec):
    """The summable statistics of one paired comparison of ``inner``'s primary metric.

    Layout: ``users, d_pos, d_neg, d_sq`` (per-user differences) then ``examples, e_pos,
    e_neg, e_sq`` (per-example differences); ``x_pos - x_neg`` is the summed difference.
    """

    kind = "paired"
    primary = "mean"

    def __init__(self, inner: MetricSpec):
        self.inner = inner
        # Accuracy and ROUGE lie in [0, 1], so a difference does too; an error has no bound.
        self._bound = math.inf if inner.kind == "rating" else 1.0

    def stat_names(self) -> list[str]:
        return ["users", "d_pos", "d_neg", "d_sq", "examples", "e_pos", "e_neg", "e_sq"]

    def whole_stat_names(self) -> list[str]:
        if isinstance(self.inner, ClassificationMetric):
            return ["users", "examples", "e_pos", "e_neg", "e_sq"]
        return ["users", "examples"]

    def update(self, stats: Stats, prediction: str, gold: str) -> None:
        raise TypeError("a comparison has two predictions per example; use user_stats()")

    def user_stats(self, predictions_a: Sequence[str], predictions_b: Sequence[str],
                   golds: Sequence[str]) -> Stats:
        """One user's contribution: both variants' predictions of the same queries."""
        if not len(predictions_a) == len(predictions_b) == len(golds):
            raise ValueError(f"a paired comparison needs both variants' predictions of the "
                             f"same queries: {len(predictions_a)}, {len(predictions_b)} "
                             f"predictions for {len(golds)} golds")
        stats = self.new_stats()
        if not golds:
            return stats
        scores_a = self.example_scores(predictions_a, golds)
        scores_b = self.example_scores(predictions_b, golds)
        # Every primary metric (accuracy, MAE, ROUGE-1) is the mean of its example scores.
        _add_difference(stats, "d", sum(scores_a) / len(golds) - sum(scores_b) / len(golds))
        stats["users"] = 1.0
        for a, b in zip(scores_a, scores_b, strict=True):
            _add_difference(stats, "e", a - b)
        stats["examples"] = float(len(golds))
        return stats

    def example_scores(self, predictions: Sequence[str], golds: Sequence[str]) -> list[float]:
        """Each example's primary metric on its own (1/0 correct, absolute error, ROUGE-1)."""
        primary = self.inner.primary
        return [self.inner.score([p], [g])[primary]
                for p, g in zip(predictions, golds, strict=True)]

    def compute(self, stats: Stats) -> dict[str, float]:
        """Mean differences (A - B, the metric's own units) with their interval and p-value:
        over users (paired t) and over examples (exact McNemar for classification, paired t
        otherwise). NaN where there are too few users or examples to say."""
        users = paired_t(stats["users"], stats["d_pos"] - stats["d_neg"], stats["d_sq"])
        if isinstance(self.inner, ClassificationMetric):
            examples = mcnemar(stats["e_pos"], stats["e_neg"], stats["examples"])
        else:
            examples = paired_t(stats["examples"], stats["e_pos"] - stats["e_neg"],
                                stats["e_sq"])
        return {"users": stats["users"], "mean": users["mean"], "low": users["low"],
                "high": users["high"], "p": users["p"], "examples": stats["examples"],
                "example_mean": examples["mean"], "example_p": examples["p"],
                "a_better": stats["e_pos"], "b_better": stats["e_neg"]}

    def _check(self, stats: Stats) -> list[str]:
        problems = self._integral(stats, self.whole_stat_names())
        for prefix, count in (("d", stats["users"]), ("e", stats["examples"])):
            total = stats[f"{prefix}_pos"] + stats[f"{prefix}_neg"]
            if not close_le_rounded(total, self._bound * count if count else 0.0, count):
                problems.append(f"{prefix}_pos + {prefix}_neg ({total:g}) is more than "
                                f"{self._bound:g} per one of {count:g}")
            # Cauchy-Schwarz: (sum |x|)^2 <= n * sum x^2
            if not close_le_rounded(total, math.sqrt(count * stats[f"{prefix}_sq"]), count):
                problems.append(f"({prefix}_pos + {prefix}_neg)^2 > {count:g} * "
                                f"{prefix}_sq: no differences have these sums")
        if stats["users"] > stats["examples"] + 1e-6:
            problems.append(f"{stats['users']:g} users but {stats['examples']:g} examples")
        return problems


def _add_difference(stats: Stats, prefix: str, difference: float) -> None:
    stats[f"{prefix}_pos"] += max(difference, 0.0)
    stats[f"{prefix}_neg"] += max(-difference, 0.0)
    stats[f"{prefix}_sq"] += difference * difference
