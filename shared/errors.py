"""Error types that tell the user exactly what to fix (file, line, field)."""

from __future__ import annotations

import reprlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a user's input, located as precisely as we can."""

    message: str
    file: str | None = None
    line: int | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = []
        if self.file is not None:
            where.append(str(self.file))
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.field is not None:
            where.append(f"field '{self.field}'")
        prefix = ":".join(where[:2]) if where else ""
        if len(where) == 3:
            prefix += f" ({where[2]})"
        elif len(where) == 1 and self.field is not None:
            prefix = where[0]
        return f"{prefix}: {self.message}" if prefix else self.message


class OppuError(Exception):
    """Base for errors oppu reports to the user without a traceback."""


class InputError(OppuError, ValueError):
    """Bad user input; carries every problem found so all can be fixed at once."""

    def __init__(self, problems: list[Problem] | Problem | str, *, file: str | Path | None = None):
        if isinstance(problems, str):
            problems = [Problem(problems, file=str(file) if file is not None else None)]
        elif isinstance(problems, Problem):
            problems = [problems]
        if not problems:
            raise ValueError("InputError needs at least one problem")
        self.problems: list[Problem] = list(problems)
        super().__init__(self._render())

    def _render(self) -> str:
        if len(self.problems) == 1:
            return str(self.problems[0])
        lines = [f"{len(self.problems)} problems:"] + [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


class ModelNotFoundError(OppuError):
    """The requested base model cannot be found locally; says what to install."""


class UnknownTaskError(OppuError, KeyError):
    """A task name that is neither built in nor declared in a custom task file."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else "unknown task"


class ConfigError(OppuError, ValueError):
    """A configuration value (run config, round config) that is missing, of the wrong type or
    out of range; the message names the key. A ``ValueError`` like other validated configs."""


class _Brief(reprlib.Repr):
    """``reprlib`` with limits for error messages; safe for any value a parser returns."""

    def repr_int(self, x: int, level: int) -> str:
        try:
            return super().repr_int(x, level)
        except ValueError:  # more digits than int -> str converts (sys.set_int_max_str_digits)
            return f"<a {x.bit_length()}-bit integer>"


_BRIEF = _Brief()
_BRIEF.maxstring = 60
_BRIEF.maxother = 60
_BRIEF.maxlong = 40
_BRIEF.maxlevel = 3


def brief(value: Any) -> str:
    """A short ``repr`` for messages: long strings, huge numbers and deep nesting are cut, so
    a hostile value can neither flood the message nor recurse without end."""
    return _BRIEF.repr(value)
