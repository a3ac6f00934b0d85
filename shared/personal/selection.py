"""Local, private recipe selection: the user's own newest training items choose the recipe.

A share of the training items (the newest, as the evaluation split) is set aside for
validation. A small grid of learning rates trains on the rest, each stopped after two epochs
without a better validation score (a small model often learns the label frequencies first
and the user's rule an epoch or two later), and the best epoch's weights are kept. Every
candidate (the base, the previous adapter, each epoch) is scored with the weight of the user's
label prior that validates best (``label_prior``; its limit is the user's most frequent
label), so what is kept never validates below always answering that label. The adapter is
used only if it beats the base (and the user's previous adapter) on that validation share;
otherwise the user is told with the numbers and keeps what was better. Nothing about the
choice leaves the machine. The grid and its defaults were chosen on data no test user's
queries are in (see the README, "Recipe selection").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

from oppu.shared.data import split_history
from oppu.shared.personal.label_prior import weight_json

Scored = tuple[float, float]
"""A candidate's validation score and the label-prior weight that gave it."""


@dataclass(frozen=True)
class SelectionSettings:
    """The grid and its bounds; ``None`` as a run's selection turns it off."""

    lrs: tuple[float, ...] = field(default=(1e-3, 3e-3), metadata={
        "help": "Learning rates tried, in order (ties go to the earlier)."})
    max_epochs: int = field(default=4, metadata={"help": "Epochs a grid point may train."})
    patience: int = field(default=2, metadata={
        "help": "Epochs without a better validation score before a grid point stops."})
    val_share: float = field(default=0.2, metadata={
        "help": "Newest share of the training items set aside to choose on."})
    min_val_items: int = field(default=5, metadata={
        "help": "Fewer validation items than this: no selection (the recipe as given)."})

    def __post_init__(self) -> None:
        if not self.lrs or any(lr <= 0 for lr in self.lrs):
            raise ValueError(f"selection needs positive learning rates (got {self.lrs}).")
        if self.max_epochs < 1 or self.patience < 1:
            raise ValueError("selection's max_epochs and patience must be >= 1.")
        if not 0 < self.val_share < 1:
            raise ValueError(f"val_share must be in (0, 1) (got {self.val_share}).")


@dataclass
class GridPoint:
    """One learning rate's run: its validation score after every epoch."""

    lr: float
    scores: list[float] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    """The label-prior weight behind each epoch's score."""
    seconds: float = 0.0

    @property
    def best_epoch(self) -> int:
        """1-based epoch of the best score (the earliest among equals)."""
        return max(range(len(self.scores)), key=lambda i: (self.scores[i], -i)) + 1

    @property
    def best_score(self) -> float:
        return self.scores[self.best_epoch - 1] if self.scores else float("-inf")

    @property
    def best_weight(self) -> float:
        return self.weights[self.best_epoch - 1] if self.weights else 0.0


@dataclass
class SelectionReport:
    """What selection tried and chose; shown to the user, kept in the adapter's metadata."""

    metric: str
    higher_is_better: bool
    fit_items: int
    val_items: int
    base_score: float
    previous_score: float | None
    grid: list[GridPoint]
    chosen: str = "adapter"
    """"adapter" (the new one), "previous" (the user's earlier adapter) or "base"."""
    base_weight: float = 0.0
    previous_weight: float = 0.0
    seconds: float = 0.0

    @property
    def prior_weight(self) -> float:
        """The label-prior weight that goes with what was chosen."""
        if self.chosen == "adapter" and self.best is not None:
            return self.best.best_weight
        return self.previous_weight if self.chosen == "previous" else self.base_weight

    @property
    def best(self) -> GridPoint | None:
        """The best grid point (the first among equals); None when nothing was trained."""
        return max(self.grid, key=lambda p: p.best_score) if self.grid else None

    def shown(self, score: float) -> float:
        """A score in the metric's own sign (MAE positive again)."""
        return score if self.higher_is_better else -score

    def summary(self) -> str:
        best = self.best
        parts = [f"validation on your newest {self.val_items} training items ({self.metric}): "
                 f"base {self.shown(self.base_score):.3f}{_prior(self.base_weight)}"]
        if self.previous_score is not None:
            parts.append(f"previous adapter {self.shown(self.previous_score):.3f}"
                         f"{_prior(self.previous_weight)}")
        if best is None:
            parts.append("nothing can beat that score, so no adapter was trained")
        else:
            parts.append(f"best new adapter {self.shown(best.best_score):.3f} "
                         f"(lr {best.lr:g}, {best.best_epoch} epochs{_prior(best.best_weight)})")
        verdict = {"adapter": "the new adapter is used",
                   "previous": "no new adapter beat your previous one: it stays in use",
                   "base": "no adapter beat the base model: the base is used"}[self.chosen]
        if self.prior_weight == float("inf"):
            verdict += ", answering your most frequent label (the model only breaks ties)"
        elif self.prior_weight:
            verdict += f", with your answer frequencies at weight {self.prior_weight:g}"
        return "; ".join(parts) + f". {verdict}."

    def to_dict(self) -> dict:
        """JSON-ready (the majority weight, infinite, as "majority")."""
        data = asdict(self)
        for key in ("base_weight", "previous_weight"):
            data[key] = weight_json(data[key])
        for point in data["grid"]:
            point["weights"] = [weight_json(w) for w in point["weights"]]
        best = self.best
        data["best"] = None if best is None else {"lr": best.lr, "epochs": best.best_epoch,
                                                  "score": best.best_score}
        data["prior_weight"] = weight_json(self.prior_weight)
        return data


def _prior(weight: float) -> str:
    """How a score was reached, when the label prior took part."""
    if weight == float("inf"):
        return " as your most frequent label"
    return f" with your answer frequencies at weight {weight:g}" if weight else ""


def validation_split(items: Sequence[Mapping], settings: SelectionSettings
                     ) -> tuple[list[Mapping], list[Mapping]] | None:
    """(fit, validation): the newest share is validation; None when too few to choose on."""
    count = max(settings.min_val_items, round(len(items) * settings.val_share))
    if len(items) < 2 * count:
        return None
    fit, val = split_history(items, count)
    return list(fit), list(val)


def run_grid(settings: SelectionSettings, train: Callable[[float, Callable[[int], bool]], None],
             score: Callable[[], Scored], snapshot: Callable[[], object]
             ) -> tuple[list[GridPoint], object | None]:
    """Train every grid point with early stopping; the best epoch's weights overall.

    ``train(lr, on_epoch_end)`` trains a fresh adapter; ``score()`` scores the adapter being
    trained on the validation queries (with its best label-prior weight); ``snapshot()``
    copies its weights.
    """
    points: list[GridPoint] = []
    best_score, best_state = float("-inf"), None
    for lr in settings.lrs:
        point = GridPoint(lr)
        started = time.perf_counter()

        def on_epoch_end(epoch: int, point: GridPoint = point) -> bool:
            nonlocal best_score, best_state
            value, weight = score()
            point.scores.append(value)
            point.weights.append(weight)
            if point.scores[-1] > best_score:
                best_score, best_state = point.scores[-1], snapshot()
            since_best = len(point.scores) - point.best_epoch
            return since_best >= settings.patience or len(point.scores) >= settings.max_epochs

        train(lr, on_epoch_end)
        point.seconds = time.perf_counter() - started
        points.append(point)
    return points, best_state


def choose(base_score: float, previous_score: float | None, best_score: float | None) -> str:
    """The new adapter only if strictly better than the base and the previous adapter."""
    if best_score is not None and best_score > base_score and (
            previous_score is None or best_score > previous_score):
        return "adapter"
    if previous_score is not None and previous_score > base_score:
        return "previous"
    return "base"
