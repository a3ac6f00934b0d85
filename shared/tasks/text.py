"""Small text helpers behind ``TaskSpec``: template fields, truncation, output parsing.

Kept apart from the dataclass so the spec module reads as "what a task is", and so these
pure functions can be tested and reused (metrics, data checks) without a spec.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from typing import Any

from oppu.shared.errors import brief

_FORMATTER = string.Formatter()
_RATING = re.compile(r"(?<![\d.])([1-5])(?:\.0+)?(?![\d.])")
_EDGE_PUNCT = "\"'`.,;:!?* \t"


def template_fields(template: str) -> set[str]:
    """Names a ``str.format`` template reads; raises ValueError on a malformed template.

    Only plain names are allowed (``{text}``), not ``{0}``, ``{}``, ``{a.b}`` or ``{a[0]}``:
    templates are filled from item mappings, so anything else is a mistake.
    """
    names: set[str] = set()
    for _, name, spec, conversion in _FORMATTER.parse(template):
        if name is None:
            continue
        if not name.isidentifier():
            raise ValueError(
                f"placeholder {{{brief(name)}}} in template {brief(template)} is not a field "
                "name; use named fields like {text}, and write literal braces as {{ and }}"
            )
        if spec or conversion:
            # "{text:>999999999}" would build a gigabyte string at every prompt.
            raise ValueError(
                f"placeholder {{{name}}} in template {brief(template)} has a conversion or "
                f"format spec; write plain {{{name}}}"
            )
        names.add(name)
    return names


def truncate_words(text: str, max_words: int) -> str:
    """The first ``max_words`` whitespace-separated words (the OPPU reference's rule).

    Whitespace is only collapsed when the text is actually cut, so short texts pass through
    unchanged (newlines and spacing in a user's text stay as written).
    """
    words = text.split()
    return text if len(words) <= max_words else " ".join(words[:max_words])


def as_text(value: Any) -> str:
    """A field value as text: None is empty, whole floats lose their ``.0`` (ratings)."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def text_fields(item: Mapping[str, Any], names: Sequence[str], max_words: int | None) -> dict:
    """The named fields of ``item`` as (optionally truncated) text; KeyError names a gap."""
    out = {}
    for name in names:
        if name not in item:
            raise KeyError(name)
        text = as_text(item[name])
        out[name] = truncate_words(text, max_words) if max_words else text
    return out


def first_line(text: str) -> str:
    """The first non-blank line, stripped (LaMP answers are one line)."""
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


def split_label_list(text: str) -> tuple[str, ...]:
    """``"a, b , c"`` -> ("a", "b", "c"), dropping empties and keeping first occurrences."""
    seen: dict[str, None] = {}
    for part in text.split(","):
        label = part.strip()
        if label:
            seen.setdefault(label, None)
    return tuple(seen)


def parse_label(text: str, labels: Sequence[str]) -> str:
    """A classification answer: first line, lowercased, matched to a label if it is one.

    Matching is case-insensitive and ignores edge punctuation and quotes (``"Sports."``).
    A bare number matches a bracketed label (``1`` -> ``[1]``, LaMP-1). Anything else is
    returned normalized, so it counts as wrong instead of crashing the metric.
    """
    answer = first_line(text).lower()
    by_lower = {label.lower(): label for label in labels}
    for candidate in (answer, answer.strip(_EDGE_PUNCT)):
        if candidate in by_lower:
            return by_lower[candidate]
        if f"[{candidate}]" in by_lower:
            return by_lower[f"[{candidate}]"]
    return answer


def parse_rating(text: str) -> str:
    """The first standalone digit 1-5 (``"4.0"`` counts, ``"45"`` does not), else the text."""
    match = _RATING.search(text)
    return match.group(1) if match else text.strip()
