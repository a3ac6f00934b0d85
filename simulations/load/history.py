"""The synthetic LaMP_2N histories that SuperNodes train on in the load test and in the tests.

One shape of item for both, so a change to what a history holds reaches every harness; the
tests pass ``secret`` to plant a phrase per item that they then search the wire for.
"""

from __future__ import annotations

from collections.abc import Callable

CATEGORIES = ("politics", "sports", "food & drink", "travel", "science & technology",
              "business")
HISTORY_ITEMS = 6


def make_history(user: int, items: int = HISTORY_ITEMS, *,
                 secret: Callable[[int, int], str] | None = None) -> list[dict]:
    """A tiny synthetic LaMP_2N history: ``items`` news stories over rotating categories.

    ``secret(user, item)``: a phrase put in each item's title and text instead of the plain
    wording (tests look for it in what clients send).
    """
    history = []
    for i in range(items):
        category = CATEGORIES[(user + i) % len(CATEGORIES)]
        if secret is None:
            title = f"Headline {user}-{i} on {category}"
            text = f"Story number {i} of user {user} about {category}."
        else:
            title = f"Headline {secret(user, i)}"
            text = f"Story {secret(user, i)} about {category}."
        history.append({"id": f"u{user}-{i}", "title": title, "text": text,
                        "category": category})
    return history
