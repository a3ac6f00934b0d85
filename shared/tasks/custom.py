"""Custom tasks declared in a TOML or JSON file: same fields as ``TaskSpec``, checked strictly.

Unlike model configs, a task file is written by hand, so an unknown key is far more likely a
typo (``lables``) than a newer format: it is reported, not dropped.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from oppu.shared.errors import InputError, Problem, brief
from oppu.shared.tasks.simple import SHORT_KEYS, expand_short_form, is_short_form
from oppu.shared.tasks.spec import TaskSpec, TaskSpecError

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

FORMAT_VERSION = 1
REQUIRED_KEYS = ("name", "kind", "item_fields")
SHORT_REQUIRED_KEYS = ("name", "kind", "instruction", "input_fields")
SPEC_KEYS = tuple(f.name for f in fields(TaskSpec))
KNOWN_KEYS = (*SPEC_KEYS, "version", *SHORT_KEYS)
MAX_TASK_FILE_BYTES = 1024 * 1024
"""A task file is a few hundred bytes written by hand; 1 MiB is far beyond any real one."""


def spec_from_mapping(data: Any, *, source: str | None = None) -> TaskSpec:
    """A validated ``TaskSpec`` from parsed file content; InputError lists every problem."""
    if not isinstance(data, Mapping):
        raise InputError(Problem("a task file must hold one table/object of task fields",
                                 file=source))
    problems = []
    for key in data:
        if key not in KNOWN_KEYS:
            close = difflib.get_close_matches(str(key)[:100], KNOWN_KEYS, n=1)
            hint = (f"did you mean {close[0]!r}?" if close
                    else "known keys: " + ", ".join(KNOWN_KEYS))
            name = str(key) if len(str(key)) <= 100 else brief(str(key))
            problems.append(Problem(f"unknown key; {hint}", file=source, field=name))
    short = is_short_form(data)
    for key in SHORT_REQUIRED_KEYS if short else REQUIRED_KEYS:
        if key not in data:
            problems.append(Problem("missing required key", file=source, field=key))
    version = data.get("version", FORMAT_VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or version != FORMAT_VERSION:
        problems.append(Problem(f"unsupported version {brief(version)}; this oppu reads "
                                f"version {FORMAT_VERSION}", file=source, field="version"))
    if short and not problems:
        data, problems = expand_short_form(data, source)
    if problems:
        raise InputError(problems, file=source)
    try:
        return TaskSpec(**{k: v for k, v in data.items() if k in SPEC_KEYS})
    except TaskSpecError as err:
        raise InputError([Problem(m, file=source, field=f) for f, m in err.problems]) from None


def read_task_file(path: str | Path) -> TaskSpec:
    """Parse and validate a ``.toml`` or ``.json`` task file (does not register it)."""
    path = Path(path)
    source = str(path)
    if path.suffix.lower() not in (".toml", ".json"):
        raise InputError(Problem("a task file must end in .toml or .json", file=source))
    problem = None
    try:
        text = _read_text(path)
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except OSError as err:
        problem = Problem(f"cannot read the task file ({err.strerror or err})", file=source)
    except json.JSONDecodeError as err:
        problem = Problem(f"not valid JSON: {err.msg}", file=source, line=err.lineno)
    except tomllib.TOMLDecodeError as err:
        problem = Problem(f"not valid TOML: {err}", file=source)
    except UnicodeDecodeError:
        problem = Problem("not UTF-8 text; save the task file as UTF-8", file=source)
    except _TooLarge as err:
        problem = Problem(str(err), file=source)
    except RecursionError:
        problem = Problem("nested too deeply to be a task file", file=source)
    except ValueError as err:  # e.g. an integer of more than 4300 digits
        problem = Problem(f"not a valid task file: {err}", file=source)
    if problem is not None:
        raise InputError(problem)
    return spec_from_mapping(data, source=source)


class _TooLarge(Exception):
    """The file is over ``MAX_TASK_FILE_BYTES``."""


def _read_text(path: Path) -> str:
    """The file's text (a UTF-8 BOM allowed), reading no more than the size limit allows."""
    if path.is_dir():
        raise IsADirectoryError(21, "it is a directory", str(path))
    with path.open("rb") as fh:
        raw = fh.read(MAX_TASK_FILE_BYTES + 1)
    if len(raw) > MAX_TASK_FILE_BYTES:
        raise _TooLarge(f"larger than {MAX_TASK_FILE_BYTES:,} bytes; a task file is a short "
                        "TOML/JSON table (see shared/sample/custom_task_example.toml)")
    return raw.decode("utf-8-sig")


def toml_value(value: Any) -> str:
    """``value`` (a string, whole number or list of them) as TOML."""
    if isinstance(value, bool) or not isinstance(value, (str, int, list)):
        raise TypeError(f"cannot write {value!r} to TOML")
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if not isinstance(value, str):
        return str(value)
    # JSON string escapes are valid TOML basic-string escapes (no surrogates with ASCII off);
    # TOML also forbids a raw DEL, which JSON leaves as it is.
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def dump_task_toml(spec: TaskSpec) -> str:
    """A task file for ``spec`` (e.g. to start a custom task from a built-in one)."""
    lines = [f"version = {FORMAT_VERSION}"]
    lines += [f"{key} = {toml_value(value)}" for key, value in spec.to_dict().items()]
    return "\n".join(lines) + "\n"
