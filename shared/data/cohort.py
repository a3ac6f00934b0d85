"""A simulated cohort: a LaMP directory's test users in partition order, with their data.

Simulation mode maps Flower's ``partition-id`` to a test user. The coordinator (for the
label set every client's statistics are laid out by) and each virtual client (for its own
user) must agree on that order, so both read it from here: ``select_test_users`` order.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from oppu.shared.data.lamp import LampDataset, LampQuery, load_lamp
from oppu.shared.data.split import select_test_users, user_history


@dataclass(frozen=True)
class CohortUser:
    """One test user: training history (items before the first query) and queries."""

    user_id: str
    partition: int
    history: list[dict[str, Any]]
    queries: list[LampQuery]
    task: str

    def recent_history(self, max_items: int) -> list[dict[str, Any]]:
        """The newest ``max_items`` training items (all when ``max_items`` <= 0)."""
        return self.history[-max_items:] if max_items > 0 else list(self.history)

    @property
    def answered(self) -> list[LampQuery]:
        """The queries with a gold answer (the ones that can be scored)."""
        return [q for q in self.queries if q.gold is not None]

    def training_history(self, max_items: int, shift: float = 0.0) -> list[dict[str, Any]]:
        """What this user trains on: the newest ``max_items``, less under a behaviour shift
        the ``shift`` share most relevant to their queries (BM25; paper Table 3)."""
        from oppu.shared.data.items import resolve_task
        from oppu.shared.retrieval import least_relevant

        history = self.recent_history(max_items)
        if not shift:
            return history
        return least_relevant(resolve_task(self.task), history,
                              [q.input for q in self.answered], 1.0 - shift)


class LampCohort:
    """The test users of one LaMP directory, ``users[i]`` being partition ``i``."""

    def __init__(self, dataset: LampDataset, size: int | None = None):
        self.dataset = dataset
        users = select_test_users(dataset)
        self.users = tuple(users if size is None else users[:size])
        if not self.users:
            raise ValueError(f"{dataset.directory} has no test users (no queries with user "
                             "ids, and no split.json).")

    def __len__(self) -> int:
        return len(self.users)

    def user(self, partition: int) -> CohortUser:
        if not 0 <= partition < len(self.users):
            raise ValueError(f"partition {partition} has no test user: "
                             f"{self.dataset.directory} has {len(self.users)}; run at most "
                             f"that many virtual clients (num-supernodes).")
        user_id = self.users[partition]
        queries = self.dataset.users()[user_id]
        return CohortUser(user_id, partition, user_history(queries), list(queries),
                          self.dataset.task)

    def labels(self) -> tuple[str, ...]:
        """Every label the test users' queries offer (first-seen order); the task's otherwise.

        One fixed set for the whole cohort: each client lays its statistics out by it.
        """
        spec = self.dataset.spec
        seen: dict[str, None] = {}
        by_user = self.dataset.users()
        for user in self.users:
            for query in by_user[user]:
                seen.update(dict.fromkeys(spec.label_set(query.input)))
        return tuple(seen) or tuple(spec.labels or ())


@lru_cache(maxsize=4)
def load_cohort(data_dir: str | Path, task: str | None = None) -> LampCohort:
    """The cohort of ``data_dir``, read once per process (a simulation worker keeps it)."""
    return LampCohort(load_lamp(Path(data_dir).expanduser(), task))


def cohort_labels(data_dir: str | Path, task: str | None = None) -> tuple[str, ...]:
    return load_cohort(str(data_dir), task).labels()
