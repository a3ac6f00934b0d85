"""Validation and normalisation of a ``TaskSpec`` (run from its ``__post_init__``).

All problems are collected, not just the first, so a custom task file can be fixed in one
pass. Each message names the bad value and what to write instead.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from typing import Any

from oppu.shared.errors import brief
from oppu.shared.tasks.kinds import RATING_LABELS, RESERVED_FIELDS, TaskKind
from oppu.shared.tasks.text import template_fields

Spec = Any
"""A ``TaskSpec`` inside its ``__post_init__``. Not imported: ``spec.py`` imports this module
at the top, and the import-linter contracts (pyproject.toml) forbid the cycle back."""
Problems = list[tuple[str | None, str]]
_POSITIVE_INTS = ("epochs", "max_new_tokens", "input_max_words", "context_max_words")
_TEMPLATES = ("query_template", "item_text_template", "context_template", "prompt_template")
_PATTERN_GROUPS = {"query_pattern": "q", "labels_pattern": "labels"}
MAX_SPEC_INT = 1_000_000
"""Upper bound of the whole-number fields (epochs, token and word budgets): a larger value is
a typo, and would only fail later, deep in training or generation."""
MAX_RATING = 1_000_000
"""Largest rating label, in magnitude (ratings are small whole numbers such as 1..5)."""
_SURROGATE = re.compile("[\ud800-\udfff]")


def _string_tuple(value: Any, name: str, problems: Problems) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        problems.append((name, f"must be a list of strings, got {brief(value)}"))
        return ()
    bad = [v for v in value if not isinstance(v, str) or not v.strip()]
    if bad:
        problems.append((name, f"entries must be non-empty strings, got {brief(bad)}"))
    counts = Counter(v.strip() for v in value if isinstance(v, str) and v.strip())
    dupes = sorted(v for v, n in counts.items() if n > 1)
    if dupes:
        problems.append((name, f"has duplicates {brief(dupes)}; list each once"))
    return tuple(v.strip() for v in value if isinstance(v, str) and v.strip())


def _encodable(spec: Spec, problems: Problems) -> None:
    """Every text of the spec must be writable as UTF-8 (a JSON file may hold lone
    ``\\ud800`` escapes, which would crash the tokenizer much later)."""
    from dataclasses import fields

    for f in fields(spec):
        value = getattr(spec, f.name)
        texts = value if isinstance(value, (list, tuple)) else (value,)
        if any(isinstance(t, str) and _SURROGATE.search(t) for t in texts):
            problems.append((f.name, "holds a lone \\ud800-\\udfff escape, which cannot "
                             "be written as UTF-8; remove it"))


def _kind(spec: Spec, problems: Problems):
    try:
        return TaskKind(spec.kind)
    except ValueError:
        valid = ", ".join(k.value for k in TaskKind)
        problems.append(("kind", f"unknown kind {brief(spec.kind)}; use one of: {valid}"))
        return None


def _pattern_groups(spec: Spec, problems: Problems) -> set[str]:
    """Compile both regexes; return the named groups of ``query_pattern``."""
    groups: set[str] = set()
    for name, group in _PATTERN_GROUPS.items():
        pattern = getattr(spec, name)
        if pattern is None:
            continue
        if not isinstance(pattern, str):
            problems.append((name, f"must be a regular expression (a string), got "
                             f"{brief(pattern)}"))
            continue
        try:
            compiled = re.compile(pattern)
        except (re.error, ValueError, OverflowError, RecursionError) as err:
            problems.append((name, f"is not a valid regular expression ({brief(str(err))}): "
                             f"{brief(pattern)}"))
            continue
        if group not in compiled.groupindex:
            problems.append((name, f"needs a named group (?P<{group}>...), got {brief(pattern)}"))
        if name == "query_pattern":
            groups = set(compiled.groupindex)
            for clash in sorted(groups & {"input", "labels"}):
                problems.append((name, f"group (?P<{clash}>...) would hide the built-in "
                                 f"{{{clash}}} placeholder; rename the group"))
    return groups


def _templates(spec: Spec, groups: set[str], problems: Problems) -> None:
    item = set(spec.item_fields)
    allowed = {
        "query_template": item | {"labels"},
        "item_text_template": item,
        "context_template": item,
        "prompt_template": {"input", "labels"} | groups,
    }
    used_by: dict[str, set[str]] = {}
    for name in _TEMPLATES:
        template = getattr(spec, name)
        if not isinstance(template, str):
            problems.append((name, f"must be a string, got {brief(template)}"))
            continue
        try:
            used = used_by[name] = template_fields(template)
        except ValueError as err:
            problems.append((name, str(err)))
            continue
        unknown = sorted(used - allowed[name])
        if unknown:
            problems.append((name, f"uses {', '.join('{' + u + '}' for u in unknown)}, which "
                             f"is not one of: {', '.join(sorted(allowed[name])) or '(none)'}; "
                             "add it to item_fields or fix the spelling"))
    target = spec.target_field
    if isinstance(target, str) and target and target in used_by.get("query_template", set()):
        problems.append(("query_template", f"must not contain the answer "
                         f"{{{spec.target_field}}}: the model would see it in the prompt"))


def check_spec(spec: Spec, setattr_: Callable[[object, str, Any], None]) -> Problems:
    """Normalise ``spec`` in place (frozen, hence ``setattr_``) and list what is wrong."""
    problems: Problems = []
    if not isinstance(spec.name, str) or not re.search(r"[A-Za-z0-9]", spec.name):
        problems.append(("name", f"must be a string with an ASCII letter or digit, got "
                         f"{brief(spec.name)}"))
    if not isinstance(spec.description, str):
        problems.append(("description", f"must be a string, got {brief(spec.description)}"))
    _encodable(spec, problems)
    kind = _kind(spec, problems)
    if kind is not None:
        setattr_(spec, "kind", kind)
    item_fields = _string_tuple(spec.item_fields, "item_fields", problems)
    setattr_(spec, "item_fields", item_fields)
    if not item_fields:
        problems.append(("item_fields", "must list the fields of a history item, e.g. "
                         "['text', 'category']"))
    for bad in [f for f in item_fields if not f.isidentifier() or f in RESERVED_FIELDS]:
        problems.append(("item_fields", f"{brief(bad)} cannot be a field name (use letters, digits "
                         f"and _, and not {' or '.join(RESERVED_FIELDS)})"))
    setattr_(spec, "labels", _string_tuple(spec.labels, "labels", problems))

    if spec.query_template is None:
        setattr_(spec, "query_template", "")
    target = spec.target_field
    if target is not None and not isinstance(target, str):
        problems.append(("target_field", f"must be a field name (a string), got {brief(target)}"))
        target = None
    elif target is not None and target not in item_fields:
        problems.append(("target_field", f"{brief(target)} is not in item_fields "
                         f"{brief(list(item_fields))}"))
    if bool(spec.query_template) != bool(target):
        problems.append(("query_template" if target else "target_field",
                         "query_template and target_field go together: set both for "
                         "supervised history items, or neither to train on item text"))

    non_target = [f for f in item_fields if f != target] or list(item_fields)
    if spec.item_text_template in ("", None):
        setattr_(spec, "item_text_template", " ".join("{" + f + "}" for f in non_target))
    if spec.context_template in ("", None):
        setattr_(spec, "context_template", " ".join(f"{f}: {{{f}}}" for f in item_fields))
    if spec.prompt_template in ("", None):
        setattr_(spec, "prompt_template", "{input}")

    _templates(spec, _pattern_groups(spec, problems), problems)

    if kind == TaskKind.CLASSIFICATION and not spec.labels and not spec.labels_pattern:
        problems.append(("labels", "a classification task needs labels (a list) or a "
                         "labels_pattern that reads them from the input"))
    if kind == TaskKind.RATING:
        if not spec.labels:
            setattr_(spec, "labels", RATING_LABELS)
        elif not all(_rating_label(lab) for lab in spec.labels):
            problems.append(("labels", f"rating labels must be whole numbers from "
                             f"-{MAX_RATING:,} to {MAX_RATING:,}, got {brief(list(spec.labels))}"))
    if spec.epochs is None and kind is not None:
        setattr_(spec, "epochs", 3 if kind == TaskKind.CLASSIFICATION else 2)
    for name in _POSITIVE_INTS:
        value = getattr(spec, name)
        if value is None and name == "epochs":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SPEC_INT:
            problems.append((name, f"must be a whole number from 1 to {MAX_SPEC_INT:,}, got "
                             f"{brief(value)}"))
    return problems


def _rating_label(label: str) -> bool:
    """Whether ``label`` is a whole number a rating scale can use ("1", "-2", not "²")."""
    text = label.strip()
    if not re.fullmatch(r"-?[0-9]{1,7}", text):
        return False
    return abs(int(text)) <= MAX_RATING
