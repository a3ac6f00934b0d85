"""Drafting a custom task from a history file (``oppu-client task init``).

The draft is the short form (``shared/tasks/simple.py``): the fields every item carries, the
answer field and its labels guessed from the values, a plain instruction to edit. A history
that cannot make a task (malformed lines, items that disagree on their fields, too few items,
an answer with a single value) gets every problem, with file, line and field, not a draft.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oppu.shared.data.history import check_history
from oppu.shared.errors import InputError, Problem, brief
from oppu.shared.tasks.custom import FORMAT_VERSION, toml_value

BOOKKEEPING_FIELDS = ("id", "timestamp")
"""Optional fields of every history (``shared/data/history.py``): never task fields."""

MIN_DRAFT_ITEMS = 10
"""Fewer items than this cannot train a private adapter worth having, nor show the labels."""
MAX_CLASS_LABELS = 50
"""An answer field with more distinct values than this (or than half the items) is text."""
KINDS = ("classification", "rating", "generation")


@dataclass
class TaskDraft:
    """The short-form task, and what it was guessed from (shown beside it)."""

    keys: dict[str, Any]
    items: int
    label_counts: Counter = field(default_factory=Counter)

    def toml(self, source: Path) -> str:
        keys = self.keys
        answer_key = "output_field" if keys["kind"] == "generation" else "label_field"
        lines = [
            f"# Drafted by `oppu-client task init` from {source} ({self.items} items).",
            "# Edit the instruction to your own words, then check the prompt it renders to:",
            f"#   oppu-client --task-file {keys['name']}.toml validate --history {source} "
            f"--task {keys['name']}",
            "# Any full task key (query_template, prompt_template, context_template, ...)",
            "# written here overrides what oppu derives; the full form is shown in",
            "# shared/sample/custom_task_example.toml",
            f"version = {FORMAT_VERSION}",
            f"name = {toml_value(keys['name'])}",
            f"kind = {toml_value(keys['kind'])}  # classification | rating | generation",
            f"instruction = {toml_value(keys['instruction'])}",
            f"input_fields = {toml_value(keys['input_fields'])}  # what the model reads",
            f"{answer_key} = {toml_value(keys[answer_key])}  # the answer it learns",
        ]
        if "labels" in keys:
            seen = ", ".join(f"{label} {n}" for label, n in self.label_counts.most_common())
            lines.append(f"# labels seen in the history: {seen}; leave labels out to take them "
                         "from each history")
            lines.append(f"labels = {toml_value(keys['labels'])}")
        return "\n".join(lines) + "\n"


def draft_task(path: Path, *, name: str | None = None, kind: str | None = None,
               input_fields: list[str] | None = None, answer_field: str | None = None,
               instruction: str | None = None) -> TaskDraft:
    """A short-form task for the history at ``path``; InputError lists every problem."""
    source = str(path)
    report = check_history(path, None)
    if report.problems:
        raise InputError(report.problems)
    items, lines = report.items, report.item_lines
    problems = _field_problems(items, lines, source)
    if len(items) < MIN_DRAFT_ITEMS:
        problems.append(Problem(f"only {len(items)} item(s); a task needs at least "
                                f"{MIN_DRAFT_ITEMS} to train on and to show its labels",
                                file=source))
    if kind is not None and kind not in KINDS:
        problems.append(Problem(f"unknown kind {brief(kind)}; use one of: {', '.join(KINDS)}",
                                file=source, field="kind"))
    if problems:
        raise InputError(problems)
    fields = _shared_fields(items)
    for given in [*(input_fields or []), *([answer_field] if answer_field else [])]:
        if given not in fields:
            problems.append(Problem(f"no such field in every item; fields: {', '.join(fields)}",
                                    file=source, field=given))
    if problems:
        raise InputError(problems)
    answer, guessed_kind = _answer_field(items, fields, answer_field)
    kind = kind or guessed_kind
    inputs = input_fields or [f for f in fields if f != answer]
    if not inputs:
        raise InputError(Problem(f"items carry only the answer field {answer!r}; a task needs "
                                 "at least one input field besides it", file=source))
    values = Counter(_text(item[answer]) for item in items)
    if kind != "generation" and len(values) < 2:
        raise InputError(Problem(f"every item answers {brief(next(iter(values)))}: a "
                                 f"{kind} task needs two or more different answers",
                                 file=source, field=answer))
    keys: dict[str, Any] = {"name": name or _name_from(path), "kind": kind,
                            "instruction": instruction or _instruction(kind, inputs, answer),
                            "input_fields": inputs}
    if kind == "generation":
        keys["output_field"] = answer
        return TaskDraft(keys, len(items))
    keys["label_field"] = answer
    keys["labels"] = ([label for label, _ in values.most_common()] if kind == "classification"
                      else _rating_scale(values))
    return TaskDraft(keys, len(items), values)


def _shared_fields(items: list[dict]) -> list[str]:
    """Fields every item has, in the first item's order (id and timestamp left out)."""
    return [f for f in items[0] if f not in BOOKKEEPING_FIELDS and all(f in i for i in items)]


def _field_problems(items: list[dict], lines: list[int], source: str) -> list[Problem]:
    """Items that lack a field most items have, or hold a non-scalar value."""
    counts = Counter(f for item in items for f in item if f not in BOOKKEEPING_FIELDS)
    common = [f for f, n in counts.items() if n * 2 > len(items)]
    problems = []
    for item, line in zip(items, lines, strict=True):
        for f in common:
            if f not in item:
                problems.append(Problem(f"missing; {counts[f]} of {len(items)} items have it",
                                        file=source, line=line, field=f))
            elif isinstance(item[f], (dict, list)) or item[f] is None:
                problems.append(Problem(f"must be text or a number, got {brief(item[f])}",
                                        file=source, line=line, field=f))
        for f in item:
            if f not in BOOKKEEPING_FIELDS and f not in common:
                problems.append(Problem(f"only {counts[f]} of {len(items)} items have this "
                                        "field; give every item the same fields",
                                        file=source, line=line, field=f))
    return problems


def _answer_field(items: list[dict], fields: list[str], given: str | None) -> tuple[str, str]:
    """The answer field and the kind it suggests: few distinct values make labels (whole
    numbers a rating); otherwise the last field is generated."""
    def distinct(f: str) -> int:
        return len({_text(item[f]) for item in items})

    def kind_of(f: str) -> str:
        few = distinct(f) <= min(MAX_CLASS_LABELS, len(items) // 2)
        if not few:
            return "generation"
        numbers = all(re.fullmatch(r"-?[0-9]{1,3}", _text(item[f])) for item in items)
        return "rating" if numbers else "classification"

    if given is not None:
        return given, kind_of(given)
    labelled = [f for f in fields if kind_of(f) != "generation" and distinct(f) >= 2]
    if labelled:
        best = min(labelled, key=distinct)
        return best, kind_of(best)
    return fields[-1], "generation"


def _text(value: Any) -> str:
    return str(value).strip()


def _rating_scale(values: Counter) -> list[str]:
    numbers = [int(v) for v in values]
    return [str(n) for n in range(min(numbers), max(numbers) + 1)]


def _instruction(kind: str, inputs: list[str], answer: str) -> str:
    what = " and ".join(inputs)
    if kind == "generation":
        return f"Write the {answer} for this {what}."
    if kind == "rating":
        return f"What {answer} would this user give this {what}?"
    return f"Which {answer} does this user give this {what}?"


def _name_from(path: Path) -> str:
    """A task name from the file name (its folder's when the file is called history)."""
    stem = path.stem if path.stem.lower() not in ("history", "data", "items") else (
        path.resolve().parent.name)
    name = re.sub(r"[^A-Za-z0-9_]+", "_", stem).strip("_")
    return name or "my_task"
