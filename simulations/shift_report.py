"""Behaviour shift (paper Table 3): the same users and variants, before and after the shift.

``oppu-coordinator simulate --history-shift 0.5`` keeps only the half of each history least
relevant to the user's queries. This puts that run's table beside the unshifted one:
which methods lean on relevant history (RAG) and which keep what they learned (OPPU).

    python -m oppu.simulations.shift_report ORIGINAL/table1.json SHIFTED/table1.json
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from oppu.simulations.report_metrics import format_value, metric_value, primary_metric
from oppu.simulations.variant_names import ordered_names, variant_label


def shift_rows(original: Mapping[str, Any], shifted: Mapping[str, Any]) -> list[dict]:
    """Per variant both runs have: primary metric before, after, and the change."""
    if original.get("task") != shifted.get("task"):
        raise ValueError(f"the tables are for different tasks: {original.get('task')} vs "
                         f"{shifted.get('task')}")
    column = primary_metric(original.get("kind", ""))
    before, after = original.get("variants") or {}, shifted.get("variants") or {}
    rows = []
    for name in ordered_names(v for v in before if v in after):
        a = metric_value(before[name], column.key)
        b = metric_value(after[name], column.key)
        rows.append({"variant": name, "metric": column.key, "original": a, "shifted": b,
                     "change": None if a is None or b is None else b - a})
    return rows


def shift_markdown(original: Mapping[str, Any], shifted: Mapping[str, Any]) -> str:
    column = primary_metric(original.get("kind", ""))
    share = (shifted.get("settings") or {}).get("history_shift", "?")
    lines = [f"**{original.get('task')}**: {column.name} with the full history vs with the "
             f"{share} most query-relevant share of it removed ({shifted.get('users')} users)",
             "", "| method | variant | original | shifted | change |", "|---|---|---:|---:|---:|"]
    for row in shift_rows(original, shifted):
        change = "n/a" if row["change"] is None else f"{row['change']:+.3f}"
        lines.append(f"| {variant_label(row['variant'])} | `{row['variant']}` | "
                     f"{format_value(row['original'])} | {format_value(row['shifted'])} | "
                     f"{change} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 2:
        raise SystemExit(__doc__)
    original, shifted = (json.loads(Path(a).read_text()) for a in args)
    print(shift_markdown(original, shifted))
    print("SHIFT_JSON " + json.dumps(shift_rows(original, shifted)))


if __name__ == "__main__":
    main()
