"""A user's own history file (JSONL), read line by line and checked for every problem.

One JSON object per line with the task's item fields, plus optional ``id`` and ``timestamp``;
extra fields are kept. Blank lines are skipped. All problems are collected, not just the
first, so a user can fix the whole file in one go; each names file, line and field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oppu.shared.data.items import check_item, json_type, resolve_task
from oppu.shared.errors import InputError, Problem
from oppu.shared.tasks import TaskSpec


@dataclass
class HistoryReport:
    """What a check of a history file found: the good items, problems and warnings."""

    path: Path
    task: str
    items: list[dict[str, Any]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    lines: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def _parse_line(raw: bytes, lineno: int) -> tuple[Any, str | None]:
    """(value, None) for a parsed line, or (None, message) when it is not valid JSON."""
    try:
        text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 text ({exc.reason} at byte {exc.start})"
    if not text.strip():
        return None, ""
    try:
        return json.loads(text.rstrip("\r\n")), None
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON: {exc.msg} (column {exc.colno})"


def check_history(path: str | Path, task: str | TaskSpec) -> HistoryReport:
    """Read and check a history file, streaming it; never raises for bad content.

    An unknown task raises ``UnknownTaskError``: there is nothing to check against.
    """
    spec = resolve_task(task)
    path = Path(path)
    report = HistoryReport(path=path, task=spec.name)
    name = str(path)
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        report.problems.append(Problem("file not found", file=name))
        return report
    except OSError as exc:
        report.problems.append(Problem(f"cannot read: {exc.strerror}", file=name))
        return report
    seen_ids: dict[str, int] = {}
    non_blank = 0
    with fh:
        for lineno, raw in enumerate(fh, start=1):
            report.lines = lineno
            value, error = _parse_line(raw, lineno)
            if error == "":
                continue
            non_blank += 1
            if error is not None:
                report.problems.append(Problem(error, file=name, line=lineno))
                continue
            if not isinstance(value, dict):
                message = f"expected a JSON object {{...}}, got {json_type(value)}"
                report.problems.append(Problem(message, file=name, line=lineno))
                continue
            issues = check_item(value, spec, allow_empty=False)
            for issue in issues:
                target = report.warnings if issue.warning else report.problems
                target.append(Problem(issue.message, file=name, line=lineno, field=issue.field))
            if any(not issue.warning for issue in issues):
                continue
            if "id" in value:
                item_id = str(value["id"])
                if item_id in seen_ids:
                    message = f"duplicate id {item_id!r} (first on line {seen_ids[item_id]})"
                    report.warnings.append(Problem(message, file=name, line=lineno, field="id"))
                else:
                    seen_ids[item_id] = lineno
            report.items.append(value)
    if non_blank == 0:
        report.problems.append(
            Problem(f"history is empty: add one JSON object per line ({_fields(spec)})", name)
        )
    return report


def _fields(spec: TaskSpec) -> str:
    return "fields: " + ", ".join(spec.item_fields) if spec.item_fields else "no fields needed"


def validate_history(path: str | Path, task: str | TaskSpec) -> list[Problem]:
    """Every problem in a history file (empty when it is usable); warnings excluded."""
    return check_history(path, task).problems


def read_history(path: str | Path, task: str | TaskSpec) -> list[dict[str, Any]]:
    """The items of a valid history file; ``InputError`` listing every problem otherwise."""
    report = check_history(path, task)
    if report.problems:
        raise InputError(report.problems)
    return report.items
