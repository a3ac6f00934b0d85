"""Checks on one history or profile item, shared by the LaMP and the JSONL readers.

Both readers must agree on what a valid item is, or a history that passes ``oppu-client
validate`` could still be rejected by training.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from oppu.shared.errors import brief
from oppu.shared.tasks import TaskKind, TaskSpec, get_task

MAX_ITEM_WORDS = 2000
"""Items longer than this (in words, over the task fields) are truncated for training."""

DEFAULT_RATING_SCALE = (1.0, 5.0)

_SURROGATE = re.compile("[\ud800-\udfff]")
"""A lone UTF-16 surrogate: JSON's ``\\ud800`` escape allows it, UTF-8 (and so every
tokenizer) cannot encode it, and training would crash on it far from the file."""


def has_surrogate(text: str) -> bool:
    """Whether ``text`` holds a character that cannot be written as UTF-8."""
    return _SURROGATE.search(text) is not None


@dataclass(frozen=True)
class ItemIssue:
    """One thing wrong (or worth a warning) with an item; the caller adds file and line."""

    field: str | None
    message: str
    warning: bool = False


def resolve_task(task: str | TaskSpec) -> TaskSpec:
    """A ``TaskSpec`` from a name or alias (raises ``UnknownTaskError``), or as given."""
    return task if isinstance(task, TaskSpec) else get_task(task)


def json_type(value: Any) -> str:
    """The JSON name of a value's type, for messages a user can act on."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def rating_scale(spec: TaskSpec) -> tuple[float, float]:
    """Lowest and highest rating of a rating task (its numeric labels, else 1..5)."""
    try:
        values = [float(label) for label in spec.labels]
    except ValueError:
        values = []
    return (min(values), max(values)) if values else DEFAULT_RATING_SCALE


def parse_rating(value: Any, scale: tuple[float, float]) -> int | None:
    """A whole rating within ``scale`` from an int or numeric string, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)  # a JSON integer may have thousands of digits
    except OverflowError:
        return None
    if not math.isfinite(number) or number != int(number) or not scale[0] <= number <= scale[1]:
        return None
    return int(number)


def parse_timestamp(value: Any) -> float | None:
    """Seconds since the epoch from a number or an ISO-8601 string (naive = UTC), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            number = float(value)  # a JSON integer may have thousands of digits
        except OverflowError:
            return None
        return number if math.isfinite(number) else None
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text[-1:] in ("Z", "z"):  # Python 3.10's fromisoformat rejects the 'Z' suffix
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return moment.timestamp()
    except (ValueError, OverflowError):
        return None


def item_words(item: Mapping[str, Any], spec: TaskSpec) -> int:
    """Words over the task's string fields: what training will read."""
    return sum(len(item[f].split()) for f in spec.item_fields if isinstance(item.get(f), str))


def mean_item_words(items: Sequence[Mapping[str, Any]], spec: TaskSpec) -> float:
    """Mean ``item_words`` over ``items`` (0 when none): how long a user's items are, which
    a user's cost grows with besides their number."""
    return sum(item_words(item, spec) for item in items) / len(items) if items else 0.0


_SURROGATE_MESSAGE = ("holds an invalid character (a lone \\ud800-\\udfff escape) that "
                      "cannot be written as UTF-8; remove or fix that escape")


def check_item(
    item: Mapping[str, Any], spec: TaskSpec, *, allow_empty: bool = True
) -> list[ItemIssue]:
    """Every issue with one item: missing task fields, wrong types, bad id or timestamp.

    Task fields must be strings, except a rating task's target field, which may also be a
    whole number (or numeric string) on the rating scale. ``allow_empty=False`` also rejects
    blank strings (a user's own history); official LaMP profiles are taken as they are.
    """
    issues: list[ItemIssue] = []
    for name in spec.item_fields:
        if name not in item:
            wanted = ", ".join(spec.item_fields)
            issues.append(ItemIssue(name, f"missing; {spec.name} items need: {wanted}"))
            continue
        value = item[name]
        if spec.kind == TaskKind.RATING and name == spec.target_field:
            scale = rating_scale(spec)
            if parse_rating(value, scale) is None:
                issues.append(
                    ItemIssue(
                        name,
                        f"must be a whole rating from {scale[0]:g} to {scale[1]:g}, "
                        f"got {brief(value)}",
                    )
                )
            elif isinstance(value, str) and has_surrogate(value):
                issues.append(ItemIssue(name, _SURROGATE_MESSAGE))
        elif not isinstance(value, str):
            issues.append(ItemIssue(name, f"must be a string, got {json_type(value)}"))
        elif not allow_empty and not value.strip():
            issues.append(ItemIssue(name, "is empty"))
        elif has_surrogate(value):
            issues.append(ItemIssue(name, _SURROGATE_MESSAGE))
        elif (
            spec.kind == TaskKind.CLASSIFICATION
            and name == spec.target_field
            and spec.labels
            and value.strip() not in spec.labels
        ):
            issues.append(
                ItemIssue(
                    name, f"{brief(value)} is not one of {spec.name}'s default labels", warning=True
                )
            )
    if "id" in item and (isinstance(item["id"], bool) or not isinstance(item["id"], (str, int))):
        issues.append(ItemIssue("id", f"must be a string or integer, got {json_type(item['id'])}"))
    if "timestamp" in item and parse_timestamp(item["timestamp"]) is None:
        issues.append(
            ItemIssue(
                "timestamp",
                f"must be an ISO-8601 date/time (e.g. 2024-05-01T12:00:00Z) or a number, "
                f"got {brief(item['timestamp'])}",
            )
        )
    words = item_words(item, spec)
    if words > MAX_ITEM_WORDS:
        issues.append(
            ItemIssue(
                None,
                f"item is long ({words:,} words > {MAX_ITEM_WORDS:,}); it will be truncated",
                warning=True,
            )
        )
    return issues
