"""Task registry: LaMP tasks built in, custom tasks declared in TOML/JSON.

Names are matched loosely (case, ``-``/``_`` and a missing ``LaMP`` prefix do not matter):
``LaMP_2N``, ``LaMP-2N``, ``lamp2n`` and ``2N`` are one task.
"""

from __future__ import annotations

import re
from pathlib import Path

from oppu.shared.errors import InputError, Problem, UnknownTaskError
from oppu.shared.tasks.custom import dump_task_toml, read_task_file, spec_from_mapping
from oppu.shared.tasks.lamp import LAMP_ALIASES, LAMP_TASKS
from oppu.shared.tasks.spec import Example, TaskKind, TaskSpec, TaskSpecError

__all__ = [
    "Example",
    "TaskKind",
    "TaskSpec",
    "TaskSpecError",
    "dump_task_toml",
    "get_task",
    "load_task_file",
    "register_task",
    "spec_from_mapping",
    "task_names",
]

_TASKS: dict[str, TaskSpec] = {}
_ALIASES: dict[str, str] = {}


def _key(name: str) -> str:
    key = re.sub(r"[^a-z0-9]", "", str(name).lower())
    return "lamp" + key if key[:1].isdigit() else key


def register_task(spec: TaskSpec, *, replace: bool = False) -> TaskSpec:
    """Make ``spec`` available to ``get_task``; an identical spec returns the registered one."""
    key = _key(spec.name)
    existing = _TASKS.get(_ALIASES.get(key, key))
    if existing is not None and existing == spec and not replace:
        return existing
    if existing is not None and not replace:
        raise ValueError(
            f"a different task named {existing.name!r} is already registered; give yours "
            "another name, or pass replace=True to override it"
        )
    _ALIASES.pop(key, None)
    _TASKS[key] = spec
    return spec


def task_names() -> tuple[str, ...]:
    """Canonical names of all registered tasks, built-in first."""
    return tuple(spec.name for spec in _TASKS.values())


def get_task(name: str) -> TaskSpec:
    """The registered task called ``name`` (or an alias); UnknownTaskError lists the options."""
    key = _key(name)
    spec = _TASKS.get(_ALIASES.get(key, key))
    if spec is None:
        raise UnknownTaskError(
            f"unknown task {name!r}; known tasks: {', '.join(task_names())}. "
            "For another task, declare it in a custom task file (TOML or JSON, see "
            "shared/sample/custom_task_example.toml) and load it with load_task_file."
        )
    return spec


def load_task_file(path: str | Path, *, replace: bool = False) -> TaskSpec:
    """Read, validate and register a custom task file; returns its spec."""
    spec = read_task_file(path)
    try:
        return register_task(spec, replace=replace)
    except ValueError as err:
        raise InputError(Problem(str(err), file=str(path), field="name")) from None


for _spec in LAMP_TASKS:
    register_task(_spec)
_ALIASES.update({_key(alias): _key(target) for alias, target in LAMP_ALIASES.items()})
