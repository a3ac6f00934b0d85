"""Time-based splits: who is a test user, and which of a user's items are held out.

LaMP's time-based setting evaluates on each user's *latest* items with only earlier ones to
learn from, so held-out items are always the newest; a random split would leak the future.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from oppu.shared.data.items import parse_timestamp
from oppu.shared.data.lamp import LampDataset

Item = TypeVar("Item", bound=Mapping[str, Any])

DEFAULT_TEST_USERS = 100


def _item_key(item: Mapping[str, Any]) -> str:
    """Identity of a profile item, so items repeated across a user's queries count once."""
    if "id" in item:
        return f"id:{item['id']}"
    try:
        return json.dumps(item, sort_keys=True, default=str)
    except (RecursionError, ValueError):  # deeply nested extras: count the item on its own
        return f"object:{id(item)}"


def user_activity(dataset: LampDataset) -> dict[str, int]:
    """Per user: distinct profile items plus queries (about the number of items they wrote)."""
    activity = {}
    for user, queries in dataset.users().items():
        items = {_item_key(item) for query in queries for item in query.profile}
        activity[user] = len(items) + len(queries)
    return activity


def select_test_users(dataset: LampDataset, n: int = DEFAULT_TEST_USERS) -> list[str]:
    """The dataset's split.json test users, else the ``n`` most active users.

    Ties are broken by user id, so the choice is the same on every machine.
    """
    if dataset.split is not None:
        return list(dataset.split.test_users)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    activity = user_activity(dataset)
    ranked = sorted(activity, key=lambda user: (-activity[user], user))
    return ranked[:n]


def base_users(dataset: LampDataset, test_users: Sequence[str] | None = None) -> list[str]:
    """Every user not in the test set (these may adapt the shared base model)."""
    test = set(select_test_users(dataset) if test_users is None else test_users)
    return [user for user in dataset.users() if user not in test]


def holdout_count(n_items: int, holdout: float | int) -> int:
    """How many of ``n_items`` to hold out: a float fraction (0 < f < 1, at least 1) or an int.

    At least one item is always kept for training.
    """
    if isinstance(holdout, bool) or not isinstance(holdout, (int, float)):
        raise ValueError(f"holdout must be a fraction or a count, got {holdout!r}")
    if isinstance(holdout, float):
        if not 0 < holdout < 1:
            raise ValueError(f"a holdout fraction must be between 0 and 1, got {holdout}")
        count = max(1, round(holdout * n_items))
    else:
        if holdout < 0:
            raise ValueError(f"a holdout count must be >= 0, got {holdout}")
        count = int(holdout)
    return max(0, min(count, n_items - 1))


def time_order(items: Sequence[Item]) -> list[Item]:
    """Items oldest first: by ``timestamp`` when every item has a valid one, else file order."""
    stamps = [parse_timestamp(item.get("timestamp")) for item in items]
    if items and all(stamp is not None for stamp in stamps):
        order = sorted(range(len(items)), key=lambda i: stamps[i])  # stable: ties keep order
        return [items[i] for i in order]
    return list(items)


def split_history(
    items: Sequence[Item], holdout: float | int = 0.2
) -> tuple[list[Item], list[Item]]:
    """(train, held-out): the newest ``holdout`` items (fraction or count) are held out."""
    ordered = time_order(items)
    count = holdout_count(len(ordered), holdout)
    cut = len(ordered) - count
    return ordered[:cut], ordered[cut:]


def user_history(queries: Sequence[Any]) -> list[dict[str, Any]]:
    """What a LaMP user may train one adapter on: the items before their *first* query.

    In the time-based split a later query's profile also holds the user's earlier queries
    with their answers; training on those would leak the gold of the earlier queries, so
    the training history is the shortest (earliest) profile. Each query may still retrieve
    from its own, longer profile at prediction time.
    """
    if not queries:
        return []
    return list(min(queries, key=lambda q: len(q.profile)).profile)
