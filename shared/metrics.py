"""LaMP metrics as summable per-user statistics.

Every metric is computed from a flat, fixed-order vector of float statistics that simply adds
across users. The coordinator only ever sees such sums (later under secure aggregation), so a
cohort's metric must be exact from the sums alone: no per-example values, no medians.

Scoring follows LaMP's own evaluation (LaMP-Benchmark/LaMP, ``eval/evaluation.py``):

- classification: prediction and gold are stripped; a prediction outside the label set is
  wrong (a false negative for the gold's class, a false positive for no class); macro-F1
  averages over *all* labels of the set, a class with no support and no prediction scoring 0
  (sklearn ``f1_score(labels=range(n), average="macro", zero_division=0)``).
- rating: a prediction that does not parse as a number counts as the rating farthest from the
  gold (1 if |1 - gold| > |5 - gold| else 5, with 1 and 5 the ends of the label range).
- generation: per-example ROUGE-1 / ROUGE-L F1 from ``rouge_score`` with the settings of HF
  ``evaluate``'s ``rouge`` (no stemming, default tokenizer).
"""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from enum import Enum
from functools import cached_property
from typing import Any

from oppu.shared.errors import InputError, Problem, brief
from oppu.shared.stat_tests import mean_interval, wilson_interval

Stats = dict[str, float]
"""Named statistics of one metric; ``MetricSpec.stat_names()`` gives their fixed order."""

# Counts may drift a little under fixed-point secure aggregation; accept that much slack.
_TOLERANCE = 1e-6

DEFAULT_RATING_LABELS = ("1", "2", "3", "4", "5")

MAX_STAT_VALUE = 1e12
"""Largest statistic accepted: a trillion examples is more than any cohort evaluates, so a
larger value is a corrupt or hostile upload, and sums stay far below 2**53, where floats stop
holding every whole number."""


class MetricSpec(ABC):
    """One task's metric: how to score an example into stats and stats into numbers."""

    kind: str
    primary: str
    """The metric a choice is made on (accuracy, MAE, ROUGE-1: the paper's first column)."""
    higher_is_better: bool = True
    perfect_score: float = 1.0
    """The best ``selection_score`` there is (accuracy or ROUGE 1, MAE 0): nothing beats it."""
    max_value: float = MAX_STAT_VALUE
    """Largest value any statistic may take (see ``MAX_STAT_VALUE``)."""

    def selection_score(self, stats: Stats) -> float:
        """The primary metric as "higher is better" (MAE negated): what selection maximizes."""
        value = self.compute(stats)[self.primary]
        return value if self.higher_is_better else -value

    @abstractmethod
    def stat_names(self) -> list[str]:
        """Names of the statistics, in the order of ``to_vector``."""

    @abstractmethod
    def update(self, stats: Stats, prediction: str, gold: str) -> None:
        """Add one example's contribution to ``stats`` (in place)."""

    @abstractmethod
    def compute(self, stats: Stats) -> dict[str, float]:
        """The task's metrics (and ``count``) from summed statistics; NaN when count is 0."""

    @abstractmethod
    def _check(self, stats: Stats) -> list[str]:
        """Kind-specific impossibilities in ``stats`` (already known finite and >= 0)."""

    def interval(self, stats: Stats) -> tuple[float, float]:
        """The primary metric's 95% confidence interval over examples (NaN when too few)."""
        raise NotImplementedError(f"{type(self).__name__} has no interval")

    def whole_stat_names(self) -> list[str]:
        """Statistics that are whole numbers by construction (counts)."""
        return ["count"]

    def new_stats(self) -> Stats:
        """All-zero statistics: the identity of ``add``."""
        return dict.fromkeys(self.stat_names(), 0.0)

    def add(self, a: Stats, b: Stats) -> Stats:
        """Element-wise sum: the statistics of the union of both example sets."""
        return {name: a[name] + b[name] for name in self.stat_names()}

    def sum(self, many: Iterable[Stats]) -> Stats:
        """Sum of any number of users' statistics."""
        total = self.new_stats()
        for stats in many:
            total = self.add(total, stats)
        return total

    def stats_for(self, predictions: Sequence[str], golds: Sequence[str]) -> Stats:
        """Statistics of a whole list of examples."""
        if len(predictions) != len(golds):
            raise ValueError(
                f"{len(predictions)} predictions but {len(golds)} golds; pass one of each per "
                "example"
            )
        stats = self.new_stats()
        for prediction, gold in zip(predictions, golds, strict=True):
            self.update(stats, prediction, gold)
        return stats

    def score(self, predictions: Sequence[str], golds: Sequence[str]) -> dict[str, float]:
        """Metrics of a list of examples (convenience for local evaluation)."""
        return self.compute(self.stats_for(predictions, golds))

    def to_vector(self, stats: Stats) -> list[float]:
        """The flat vector that is summed across users (fixed order, see ``stat_names``)."""
        names = self.stat_names()
        missing = [n for n in names if n not in stats]
        if missing or len(stats) != len(names):
            extra = sorted(set(stats) - set(names))
            raise ValueError(
                f"stats do not match this {self.kind} metric: missing {missing}, extra {extra}"
            )
        return [float(stats[n]) for n in names]

    def from_vector(self, vector: Sequence[float]) -> Stats:
        """Named statistics from a vector (e.g. a client's upload), checked with
        ``validate_stats``; anything but a list of plausible numbers is an ``InputError``."""
        names = self.stat_names()
        try:
            values = list(vector)
        except TypeError:
            raise InputError(f"expected a list of {len(names)} statistics for this {self.kind} "
                             f"metric, got {brief(vector)}") from None
        if len(values) != len(names):
            raise InputError(
                f"expected {len(names)} statistics for this {self.kind} metric, got {len(values)}"
            )
        stats = dict(zip(names, values, strict=True))
        self.validate_stats(stats)
        return {n: float(v) for n, v in stats.items()}

    def validate_stats(self, stats: Mapping[str, float] | Sequence[float]) -> None:
        """Reject statistics no set of examples could produce (e.g. a client's bad upload).

        Raises ``InputError`` listing every impossibility, each naming its statistic: wrong
        length or names, values that are not numbers, NaN or infinite values, negative values,
        values over ``max_value``, fractional counts, and kind-specific bounds such as
        ``correct > count``.
        """
        if not isinstance(stats, Mapping):
            try:
                stats = list(stats)
            except TypeError:
                raise InputError(f"statistics must be a list or mapping of numbers, got "
                                 f"{brief(stats)}") from None
            if len(stats) != len(self.stat_names()):
                raise InputError(
                    f"expected {len(self.stat_names())} statistics for this {self.kind} "
                    f"metric, got {len(stats)}"
                )
            stats = dict(zip(self.stat_names(), stats, strict=True))
        if set(stats) != set(self.stat_names()):
            raise InputError(
                f"statistics do not match this {self.kind} metric: expected "
                f"{self.stat_names()}, got {brief(sorted(map(str, stats)))}"
            )
        problems = [p for p in (self._value_problem(n, stats[n]) for n in self.stat_names()) if p]
        if not problems:
            problems = self._check({n: float(v) for n, v in stats.items()})
        if problems:
            raise InputError([Problem(f"impossible {self.kind} statistics: {p}") for p in problems])

    def _value_problem(self, name: str, value: Any) -> str | None:
        """Why ``value`` cannot be statistic ``name`` on its own, or None."""
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return f"'{name}' is not a number: {brief(value)}"
        try:
            number = float(value)
        except (OverflowError, ValueError, TypeError):
            return f"'{name}' is too large: {brief(value)}"
        if not math.isfinite(number):
            return f"'{name}' is {number}"
        if number < -_TOLERANCE:
            return f"'{name}' is negative: {number}"
        if number > self.max_value:
            return f"'{name}' is implausibly large: {number:g} > {self.max_value:g}"
        return None

    def _integral(self, stats: Stats, names: Iterable[str]) -> list[str]:
        return [
            f"'{n}' should be a whole number, got {stats[n]}"
            for n in names
            if abs(stats[n] - round(stats[n])) > _TOLERANCE
        ]


ROUNDING_SLACK = 0.01
"""Per example, how far a fractional sum may stray past a bound it meets with equality (e.g.
every ROUGE-1 at 1, so its squares sum to it): SecAgg+ rounds each client's value to one
quantization step (``secagg_encoding``), which exact bounds would refuse."""


def close_le_rounded(a: float, b: float, count: float) -> bool:
    """``a <= b`` for fractional sums, up to what SecAgg+ rounding may add."""
    return a <= b + 0.5 + ROUNDING_SLACK * count


def _close_le(a: float, b: float, count: float) -> bool:
    """``a <= b`` up to the slack allowed for aggregated sums."""
    return a <= b + _TOLERANCE * max(1.0, count)


class ClassificationMetric(MetricSpec):
    """Accuracy and macro-F1 over a fixed label set.

    Layout: ``count, correct, tp[l0..ln-1], fp[l0..ln-1], fn[l0..ln-1]``.
    """

    kind = "classification"
    primary = "accuracy"

    def __init__(self, labels: Sequence[str]):
        labels = tuple(labels)
        if not labels:
            raise ValueError("a classification metric needs at least one label")
        duplicates = sorted({lab for lab in labels if labels.count(lab) > 1})
        if duplicates:
            raise ValueError(f"duplicate labels in the label set: {duplicates}")
        self.labels = labels
        self._index = {lab: i for i, lab in enumerate(labels)}

    def stat_names(self) -> list[str]:
        per_class = [f"{s}[{lab}]" for s in ("tp", "fp", "fn") for lab in self.labels]
        return ["count", "correct", *per_class]

    def whole_stat_names(self) -> list[str]:
        return self.stat_names()  # counts of examples, hits and per-class outcomes

    def update(self, stats: Stats, prediction: str, gold: str) -> None:
        gold_label = str(gold).strip()
        if gold_label not in self._index:
            raise InputError(
                f"gold label {gold_label!r} is not in the label set {list(self.labels)}"
            )
        pred_label = str(prediction).strip()
        stats["count"] += 1
        if pred_label == gold_label:
            stats["correct"] += 1
            stats[f"tp[{gold_label}]"] += 1
            return
        stats[f"fn[{gold_label}]"] += 1
        if pred_label in self._index:  # an out-of-set prediction is a false positive for none
            stats[f"fp[{pred_label}]"] += 1

    def compute(self, stats: Stats) -> dict[str, float]:
        count = stats["count"]
        if count == 0:
            return {"accuracy": math.nan, "f1": math.nan, "count": 0.0}
        f1s = []
        for lab in self.labels:
            tp, fp, fn = stats[f"tp[{lab}]"], stats[f"fp[{lab}]"], stats[f"fn[{lab}]"]
            denominator = 2 * tp + fp + fn
            f1s.append(2 * tp / denominator if denominator else 0.0)
        return {"accuracy": stats["correct"] / count, "f1": sum(f1s) / len(f1s), "count": count}

    def interval(self, stats: Stats) -> tuple[float, float]:
        """Wilson interval of accuracy (macro-F1 has none from these sums)."""
        return wilson_interval(stats["correct"], stats["count"])

    def _check(self, stats: Stats) -> list[str]:
        count = stats["count"]
        problems = self._integral(stats, self.stat_names())
        tp = sum(stats[f"tp[{lab}]"] for lab in self.labels)
        fp = sum(stats[f"fp[{lab}]"] for lab in self.labels)
        fn = sum(stats[f"fn[{lab}]"] for lab in self.labels)
        if not _close_le(stats["correct"], count, count):
            problems.append(f"correct ({stats['correct']}) > count ({count})")
        if abs(tp - stats["correct"]) > _TOLERANCE * max(1.0, count):
            problems.append(f"true positives ({tp}) differ from correct ({stats['correct']})")
        if abs(tp + fn - count) > _TOLERANCE * max(1.0, count):
            problems.append(f"true positives + false negatives ({tp + fn}) != count ({count})")
        if not _close_le(fp, fn, count):
            problems.append(f"false positives ({fp}) > false negatives ({fn})")
        return problems


class RatingMetric(MetricSpec):
    """MAE and RMSE of numeric ratings. Layout: ``count, abs_err, sq_err``."""

    kind = "rating"
    primary = "mae"
    higher_is_better = False
    perfect_score = 0.0

    def __init__(self, labels: Sequence[str] = DEFAULT_RATING_LABELS):
        try:
            values = [float(lab) for lab in (labels or DEFAULT_RATING_LABELS)]
        except ValueError as exc:
            raise ValueError(f"rating labels must be numbers, got {list(labels)}") from exc
        self.low, self.high = min(values), max(values)

    def stat_names(self) -> list[str]:
        return ["count", "abs_err", "sq_err"]

    def parse(self, prediction: str, gold: float) -> float:
        """LaMP's rule: a number as is, anything else as the rating farthest from ``gold``."""
        try:
            value = float(str(prediction).strip())
        except ValueError:
            value = math.nan
        if math.isfinite(value):
            return value
        return self.low if abs(self.low - gold) > abs(self.high - gold) else self.high

    def update(self, stats: Stats, prediction: str, gold: str) -> None:
        try:
            gold_value = float(str(gold).strip())
        except ValueError:
            gold_value = math.nan
        if not math.isfinite(gold_value):
            raise InputError(f"gold rating {gold!r} is not a number")
        error = self.parse(prediction, gold_value) - gold_value
        stats["count"] += 1
        stats["abs_err"] += abs(error)
        stats["sq_err"] += error * error

    def compute(self, stats: Stats) -> dict[str, float]:
        count = stats["count"]
        if count == 0:
            return {"mae": math.nan, "rmse": math.nan, "count": 0.0}
        return {
            "mae": stats["abs_err"] / count,
            "rmse": math.sqrt(stats["sq_err"] / count),
            "count": count,
        }

    def interval(self, stats: Stats) -> tuple[float, float]:
        """t interval of MAE: the absolute errors' squares are the squared errors."""
        return mean_interval(stats["count"], stats["abs_err"], stats["sq_err"])

    def _check(self, stats: Stats) -> list[str]:
        count, abs_err, sq_err = stats["count"], stats["abs_err"], stats["sq_err"]
        problems = self._integral(stats, ["count"])
        if count == 0 and (abs_err > _TOLERANCE or sq_err > _TOLERANCE):
            problems.append("errors summed over zero examples")
        # Cauchy-Schwarz: (sum |e|)^2 <= n * sum e^2.
        elif count > 0 and not close_le_rounded(abs_err, math.sqrt(count * sq_err), count):
            problems.append(f"abs_err^2 ({abs_err**2}) > count * sq_err ({count * sq_err})")
        return problems


BLEU_ORDERS = 4


class _NoWordNet:
    """METEOR's synonym stage without WordNet data (no hub may supply it at run time): no
    word has synonyms, so only the exact and Porter-stem stages match."""

    @staticmethod
    def synsets(*_args: Any, **_kwargs: Any) -> list:
        return []


class GenerationMetric(MetricSpec):
    """Mean ROUGE-1 and ROUGE-L F1, corpus BLEU and mean METEOR.

    Layout: ``count, rouge1, rougeL, rouge1_sq, meteor`` (sums of per-example scores, and of
    ROUGE-1's squares for its interval), then BLEU's corpus statistics ``bleu_sys_len,
    bleu_ref_len, bleu_correct_1..4, bleu_total_1..4``: corpus BLEU is a function of those
    sums, so the pooled score is sacrebleu's own corpus BLEU (default 13a tokenizer, 0-100).
    METEOR is nltk's with lowercased whitespace tokens and the exact and stem stages only
    (``_NoWordNet``).

    We report the exact mean of per-example F1. HF ``evaluate`` (which LaMP calls) reports the
    mid point of a bootstrap over the examples instead, which is random and cannot be rebuilt
    from sums; the two differ only by bootstrap noise.
    """

    kind = "generation"
    primary = "rouge-1"

    @cached_property
    def _scorer(self) -> Any:
        from rouge_score import rouge_scorer  # imported lazily: pulls in nltk

        return rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=False)

    @cached_property
    def _bleu(self) -> Any:
        from sacrebleu.metrics import BLEU

        return BLEU(effective_order=True)  # sentence statistics only; the corpus score below

    def stat_names(self) -> list[str]:
        orders = range(1, BLEU_ORDERS + 1)
        return ["count", "rouge1", "rougeL", "rouge1_sq", "meteor", "bleu_sys_len",
                "bleu_ref_len", *(f"bleu_correct_{n}" for n in orders),
                *(f"bleu_total_{n}" for n in orders)]

    def whole_stat_names(self) -> list[str]:
        return ["count", *(n for n in self.stat_names() if n.startswith("bleu_"))]

    def update(self, stats: Stats, prediction: str, gold: str) -> None:
        from nltk.translate.meteor_score import meteor_score

        gold, prediction = str(gold).strip(), str(prediction).strip()
        scores = self._scorer.score(gold, prediction)
        stats["count"] += 1
        stats["rouge1"] += scores["rouge1"].fmeasure
        stats["rougeL"] += scores["rougeL"].fmeasure
        stats["rouge1_sq"] += scores["rouge1"].fmeasure ** 2
        stats["meteor"] += meteor_score([gold.lower().split()], prediction.lower().split(),
                                        wordnet=_NoWordNet())
        bleu = self._bleu.sentence_score(prediction, [gold])
        stats["bleu_sys_len"] += bleu.sys_len
        stats["bleu_ref_len"] += bleu.ref_len
        for n in range(BLEU_ORDERS):
            stats[f"bleu_correct_{n + 1}"] += bleu.counts[n]
            stats[f"bleu_total_{n + 1}"] += bleu.totals[n]

    def compute(self, stats: Stats) -> dict[str, float]:
        count = stats["count"]
        if count == 0:
            return {"rouge-1": math.nan, "rouge-l": math.nan, "bleu": math.nan,
                    "meteor": math.nan, "count": 0.0}
        orders = range(1, BLEU_ORDERS + 1)
        bleu = self._bleu.compute_bleu(
            correct=[int(stats[f"bleu_correct_{n}"]) for n in orders],
            total=[int(stats[f"bleu_total_{n}"]) for n in orders],
            sys_len=int(stats["bleu_sys_len"]), ref_len=int(stats["bleu_ref_len"]),
            effective_order=False)
        return {
            "rouge-1": stats["rouge1"] / count,
            "rouge-l": stats["rougeL"] / count,
            "bleu": bleu.score,
            "meteor": stats["meteor"] / count,
            "count": count,
        }

    def interval(self, stats: Stats) -> tuple[float, float]:
        """t interval of mean ROUGE-1 over examples."""
        return mean_interval(stats["count"], stats["rouge1"], stats["rouge1_sq"])

    def _check(self, stats: Stats) -> list[str]:
        count = stats["count"]
        problems = self._integral(stats, self.whole_stat_names())
        for name in ("rouge1", "rougeL", "meteor"):
            if not close_le_rounded(stats[name], count, count):
                problems.append(f"'{name}' ({stats[name]}) > count ({count}); a score is at "
                                "most 1")
        if not close_le_rounded(stats["rouge1_sq"], stats["rouge1"], count):
            problems.append(f"'rouge1_sq' ({stats['rouge1_sq']}) > 'rouge1' ({stats['rouge1']}); "
                            "squares of F1 are at most the F1")
        for n in range(1, BLEU_ORDERS + 1):
            correct, total = stats[f"bleu_correct_{n}"], stats[f"bleu_total_{n}"]
            if not _close_le(correct, total, count):
                problems.append(f"'bleu_correct_{n}' ({correct}) > 'bleu_total_{n}' ({total})")
        return problems


def make_metric(kind: str | Enum, labels: Sequence[str] = ()) -> MetricSpec:
    """The metric for a task kind ("classification", "rating", "generation").

    ``labels`` is the classification label set (required there) or the rating scale (default
    "1".."5"); generation ignores it. Accepts ``TaskKind`` members too.
    """
    name = str(kind.value if isinstance(kind, Enum) else kind).lower()
    if name == "classification":
        return ClassificationMetric(labels)
    if name == "rating":
        return RatingMetric(labels or DEFAULT_RATING_LABELS)
    if name == "generation":
        return GenerationMetric()
    raise ValueError(
        f"unknown metric kind {kind!r}; use 'classification', 'rating' or 'generation'"
    )


def json_safe(value: Any) -> Any:
    """``value`` with NaN/inf as None (JSON has no NaN: a metric of no examples is NaN);
    containers are copied, the input untouched."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
