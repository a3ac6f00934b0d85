"""Reader for LaMP-format directories: questions.json, outputs.json and optional extras.

Official LaMP ships ``questions.json`` (list of ``{id, input, profile}``) and ``outputs.json``
(``{task, golds: [{id, output}]}``, absent for test sets). The benchmark folders under
``shared/data`` add ``user_id`` per question, ``users.json`` and ``split.json``. Everything is
checked up front, with every problem reported at once, so a bad file fails before training.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from oppu.shared.data.items import check_item, has_surrogate, json_type, resolve_task
from oppu.shared.errors import InputError, Problem, UnknownTaskError, brief
from oppu.shared.tasks import TaskSpec

QUESTIONS_FILE = "questions.json"
OUTPUTS_FILE = "outputs.json"
USERS_FILE = "users.json"
SPLIT_FILE = "split.json"

MAX_PROBLEMS = 100
"""Stop collecting after this many: a wholly wrong file would otherwise bury the first ones."""
MAX_JSON_BYTES = 8 * 1024**3
"""Largest LaMP JSON file read (8 GiB). A file is parsed whole, taking several times its size
in memory; the biggest official LaMP files are well under this, and a larger one would more
likely exhaust memory than load. ``load_lamp(max_file_bytes=...)`` overrides it."""


@dataclass(frozen=True)
class LampQuery:
    """One question: its input, the user's profile (earlier items), user and gold answer."""

    id: str
    input: str
    profile: list[dict[str, Any]]
    user_id: str
    gold: str | None = None


@dataclass(frozen=True)
class LampSplit:
    """Which users are evaluated (test) and which may adapt the base model (base)."""

    test_users: tuple[str, ...]
    base_users: tuple[str, ...]


@dataclass
class LampDataset:
    """A loaded LaMP directory; ``users()`` groups its queries per user."""

    task: str
    queries: list[LampQuery]
    directory: Path
    split: LampSplit | None = None
    has_user_ids: bool = field(default=False)

    @property
    def spec(self) -> TaskSpec:
        return resolve_task(self.task)

    @property
    def has_golds(self) -> bool:
        return all(q.gold is not None for q in self.queries)

    def users(self) -> dict[str, list[LampQuery]]:
        """Queries per user, users in order of first appearance.

        Without user ids (official LaMP) every question is its own user.
        """
        grouped: dict[str, list[LampQuery]] = {}
        for query in self.queries:
            grouped.setdefault(query.user_id, []).append(query)
        return grouped


class _Problems(list):
    """A list of problems that stops growing at ``MAX_PROBLEMS``."""

    def add(self, message: str, file: Path, field: str | None = None) -> None:
        if len(self) < MAX_PROBLEMS:
            self.append(Problem(message, file=str(file), field=field))
        elif len(self) == MAX_PROBLEMS:
            self.append(Problem("too many problems; fix these first", file=str(file)))


def _read_json(path: Path, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Parsed JSON, or an ``InputError`` with file and line for a missing, huge or bad file."""
    try:
        if path.is_dir():
            raise InputError(Problem("is a directory, not a JSON file", file=str(path)))
        size = path.stat().st_size
        if size > max_bytes:
            raise InputError(Problem(
                f"file is {size:,} bytes, over the {max_bytes:,}-byte limit for a LaMP JSON "
                "file; split the data set, or raise load_lamp's max_file_bytes", str(path)))
        with path.open(encoding="utf-8-sig") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise InputError(Problem("file not found", file=str(path))) from None
    except json.JSONDecodeError as exc:
        problem = Problem(f"not valid JSON: {exc.msg} (column {exc.colno})", str(path), exc.lineno)
        raise InputError(problem) from None
    except UnicodeDecodeError as exc:
        raise InputError(Problem(f"not UTF-8 text: {exc.reason}", file=str(path))) from None
    except RecursionError:
        raise InputError(Problem("not usable JSON: nested too deeply", file=str(path))) from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise InputError(Problem(f"not valid JSON: {exc}", file=str(path))) from None
    except OSError as exc:
        raise InputError(Problem(f"cannot read: {exc.strerror or exc}", file=str(path))) from None


def _as_id(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    return str(value)


def _resolve(task: str | None, outputs: dict[str, Any] | None, path: Path) -> TaskSpec:
    declared = outputs.get("task") if outputs is not None else None
    if declared is not None and not isinstance(declared, str):
        raise InputError(Problem("must be a task name", str(path / OUTPUTS_FILE), field="task"))
    if task is None and declared is None:
        raise InputError(
            Problem(
                f"cannot tell the task: pass it, or add {OUTPUTS_FILE} with a 'task'", str(path)
            )
        )
    spec = resolve_task(task) if task is not None else _declared_task(declared, path)
    if task is not None and declared is not None and _declared_task(declared, path) != spec:
        raise InputError(
            Problem(
                f"{OUTPUTS_FILE} is for task {brief(declared)} but {task!r} was asked for",
                file=str(path / OUTPUTS_FILE),
                field="task",
            )
        )
    return spec


def _declared_task(declared: str, path: Path) -> TaskSpec:
    """The task outputs.json names; an unknown one is a problem of that file."""
    try:
        return resolve_task(declared)
    except UnknownTaskError as err:
        raise InputError(Problem(str(err), file=str(path / OUTPUTS_FILE), field="task")) from None


def _golds(outputs: Any, path: Path, problems: _Problems) -> dict[str, str] | None:
    if outputs is None:
        return None
    if not isinstance(outputs, dict) or not isinstance(outputs.get("golds"), list):
        problems.add("expected an object with a 'golds' list", path, "golds")
        return {}
    golds: dict[str, str] = {}
    for index, entry in enumerate(outputs["golds"]):
        gid = _as_id(entry.get("id")) if isinstance(entry, dict) else None
        output = entry.get("output") if isinstance(entry, dict) else None
        if gid is None or not isinstance(output, str):
            problems.add(f"gold #{index}: expected {{'id': str, 'output': str}}", path, "golds")
        elif gid in golds:
            problems.add(f"gold #{index}: duplicate id {brief(gid)}", path, "id")
        else:
            golds[gid] = output
    return golds


def _user_map(path: Path, problems: _Problems, max_bytes: int) -> dict[str, str]:
    """question id -> user id from the optional users.json."""
    if not path.exists():
        return {}
    raw = _read_json(path, max_bytes)
    if not isinstance(raw, dict):
        problems.add(f"expected an object of user id -> question ids, got {json_type(raw)}", path)
        return {}
    owner: dict[str, str] = {}
    for user, qids in raw.items():
        if not isinstance(qids, list) or any(_as_id(q) is None for q in qids):
            problems.add(f"user {brief(user)}: expected a list of question ids", path,
                         brief(user))
            continue
        owner.update((str(q), user) for q in qids)
    return owner


def _split(path: Path, problems: _Problems, max_bytes: int) -> LampSplit | None:
    if not path.exists():
        return None
    raw = _read_json(path, max_bytes)
    lists = {}
    for key in ("test_users", "base_users"):
        value = raw.get(key) if isinstance(raw, dict) else None
        if not isinstance(value, list) or not all(isinstance(u, str) for u in value):
            problems.add("expected a list of user ids", path, key)
            return None
        lists[key] = tuple(value)
    overlap = set(lists["test_users"]) & set(lists["base_users"])
    if overlap:
        problems.add(f"users in both test and base: {brief(sorted(overlap)[:5])}", path)
    return LampSplit(**lists)


def _query(
    index: int, raw: Any, spec: TaskSpec, owner: dict[str, str], path: Path, problems: _Problems
) -> LampQuery | None:
    if not isinstance(raw, dict):
        problems.add(f"question #{index}: expected an object, got {json_type(raw)}", path)
        return None
    qid = _as_id(raw.get("id"))
    where = f"question {brief(qid)} (#{index})" if qid is not None else f"question #{index}"
    ok = qid is not None
    if not ok:
        problems.add(f"{where}: 'id' must be a string or integer", path, "id")
    if not isinstance(raw.get("input"), str):
        problems.add(f"{where}: 'input' must be a string", path, "input")
        ok = False
    elif has_surrogate(raw["input"]):
        problems.add(f"{where}: 'input' holds a lone \\ud800-\\udfff escape that cannot be "
                     "written as UTF-8", path, "input")
        ok = False
    profile = raw.get("profile")
    if not isinstance(profile, list):
        problems.add(f"{where}: 'profile' must be a list of items", path, "profile")
        return None
    for j, item in enumerate(profile):
        if not isinstance(item, dict):
            problems.add(f"{where}, profile item #{j}: expected an object", path, "profile")
            ok = False
            continue
        for issue in check_item(item, spec):
            if not issue.warning:
                problems.add(f"{where}, profile item #{j}: {issue.message}", path, issue.field)
                ok = False
    user = raw.get("user_id")
    if user is not None and _as_id(user) is None:
        problems.add(f"{where}: 'user_id' must be a string or integer", path, "user_id")
        ok = False
    if not ok:
        return None
    user_id = _as_id(user) if user is not None else owner.get(qid, qid)
    return LampQuery(id=qid, input=raw["input"], profile=profile, user_id=user_id)


def load_lamp(directory: str | Path, task: str | None = None, *,
              max_file_bytes: int = MAX_JSON_BYTES) -> LampDataset:
    """Load and check a LaMP directory; the task comes from outputs.json unless given.

    Raises ``InputError`` with every problem found (file, question and field named; a JSON
    file over ``max_file_bytes`` is refused before it is read), or ``UnknownTaskError`` for a
    task passed in that the registry does not know.
    """
    root = Path(directory)
    if not root.is_dir():
        raise InputError(Problem("not a directory", file=str(root)))
    questions_path = root / QUESTIONS_FILE
    outputs_path = root / OUTPUTS_FILE
    raw_questions = _read_json(questions_path, max_file_bytes)
    outputs = _read_json(outputs_path, max_file_bytes) if outputs_path.exists() else None
    if outputs is not None and not isinstance(outputs, dict):
        raise InputError(
            Problem(
                f"expected an object {{task, golds}}, got {json_type(outputs)}", str(outputs_path)
            )
        )
    spec = _resolve(task, outputs, root)

    problems = _Problems()
    golds = _golds(outputs, outputs_path, problems)
    owner = _user_map(root / USERS_FILE, problems, max_file_bytes)
    split = _split(root / SPLIT_FILE, problems, max_file_bytes)
    if not isinstance(raw_questions, list):
        problems.add(
            f"expected a list of questions, got {json_type(raw_questions)}", questions_path
        )
        raise InputError(problems)

    queries: list[LampQuery] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_questions):
        query = _query(index, raw, spec, owner, questions_path, problems)
        if query is None:
            continue
        if query.id in seen:
            problems.add(f"question #{index}: duplicate id {brief(query.id)}", questions_path,
                         "id")
        seen.add(query.id)
        if golds is not None:
            if query.id not in golds:
                problems.add(f"no gold output for question {brief(query.id)}", outputs_path,
                             "golds")
            query = replace(query, gold=golds.get(query.id))
        queries.append(query)
    if golds is not None:
        unused = sorted(set(golds) - seen)
        if unused and len(queries) == len(raw_questions):
            problems.add(f"golds for unknown question ids: {brief(unused[:5])}", outputs_path,
                         "golds")
    if not raw_questions:
        problems.add("no questions", questions_path)
    if problems:
        raise InputError(list(problems))
    has_user_ids = any(isinstance(r, dict) and "user_id" in r for r in raw_questions) or bool(owner)
    return LampDataset(spec.name, queries, root, split, has_user_ids)
