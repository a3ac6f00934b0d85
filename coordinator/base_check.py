"""Is the task-adapted base any good? Scored on base users it never trained on.

Every variant of a benchmark builds on the task-adapted base, so a base that answers worse
than a trivial rule spoils them all, silently. Adaptation therefore sets aside a share of
the base users (never test users) and scores on their queries: the untuned model, the base
after every epoch, and the trivial answer (the base users' most common answer, e.g. always
"5" for ratings). The epoch that scores best is kept (none, when the untuned model is
better), and a base below the trivial answer is reported with this table: ``adapt`` refuses
to save it unless told to, ``simulate`` says so in its report.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace

from oppu.shared.metrics import MetricSpec, make_metric
from oppu.shared.personal.evaluation import EvalQuery, has_labels, metric_labels, predictions
from oppu.shared.tasks import TaskSpec


@dataclass(frozen=True)
class AdaptQuery:
    """A base user's query in the adaptation variant's form: what the base learns from (or
    is checked on)."""

    user_id: str
    input: str
    gold: str
    retrieved: tuple = ()
    profile: str | None = None
    history: tuple = ()
    """The user's items before this query (LaMP's profile): the profile variant writes
    ``profile`` from them (only for the queries used: each is a generation), and the recipe
    choice trains on them (``base_recipe``)."""

    def prompt(self, task: TaskSpec) -> str:
        return task.build_prompt(self.input, retrieved=self.retrieved, profile=self.profile)


def with_profiles(queries: Sequence[AdaptQuery],
                  profile_of: Callable[[Sequence[Mapping]], str] | None) -> list[AdaptQuery]:
    """The queries with their profiles written (those that have profile items)."""
    if profile_of is None:
        return list(queries)
    return [replace(q, profile=profile_of(q.history)) if q.history else q for q in queries]


def split_check_users(queries: Sequence[AdaptQuery], share: float, min_users: int,
                      seed: int = 0) -> tuple[list[AdaptQuery], list[AdaptQuery]]:
    """(fit, check): a seeded ``share`` of the base users is held out whole, so the check
    scores people the base never saw. With fewer than ``min_users`` base users, none."""
    users = sorted({q.user_id for q in queries})
    count = round(len(users) * share)
    if len(users) < min_users or count < 1:
        return list(queries), []
    held = set(random.Random(seed).sample(users, count))
    return ([q for q in queries if q.user_id not in held],
            [q for q in queries if q.user_id in held])


def query_labels(task: TaskSpec, queries: Sequence[AdaptQuery | EvalQuery]
                 ) -> tuple[str, ...]:
    """One label set for scoring ``queries``: the labels each offers, then any gold outside
    them (a gold the metric does not know would stop the scoring)."""
    labels = dict.fromkeys(metric_labels(task, queries))
    if has_labels(task):
        labels.update(dict.fromkeys(q.gold.strip() for q in queries))
    return tuple(labels)


def trivial_answers(task: TaskSpec, fit: Sequence[AdaptQuery]) -> dict[str, str]:
    """Name -> answer of the rules a base must beat: the base users' most common answer
    (a label or rating; generation has no such rule)."""
    if not has_labels(task) or not fit:
        return {}
    answer = Counter(q.gold.strip() for q in fit).most_common(1)[0][0]
    return {f"always {answer!r} (the base users' most common answer)": answer}


@dataclass
class BaseCheck:
    """The check's scores, in the metric's own units (MAE: lower is better)."""

    metric: str
    higher_is_better: bool
    users: int
    queries: int
    untuned: float
    trivial: dict[str, float]
    epochs: list[float] = field(default_factory=list)
    """The base's score after each epoch of adaptation."""
    chosen_epochs: int = 0
    """Epochs kept: the best-scoring one, 0 when the untuned model scored best."""

    @property
    def adapted(self) -> float:
        return self.epochs[self.chosen_epochs - 1] if self.chosen_epochs else self.untuned

    def better(self, a: float, b: float) -> bool:
        return a > b if self.higher_is_better else a < b

    @property
    def beaten_by(self) -> list[str]:
        """The trivial rules that score better than the base that is kept."""
        return [name for name, score in self.trivial.items() if self.better(score, self.adapted)]

    def table(self) -> str:
        direction = "higher" if self.higher_is_better else "lower"
        rows = [("untuned model", self.untuned, not self.chosen_epochs)]
        rows += [(f"adapted, {epoch} epoch{'s' * (epoch > 1)}", score,
                  epoch == self.chosen_epochs) for epoch, score in enumerate(self.epochs, 1)]
        rows += [(name, score, False) for name, score in self.trivial.items()]
        width = max(len(name) for name, _, _ in rows)
        return "\n".join(
            [f"Base check on {self.queries} queries of {self.users} held-out base users "
             f"({self.metric}, {direction} is better):"]
            + [f"  {name:<{width}}  {score:.3f}{'  <- kept' if kept else ''}"
               for name, score, kept in rows])

    def warning(self) -> str | None:
        """Why this base should not be built on, or None."""
        if not self.beaten_by:
            return None
        return (f"The task-adapted base ({self.metric} {self.adapted:.3f}) is worse than "
                f"{'; '.join(self.beaten_by)} ({self.metric} "
                f"{self.trivial[self.beaten_by[0]]:.3f}) on held-out base users: every "
                "variant built on it starts below a trivial answer.")

    def to_dict(self) -> dict:
        return {**asdict(self), "adapted": self.adapted, "beaten_by": self.beaten_by}


class BaseScorer:
    """Scores a model on the check queries with the task's metric (one label set)."""

    def __init__(self, task: TaskSpec, check: Sequence[AdaptQuery]):
        self.task = task
        self.check = list(check)
        self.metric: MetricSpec = make_metric(task.kind, query_labels(task, check))

    def _value(self, predictions: Sequence[str]) -> float:
        golds = [q.gold for q in self.check]
        return self.metric.compute(self.metric.stats_for(predictions, golds))[self.metric.primary]

    def score(self, model, tokenizer) -> float:
        asked = [(q.input, q.retrieved, q.profile) for q in self.check]
        return self._value(list(predictions(model, tokenizer, self.task, asked)))

    def trivial(self, answers: dict[str, str]) -> dict[str, float]:
        return {name: self._value([answer] * len(self.check)) for name, answer in answers.items()}
