"""The private adapter's recipe, chosen on base users: never on a test user's queries.

After task adaptation, a seeded sample of the held-out base users (whose queries the base
never trained on, ``base_check``) each train private adapters on their own history (the
items before their first query) with every learning rate of the selection grid, scored on
their own queries after every epoch. The learning rate and epoch count with the best mean
score over those users is the simulation's recipe by default, stored in the base artifact's
manifest. Test users' queries take no part in any choice.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

from oppu.coordinator.base_check import AdaptQuery, query_labels
from oppu.shared.metrics import make_metric
from oppu.shared.personal.evaluation import EvalQuery, evaluate_queries
from oppu.shared.personal.private_adapter import fresh_adapter, train_private_adapter
from oppu.shared.personal.recipe import PersonalizeSettings
from oppu.shared.personal.selection import SelectionSettings
from oppu.shared.tasks import TaskSpec

MIN_HISTORY = 2
"""A base user with fewer history items has nothing to train a private adapter on."""


@dataclass
class RecipeChoice:
    """The chosen learning rate and epochs, and the mean scores behind them."""

    lr: float
    epochs: int
    metric: str
    users: list[str]
    mean_scores: dict[str, list[float]]
    """Learning rate (as text) -> mean score over the users after each epoch (higher is
    better: MAE negated)."""

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        best = self.mean_scores[f"{self.lr:g}"][self.epochs - 1]
        return (f"Private-adapter recipe chosen on {len(self.users)} held-out base users: "
                f"lr {self.lr:g}, {self.epochs} epoch(s) (mean {self.metric} {abs(best):.3f} "
                "on their own queries).")


def _by_user(queries: Sequence[AdaptQuery]) -> dict[str, list[AdaptQuery]]:
    users: dict[str, list[AdaptQuery]] = defaultdict(list)
    for query in queries:
        users[query.user_id].append(query)
    return users


def choose_recipe(model, tokenizer, task: TaskSpec, check: Sequence[AdaptQuery],
                  personal: PersonalizeSettings, grid: SelectionSettings, *,
                  max_users: int = 8, seed: int = 0) -> RecipeChoice | None:
    """The grid point (learning rate, epochs) with the best mean score over a sample of the
    check's base users; None when none of them has a history to train on."""
    users = _by_user(check)
    eligible = sorted(u for u, qs in users.items()
                      if len(min((q.history for q in qs), key=len)) >= MIN_HISTORY)
    sample = random.Random(seed).sample(eligible, min(max_users, len(eligible)))
    if not sample:
        return None
    from tqdm.auto import tqdm

    scores: dict[tuple[float, int], list[float]] = defaultdict(list)
    metric_name = ""
    # Minutes of training with nothing else printed: a bar over (user, learning rate).
    with tqdm(total=len(sample) * len(grid.lrs), desc="recipe on base users",
              unit="adapter") as bar:
        for user in sorted(sample):
            metric_name, user_scores = _user_scores(model, tokenizer, task, users[user],
                                                    personal, grid, on_adapter=bar.update)
            for point, value in user_scores.items():
                scores[point].append(value)

    def mean(lr: float, epoch: int) -> float:  # an epoch a step cap cut short never wins
        values = scores[lr, epoch]
        return sum(values) / len(values) if len(values) == len(sample) else float("-inf")

    lr, epochs = max(((lr, e) for lr in grid.lrs for e in range(1, grid.max_epochs + 1)),
                     key=lambda point: (mean(*point), -point[1]))
    return RecipeChoice(lr, epochs, metric_name, sorted(sample),
                        {f"{lr:g}": [mean(lr, e) for e in range(1, grid.max_epochs + 1)]
                         for lr in grid.lrs})


def _user_scores(model, tokenizer, task: TaskSpec, queries: Sequence[AdaptQuery],
                 personal: PersonalizeSettings, grid: SelectionSettings, *,
                 on_adapter: Callable[[], object] = lambda: None
                 ) -> tuple[str, dict[tuple[float, int], float]]:
    """One base user's score on their own queries after each epoch at each learning rate,
    training on the items before their first query."""
    history = list(min((q.history for q in queries), key=len))
    evals = [EvalQuery(q.input, q.gold, q.history) for q in queries]
    labels = query_labels(task, evals) or None
    metric = make_metric(task.kind, labels or ())
    scores: dict[tuple[float, int], float] = {}
    for lr in grid.lrs:
        settings = replace(personal, train=replace(personal.train, lr=lr,
                                                   epochs=grid.max_epochs))
        with fresh_adapter(model, personal.peft, seed=personal.train.seed) as peft_model:

            def on_epoch_end(epoch: int, peft_model=peft_model, lr=lr) -> bool:
                result = evaluate_queries(peft_model, tokenizer, task, evals, k=personal.k,
                                          labels=labels)
                scores[lr, epoch] = metric.selection_score(result.stats)
                return False

            train_private_adapter(peft_model, tokenizer, task, history, settings,
                                  labels=labels, show_progress=False,
                                  description=f"recipe lr {lr:g}", on_epoch_end=on_epoch_end)
        on_adapter()
    return metric.primary, scores
