"""A user's own history file (JSONL), read line by line and checked for every problem.

One JSON object per line with the task's item fields, plus optional ``id`` and ``timestamp``;
extra fields are kept. Blank lines are skipped. Problems are collected, not just the first
(up to ``MAX_PROBLEMS``), so a user can fix the whole file in one go; each names file, line
and field.

Memory stays bounded whatever the file holds: no line is read whole when it is longer than
``MAX_LINE_BYTES`` (it is reported and skipped), and a history longer than
``MAX_HISTORY_LINES`` lines or ``MAX_HISTORY_BYTES`` bytes is read from its newest end only,
with a warning. A history is appended to as the user writes, so its last lines are its newest
items, and the newest items are the ones oppu trains and evaluates on (``split_history``).
"""

from __future__ import annotations

import json
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from oppu.shared.data.items import check_item, json_type, resolve_task
from oppu.shared.errors import InputError, Problem, brief
from oppu.shared.tasks import TaskSpec

MIB = 1024 * 1024
MAX_LINE_BYTES = 16 * MIB
"""Longest line accepted (line ending excluded): 16 MiB is a whole book of text; a longer
line is a broken or wrong file (a binary, one line of a minified dump) and is refused."""
MAX_HISTORY_LINES = 100_000
"""Lines read from a history, counted from its end: more items than any user's adapter trains
on (a few hundred is typical), so a longer history keeps its newest lines, with a warning."""
MAX_HISTORY_BYTES = 256 * MIB
"""Bytes read from a history, counted from its end: with the line cap, bounds the memory
the kept items take however long each line is."""
MAX_PROBLEMS = 100
"""Problems (and, separately, warnings) listed: a wholly wrong file would otherwise bury the
first ones under a million copies of the same message."""
_CHUNK = MIB
"""Bytes read at a time while indexing or skipping lines."""


@dataclass
class HistoryReport:
    """What a check of a history file found: the good items, problems and warnings."""

    path: Path
    task: str
    items: list[dict[str, Any]] = field(default_factory=list)
    item_lines: list[int] = field(default_factory=list)
    """The line each item came from."""
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    lines: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class ReadLimits:
    """How much of a history is read; the defaults are the module's constants."""

    max_line_bytes: int = MAX_LINE_BYTES
    max_lines: int = MAX_HISTORY_LINES
    max_bytes: int = MAX_HISTORY_BYTES

    def __post_init__(self) -> None:
        for name in ("max_line_bytes", "max_lines", "max_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value (JSON has no NaN or Infinity)")


def _parse_line(raw: bytes, lineno: int) -> tuple[Any, str | None]:
    """(value, None) for a parsed line, (None, "") for a blank one, else (None, message)."""
    try:
        text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 text ({exc.reason} at byte {exc.start})"
    if not text.strip():
        return None, ""
    try:
        return json.loads(text, parse_constant=_reject_constant), None
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON: {exc.msg} (column {exc.colno})"
    except RecursionError:
        return None, "not usable JSON: nested too deeply"
    except ValueError as exc:  # NaN/Infinity, or an integer of more than 4300 digits
        return None, f"not valid JSON: {exc}"


class _Collector:
    """Problems and warnings of one file, each list capped at ``MAX_PROBLEMS``."""

    def __init__(self, report: HistoryReport):
        self.report = report
        self.name = str(report.path)

    def add(self, problem: Problem, *, warning: bool = False) -> None:
        target = self.report.warnings if warning else self.report.problems
        if len(target) < MAX_PROBLEMS:
            target.append(problem)
        elif len(target) == MAX_PROBLEMS:
            what = "warnings" if warning else "problems"
            target.append(Problem(f"more {what} not listed; fix the first {MAX_PROBLEMS} and "
                                  "check again", file=self.name))

    def at(self, message: str, lineno: int | None = None, field: str | None = None, *,
           warning: bool = False) -> None:
        self.add(Problem(message, file=self.name, line=lineno, field=field), warning=warning)


def _line_starts(fh: BinaryIO, keep: int) -> tuple[int, list[int]]:
    """(number of lines, byte offsets of the last ``keep`` lines), read in ``_CHUNK`` pieces.

    Newlines are counted chunk by chunk (in C, so a million lines take milliseconds); only
    the window of the last ``keep`` lines is then walked line by line. A long line is never
    held whole, and only ``keep`` offsets are.
    """
    counts = array("q")  # newlines per chunk
    size, last = 0, b""
    while chunk := fh.read(_CHUNK):
        counts.append(chunk.count(b"\n"))
        size += len(chunk)
        last = chunk[-1:]
    lines = sum(counts) + (1 if size and last != b"\n" else 0)
    if lines == 0:
        return 0, []
    first_line = max(1, lines - keep + 1)
    return lines, _starts_from(fh, _after_newline(fh, counts, first_line - 1), size, counts)


def _after_newline(fh: BinaryIO, counts: array, n: int) -> int:
    """Offset just after the ``n``-th newline of the file (0 for n = 0)."""
    if n == 0:
        return 0
    seen = 0
    for index, count in enumerate(counts):
        if seen + count >= n:
            fh.seek(index * _CHUNK)
            chunk = fh.read(_CHUNK)
            position = -1
            for _ in range(n - seen):
                position = chunk.find(b"\n", position + 1)
            return index * _CHUNK + position + 1
        seen += count
    raise AssertionError("fewer newlines than counted")  # the file changed while read


def _starts_from(fh: BinaryIO, offset: int, size: int, counts: array) -> list[int]:
    """Offsets of every line start from ``offset`` (itself a line start) to the end; chunks
    without a newline (the inside of a long line) are skipped, not read again."""
    starts = [offset]
    for index in range(offset // _CHUNK, len(counts)):
        if not counts[index]:
            continue
        base = index * _CHUNK
        fh.seek(base)
        chunk = fh.read(_CHUNK)
        found = chunk.find(b"\n", max(offset - base, 0))
        while found != -1:
            if base + found + 1 < size:
                starts.append(base + found + 1)
            found = chunk.find(b"\n", found + 1)
    return starts


def _window(starts: list[int], size: int, limits: ReadLimits) -> int:
    """Index in ``starts`` of the first line to read: the newest lines whose bytes fit in
    ``limits.max_bytes`` (at least the last line). A line over the line limit does not count:
    it is reported, never held."""
    used = 0
    for index in range(len(starts) - 1, -1, -1):
        end = starts[index + 1] if index + 1 < len(starts) else size
        length = end - starts[index]
        if length > limits.max_line_bytes + 2:  # "\r\n" included
            continue
        used += length
        if used > limits.max_bytes:
            return min(index + 1, len(starts) - 1)
    return 0


def _read_lines(fh: BinaryIO, starts: list[int], first_lineno: int, max_line_bytes: int):
    """(line number, bytes or None when too long) for each line from ``starts[0]`` on."""
    if not starts:
        return
    fh.seek(starts[0])
    for index, lineno in enumerate(range(first_lineno, first_lineno + len(starts))):
        raw = fh.readline(max_line_bytes + 2)  # room for a CRLF after a line at the limit
        if len(_without_ending(raw)) > max_line_bytes:
            if index + 1 < len(starts):
                fh.seek(starts[index + 1])  # skip the rest of the line without reading it
            yield lineno, None
            continue
        yield lineno, raw


def _without_ending(raw: bytes) -> bytes:
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    return raw[:-1] if raw.endswith(b"\r") else raw


def _open(path: Path, collect: _Collector) -> BinaryIO | None:
    """The history opened for reading, or None with the reason recorded."""
    try:
        if path.is_dir():
            collect.at("is a directory; give the history file (.jsonl) itself")
            return None
        if path.exists() and not path.is_file():
            collect.at("not a regular file; save the history to a file first")
            return None
        return path.open("rb", buffering=_CHUNK)
    except FileNotFoundError:
        collect.at("file not found")
    except OSError as exc:
        collect.at(f"cannot read: {exc.strerror or exc}")
    return None


def check_history(path: str | Path, task: str | TaskSpec | None, *,
                  limits: ReadLimits | None = None) -> HistoryReport:
    """Read and check a history file, streaming it; never raises for bad content.

    A history of more than ``limits.max_lines`` lines or ``limits.max_bytes`` bytes is read
    from its end (its newest items), and a warning says which lines were skipped unchecked;
    a line over ``limits.max_line_bytes`` is a problem. Memory is bounded by the limits, not
    by the file. An unknown task raises ``UnknownTaskError``: there is nothing to check
    against; ``task=None`` checks only that every line is a JSON object (to draft a task).
    """
    spec = resolve_task(task) if task is not None else None
    limits = limits or ReadLimits()
    path = Path(path)
    report = HistoryReport(path=path, task=spec.name if spec is not None else "")
    collect = _Collector(report)
    fh = _open(path, collect)
    if fh is None:
        return report
    with fh:
        try:
            lines, starts = _line_starts(fh, limits.max_lines)
            size = fh.seek(0, 2)
            first = _window(starts, size, limits)
            first_lineno = lines - len(starts) + first + 1
            report.lines = lines
            if first_lineno > 1:
                _note_skipped(collect, lines, first_lineno, limits)
            non_blank = _check_lines(fh, starts[first:], first_lineno, spec, limits, collect)
        except OSError as exc:
            collect.at(f"cannot read: {exc.strerror or exc}")
            return report
    if non_blank == 0:
        collect.at(f"history is empty: add one JSON object per line ({_fields(spec)})")
    return report


def _note_skipped(collect: _Collector, lines: int, first_lineno: int,
                  limits: ReadLimits) -> None:
    collect.at(
        f"the history has {lines:,} lines; only the newest {lines - first_lineno + 1:,} "
        f"(lines {first_lineno:,}-{lines:,}, the end of the file) are read, as oppu keeps at "
        f"most {limits.max_lines:,} lines and {limits.max_bytes / MIB:g} MiB of history; "
        f"lines 1-{first_lineno - 1:,} were skipped unchecked. Later lines are taken as "
        "newer: keep the file in time order, oldest first",
        warning=True)


def _check_lines(fh: BinaryIO, starts: list[int], first_lineno: int, spec: TaskSpec | None,
                 limits: ReadLimits, collect: _Collector) -> int:
    """Check and collect the lines from ``starts``; returns how many were not blank."""
    report = collect.report
    seen_ids: dict[str, int] = {}
    non_blank = 0
    for lineno, raw in _read_lines(fh, starts, first_lineno, limits.max_line_bytes):
        if raw is None:
            non_blank += 1
            collect.at(f"line longer than {_size(limits.max_line_bytes)}; one history item "
                       "per line, each a JSON object well under that (is this the right file?)",
                       lineno)
            continue
        value, error = _parse_line(raw, lineno)
        if error == "":
            continue
        non_blank += 1
        if error is not None:
            collect.at(error, lineno)
        elif not isinstance(value, dict):
            collect.at(f"expected a JSON object {{...}}, got {json_type(value)}", lineno)
        elif spec is None or _check_value(value, lineno, spec, collect):
            _note_duplicate(value, lineno, seen_ids, collect)
            report.items.append(value)
            report.item_lines.append(lineno)
    return non_blank


def _check_value(value: dict[str, Any], lineno: int, spec: TaskSpec,
                 collect: _Collector) -> bool:
    """Record the item's issues; True when it is usable (warnings only)."""
    issues = check_item(value, spec, allow_empty=False)
    for issue in issues:
        collect.at(issue.message, lineno, issue.field, warning=issue.warning)
    return not any(not issue.warning for issue in issues)


def _note_duplicate(value: dict[str, Any], lineno: int, seen_ids: dict[str, int],
                    collect: _Collector) -> None:
    if "id" not in value:
        return
    item_id = str(value["id"])
    if item_id in seen_ids:
        message = f"duplicate id {brief(item_id)} (first on line {seen_ids[item_id]})"
        collect.at(message, lineno, "id", warning=True)
    else:
        seen_ids[item_id] = lineno


def _size(n: int) -> str:
    return f"{n / MIB:g} MiB" if n >= MIB else f"{n:,} bytes"


def _fields(spec: TaskSpec | None) -> str:
    if spec is None:
        return "one JSON object per line"
    return "fields: " + ", ".join(spec.item_fields) if spec.item_fields else "no fields needed"


def validate_history(path: str | Path, task: str | TaskSpec, *,
                     limits: ReadLimits | None = None) -> list[Problem]:
    """Every problem in a history file (empty when it is usable); warnings excluded."""
    return check_history(path, task, limits=limits).problems


def read_history(path: str | Path, task: str | TaskSpec, *,
                 limits: ReadLimits | None = None) -> list[dict[str, Any]]:
    """The items of a valid history file; ``InputError`` listing every problem otherwise.

    At most ``limits.max_lines`` newest lines are read (see ``check_history``).
    """
    report = check_history(path, task, limits=limits)
    if report.problems:
        raise InputError(report.problems)
    return report.items
