"""A task is data, not code: one validated dataclass describes prompts, fields, labels, metric.

Built-in LaMP tasks and user-declared custom tasks (TOML/JSON) are the same type, so a custom
task needs no code change anywhere in oppu.

Prompt layout (OPPU reference, TamSiuhin/OPPU ``OPPU.py``): optional profile, a newline,
the retrieved items one per line (most relevant first), a blank line, then the query
re-worded by ``prompt_template``. Truncation follows the same code: every field of a
retrieved item is cut to ``context_max_words`` whitespace words (368 there), every field of
a training item and the query's extracted parts to ``input_max_words`` (768 there).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any

from oppu.shared.tasks.checks import check_spec
from oppu.shared.tasks.kinds import RATING_LABELS as RATING_LABELS
from oppu.shared.tasks.kinds import RESERVED_FIELDS as RESERVED_FIELDS
from oppu.shared.tasks.kinds import TaskKind
from oppu.shared.tasks.text import (
    first_line,
    parse_label,
    parse_rating,
    split_label_list,
    template_fields,
    text_fields,
    truncate_words,
)


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


class TaskSpecError(ValueError):
    """Every problem found in one spec, each as (field name or None, message)."""

    def __init__(self, name: str, problems: list[tuple[str | None, str]]):
        self.problems = problems
        lines = [f"{f}: {m}" if f else m for f, m in problems]
        super().__init__(f"invalid task {name!r}: " + "; ".join(lines))


def _search(pattern: str | None, text: str) -> re.Match | None:
    # re caches compiled patterns, so calling this per query is cheap.
    return re.search(pattern, text, re.DOTALL) if pattern else None


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
                  "fields, plus {labels}); empty when history items cannot be queries "
                  "(LaMP-1, LaMP-7)."},
    )
    target_field: str | None = field(
        default=None,
        metadata={"help": "Item field holding the answer; None trains on item text."},
    )
    item_text_template: str = field(
        default="",
        metadata={"help": "An item as plain text: BM25 corpus and unsupervised text. "
                  "Default: the non-target fields joined by spaces."},
    )
    context_template: str = field(
        default="",
        metadata={"help": "How one retrieved item reads inside a prompt (one line each). "
                  "Default: 'field: {field}' for every field."},
    )
    query_pattern: str | None = field(
        default=None,
        metadata={"help": "Regex with group 'q' that extracts the retrieval query from an input; "
                  "its named groups are also placeholders for prompt_template."},
    )
    labels: tuple[str, ...] = field(default=(), metadata={"help": "Default label set."})
    labels_pattern: str | None = field(
        default=None,
        metadata={"help": "Regex with group 'labels' reading a comma list from the input."},
    )
    epochs: int | None = field(
        default=None,
        metadata={"help": "Default epochs for a private adapter (None: 3 for classification, "
                  "2 otherwise, OPPU paper Table 5)."},
    )
    max_new_tokens: int = field(default=32, metadata={"help": "Generation budget."})
    prompt_template: str = field(
        default="{input}",
        metadata={"help": "The query as the model sees it: {input} (raw input), {labels} and "
                  "the named groups of query_pattern; the raw input if the pattern fails."},
    )
    input_max_words: int = field(
        default=768,
        metadata={"help": "Words kept per field of a training item and per extracted query part."},
    )
    context_max_words: int = field(
        default=368, metadata={"help": "Words kept per field of a retrieved item."}
    )

    def __post_init__(self) -> None:
        problems = check_spec(self, object.__setattr__)
        if problems:
            raise TaskSpecError(str(self.name), problems)

    # ---- reading inputs -------------------------------------------------------------------

    @property
    def supervised(self) -> bool:
        """Whether history items become (prompt, answer) pairs rather than plain text."""
        return bool(self.query_template and self.target_field)

    def label_set(self, query_input: str) -> tuple[str, ...]:
        """Labels listed in the input (``labels_pattern``), else the task's default labels."""
        match = _search(self.labels_pattern, query_input)
        if match and match.group("labels"):  # an optional group may match nothing
            found = split_label_list(match.group("labels"))
            if found:
                return found
        return self.labels

    def retrieval_query(self, query_input: str) -> str:
        """The part of the input worth searching the history with (the whole input if unsure)."""
        match = _search(self.query_pattern, query_input)
        if match and match.group("q") and match.group("q").strip():
            return match.group("q").strip()
        return query_input.strip()

    # ---- rendering ------------------------------------------------------------------------

    def _values(self, template: str, item: Mapping[str, Any], max_words: int | None) -> dict:
        """The item fields ``template`` reads, as text; ValueError names a missing field."""
        names = [n for n in self.item_fields if n in template_fields(template)]
        try:
            return text_fields(item, names, max_words)
        except KeyError as err:
            raise ValueError(
                f"{self.name} item has no field {err.args[0]!r}; "
                f"{self.name} items need: {', '.join(self.item_fields)}"
            ) from None

    def _fill(self, template: str, item: Mapping[str, Any], max_words: int | None) -> str:
        return template.format_map(self._values(template, item, max_words))

    def item_text(self, item: Mapping[str, Any]) -> str:
        """An item as plain text, untruncated: the BM25 document and unsupervised text."""
        return self._fill(self.item_text_template, item, None)

    def render_context(self, items: Sequence[Mapping[str, Any]]) -> str:
        """Retrieved items one per line, in the given order, fields cut to context_max_words."""
        return "\n".join(self._fill(self.context_template, it, self.context_max_words)
                         for it in items)

    def query_text(self, query_input: str) -> str:
        """The query re-worded by ``prompt_template`` (the raw input if the pattern fails)."""
        values = {"input": query_input.strip(), "labels": ", ".join(self.label_set(query_input))}
        match = _search(self.query_pattern, query_input)
        if match:
            values.update({k: truncate_words((v or "").strip(), self.input_max_words)
                           for k, v in match.groupdict().items()})
        if not template_fields(self.prompt_template) <= values.keys():
            return query_input.strip()
        return self.prompt_template.format_map(values)

    def build_prompt(
        self,
        query_input: str,
        retrieved: Sequence[Mapping[str, Any]] = (),
        profile: str | None = None,
    ) -> str:
        """The user-turn text: profile, retrieved items, blank line, query (OPPU's layout)."""
        text = self.query_text(query_input)
        context = self.render_context(retrieved)
        if context:
            text = f"{context}\n\n{text}"
        if profile and profile.strip():
            text = f"{profile.strip()}\n{text}"
        return text

    # ---- history items as training/evaluation data ---------------------------------------

    def _query_input(
        self, item: Mapping[str, Any], labels: Sequence[str] | None, max_words: int | None
    ) -> str:
        values = self._values(self.query_template, item, max_words)
        values["labels"] = ", ".join(self.labels if labels is None else labels)
        return self.query_template.format_map(values)

    def _target(self, item: Mapping[str, Any]) -> str:
        template = "{" + str(self.target_field) + "}"
        return self._fill(template, item, None).strip()

    def example_from_item(
        self,
        item: Mapping[str, Any],
        retrieved: Sequence[Mapping[str, Any]] = (),
        *,
        profile: str | None = None,
        labels: Sequence[str] | None = None,
    ) -> Example:
        """A training example from one history item (supervised when the task allows).

        ``labels`` is the label list written into the item's query (default: the task's
        labels); pass the list your queries carry (``label_set`` of one) so training and
        test prompts match, e.g. a 25-category LaMP-2N-style dataset.
        """
        if not self.supervised:
            return Example("", self._fill(self.item_text_template, item, self.input_max_words))
        query_input = self._query_input(item, labels, self.input_max_words)
        target = self._target(item)
        return Example(self.build_prompt(query_input, retrieved, profile), target)

    def query_from_item(
        self, item: Mapping[str, Any], *, labels: Sequence[str] | None = None
    ) -> tuple[str, str] | None:
        """(query input, gold) to evaluate a held-out history item; None if it cannot be one."""
        if not self.supervised:
            return None
        gold = self._target(item)
        return self._query_input(item, labels, None), gold

    def parse_prediction(self, text: str, labels: Sequence[str] = ()) -> str:
        """LaMP-style post-processing of a generated answer (see ``oppu.shared.tasks.text``)."""
        if self.kind == TaskKind.CLASSIFICATION:
            return parse_label(text, labels or self.labels)
        if self.kind == TaskKind.RATING:
            return parse_rating(text)
        return first_line(text)

    # ---- serialisation --------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/TOML-ready values (None left out: TOML has no null)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, Enum):
                value = value.value
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out
