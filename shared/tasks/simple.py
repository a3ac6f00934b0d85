"""The short form of a custom task: inputs, answer field and an instruction; the rest derived.

A person should be able to write a task in a minute::

    name = "tweet_hate"
    kind = "classification"
    instruction = "Is this tweet hateful?"
    input_fields = ["text"]
    label_field = "label"
    # labels = ["Hateful", "Non-hateful"]   optional: read from the history when absent

Templates, the retrieval text and the regexes are derived from these (``expand_short_form``);
any full ``TaskSpec`` key written beside them overrides what was derived.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from oppu.shared.errors import Problem, brief

SHORT_KEYS = ("instruction", "input_fields", "label_field", "output_field")
"""Keys of the short form (``label_field`` for classification and rating tasks,
``output_field`` for generation)."""
DERIVED_KEYS = ("item_fields", "target_field")
"""Full-form keys the short form always sets itself: writing them too is a contradiction."""
LABELS_PATTERN = r"labels: \[(?P<labels>[^\]]*)\]"


def is_short_form(data: Mapping) -> bool:
    return any(key in data for key in SHORT_KEYS)


def expand_short_form(data: Mapping, source: str | None = None
                      ) -> tuple[dict[str, Any], list[Problem]]:
    """The full task keys for a short-form task, and every problem with it.

    The query input reads ``<instruction> Answer with one of the labels: [<labels>]`` and
    then one ``field: value`` line per input field; retrieval searches the input fields, and
    a retrieved item reads as one line of ``field: value`` pairs, answer included.
    """
    problems: list[Problem] = []

    def problem(message: str, field: str) -> None:
        problems.append(Problem(message, file=source, field=field))

    kind = data.get("kind")
    answer_key = "output_field" if kind == "generation" else "label_field"
    wrong_key = "label_field" if answer_key == "output_field" else "output_field"
    if wrong_key in data:
        problem(f"a {kind or 'task'} of this kind names its answer with {answer_key}",
                wrong_key)
    inputs = data.get("input_fields")
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs or not all(
            isinstance(f, str) and f.strip() for f in inputs):
        problem(f"must list the fields the model reads, e.g. [\"text\"], got {brief(inputs)}",
                "input_fields")
        inputs = []
    answer = data.get(answer_key)
    if not isinstance(answer, str) or not answer.strip():
        problem(f"must name the field holding the answer, got {brief(answer)}", answer_key)
        answer = None
    elif answer in inputs:
        problem(f"{answer!r} is also an input field: the model would read the answer",
                answer_key)
    instruction = data.get("instruction", "")
    if not isinstance(instruction, str) or not instruction.strip() or "\n" in instruction:
        problem("must be one line telling the model what to answer, e.g. \"Is this tweet "
                f"hateful?\", got {brief(instruction)}", "instruction")
        instruction = ""
    for key in DERIVED_KEYS:
        if key in data:
            problem(f"is derived from input_fields and {answer_key} in the short form; "
                    "remove it (or write the whole task in the full form)", key)
    for label in data.get("labels") or []:
        if isinstance(label, str) and ("," in label or "]" in label):
            problem(f"label {brief(label)} holds ',' or ']', which the label list in the "
                    "prompt cannot carry; write labels_pattern and query_template yourself",
                    "labels")
    if problems:
        return {}, problems
    full = {key: value for key, value in data.items() if key not in SHORT_KEYS}
    for key, value in _derived(kind, instruction.strip(), [f.strip() for f in inputs],
                               answer.strip()).items():
        full.setdefault(key, value)
    return full, []


def _derived(kind: str | None, instruction: str, inputs: list[str], answer: str
             ) -> dict[str, Any]:
    lines = "\n".join(f"{f}: {{{f}}}" for f in inputs)
    with_labels = kind in ("classification", "rating")
    head = (f"{_braces(instruction)} Answer with one of the labels: [{{labels}}]" if with_labels
            else _braces(instruction))
    derived: dict[str, Any] = {
        "item_fields": [*inputs, answer],
        "target_field": answer,
        "query_template": f"{head}\n{lines}",
        "item_text_template": " ".join(f"{{{f}}}" for f in inputs),
        "query_pattern": rf"(?m)^{re.escape(inputs[0])}: (?P<q>.*)",
        "context_template": " ".join(f"{f}: {{{f}}}" for f in [*inputs, answer]),
    }
    if with_labels:
        derived["labels_pattern"] = LABELS_PATTERN
    return derived


def _braces(text: str) -> str:
    """Literal braces of an instruction, escaped for ``str.format`` templates."""
    return text.replace("{", "{{").replace("}", "}}")
