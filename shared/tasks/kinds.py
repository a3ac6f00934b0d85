"""The task kinds and the fixed label and placeholder names a ``TaskSpec`` is checked against.

Their own module so that both the spec (``spec.py``) and its validation (``checks.py``) can
import them at the top without the two importing each other.
"""

from __future__ import annotations

from enum import Enum

RATING_LABELS = ("1", "2", "3", "4", "5")
RESERVED_FIELDS = ("input", "labels")
"""Placeholders oppu fills itself: the raw query input and the comma-joined label list."""


class TaskKind(str, Enum):
    """Decides output parsing and the metric family."""

    CLASSIFICATION = "classification"  # accuracy + macro-F1 over a label set
    RATING = "rating"  # MAE + RMSE over integer ratings (labels are "1".."5")
    GENERATION = "generation"  # ROUGE-1 + ROUGE-L
