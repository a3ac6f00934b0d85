"""A task is data, not code: one validated dataclass describes prompts, fields, labels, metric.

Built-in LaMP tasks and user-declared custom tasks (TOML/JSON) are the same type, so a custom
task needs no code change anywhere in oppu.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class TaskKind(str, Enum):
    """Decides output parsing and the metric family."""

    CLASSIFICATION = "classification"  # accuracy + macro-F1 over a label set
    RATING = "rating"  # MAE + RMSE over integer ratings (labels are "1".."5")
    GENERATION = "generation"  # ROUGE-1 + ROUGE-L


@dataclass(frozen=True)
class Example:
    """One training example: the prompt text (user turn) and the answer text.

    ``prompt`` is empty for unsupervised items (history that does not match the task
    format, e.g. LaMP-7 tweets): the model then learns ``target`` by next-token prediction.
    """

    prompt: str
    target: str

    @property
    def unsupervised(self) -> bool:
        return not self.prompt


@dataclass(frozen=True)
class TaskSpec:
    """Everything oppu needs to know about a personalization task."""

    name: str = field(metadata={"help": "Canonical name, e.g. 'LaMP_2N'."})
    kind: TaskKind = field(metadata={"help": "classification, rating or generation."})
    description: str = field(default="", metadata={"help": "One line for --help and tables."})
    item_fields: tuple[str, ...] = field(
        default=(), metadata={"help": "Fields every history/profile item must carry."}
    )
    query_template: str = field(
        default="",
        metadata={"help": "Builds a query input from a history item (str.format over its "
                  "fields); empty when history items cannot be queries (LaMP-1, LaMP-7)."},
    )
    target_field: str | None = field(
        default=None,
        metadata={"help": "Item field holding the answer; None trains on item text."},
    )
    item_text_template: str = field(
        default="", metadata={"help": "An item as plain text: BM25 corpus and unsupervised text."}
    )
    context_template: str = field(
        default="", metadata={"help": "How one retrieved item reads inside a prompt."}
    )
    query_pattern: str | None = field(
        default=None,
        metadata={"help": "Regex with group 'q' that extracts the retrieval query from an input."},
    )
    labels: tuple[str, ...] = field(default=(), metadata={"help": "Default label set."})
    labels_pattern: str | None = field(
        default=None,
        metadata={"help": "Regex with group 'labels' reading a comma list from the input."},
    )
    epochs: int = field(default=2, metadata={"help": "Default epochs for a private adapter."})
    max_new_tokens: int = field(default=32, metadata={"help": "Generation budget."})
