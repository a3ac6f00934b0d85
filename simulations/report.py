"""The paper's Table 1 (Markdown and JSON) and figures from a federated simulation's results.

Two inputs, both plain JSON-compatible data:

``table`` — what the simulation runner writes as ``table1.json``; each variant's metrics are
pooled over all users' queries (the coordinator only ever sees summed statistics)::

    {"task": "LaMP_2N", "kind": "classification", "labels": ["business", ...],
     "users": 10, "aggregation": "secagg",
     "variants": {"base-k0": {"accuracy": 0.41, "f1": 0.05, "count": 30.0}, ...},
     "seconds_total": 812.3, "settings": {...free-form...}, "base_version": "abc..."}

``kind`` is "classification" (metrics ``accuracy``, ``f1``), "rating" (``mae``, ``rmse``) or
"generation" (``rouge-1``, ``rouge-l``, ``bleu``, ``meteor``), each with ``count``
(queries). A metric value may be NaN or None (no queries); other keys are carried through to
the JSON untouched. Two optional keys come from the same secure sum
(``oppu.shared.paired_stats``)::

     "intervals": {"base-k0": [0.35, 0.47], ...},        # primary metric's 95% interval
     "comparisons": {"oppu-k1 vs base-k0": {"users": 100, "mean": 0.25, "low": 0.18,
                     "high": 0.32, "p": 1e-9, "examples": 283, "example_mean": 0.25,
                     "example_p": 1e-15, "a_better": 80, "b_better": 9}, ...}

``records`` — one dict per user, written locally by each simulated client::

    {"user": "u123", "history_items": 87, "train_items": 87, "queries": 3,
     "labels": [...], "kind": "classification",
     "stat_names": [...],                      # make_metric(kind, labels).stat_names()
     "vectors": {"base-k0": [...], "oppu-k0": [...]},   # summable statistics per variant
     "seconds": {"oppu-k0": 41.2, ...},
     "adapters": {"oppu-k0": "/path/to/adapter/dir", ...}}

Variant names are the suite's (``oppu.shared.personal.suite.parse_variant``, e.g. ``base-k0``,
``rag-k1``, ``pag-k1``, ``oppu-k0``, ``oppu-ia3-k0``, ``pag-oppu-k1``, ``pooled-k0``,
``majority``, ``top-bm25``); how the table groups, labels and orders them is
``oppu.simulations.variant_names``. Names the suite rejects are kept and shown last, never
dropped. Metric columns and pooling live in ``oppu.simulations.report_metrics``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from oppu.shared.atomic import write_text_atomic
from oppu.shared.metrics import json_safe
from oppu.shared.paired_stats import split_pair
from oppu.shared.stat_tests import SIGNIFICANCE
from oppu.simulations import figures
from oppu.simulations.report_metrics import (
    METRICS,
    MetricColumn,
    Record,
    format_value,
    metric_columns,
    metric_value,
    pooled_metrics,
    primary_metric,
    records_metric,
)
from oppu.simulations.variant_names import (
    groups,
    known_variant,
    order_variants,
    ordered_names,
    variant_group,
    variant_label,
)

__all__ = [
    "METRICS", "MetricColumn", "Record", "compare_variants", "format_value", "groups",
    "metric_columns", "metric_value", "order_variants", "ordered_names", "pooled_metrics",
    "primary_metric", "records_metric", "report_markdown", "table1_markdown", "table_header",
    "table_json", "variant_group", "variant_label", "write_report",
]

BASELINE_NOTES = {  # family -> (how the table names it, what it is)
    "pooled": ("pooled-kJ", "one adapter trained on all users' pooled histories"),
    "majority": ("majority", "the user's most frequent label in their history"),
    "top-bm25": ("top-bm25", "the label/text of the history item BM25 ranks first"),
}


# --- Table 1 ---------------------------------------------------------------------------------


def table_header(table: Mapping[str, Any]) -> str:
    """One line saying what the table is about: task, users, aggregation."""
    return (
        f"**{table.get('task', '?')}** ({table.get('kind', '?')}): "
        f"{table.get('users', '?')} users, aggregation: {table.get('aggregation', '?')}"
    )


def _best(values: list[float | None], higher_is_better: bool) -> str | None:
    """The best value as displayed, so rows that look tied are all bold."""
    finite = [v for v in values if v is not None]
    if not finite:
        return None
    return format_value(max(finite) if higher_is_better else min(finite))


def _count(metrics: Mapping[str, Any] | None) -> str:
    count = metric_value(metrics, "count")
    if count is None:
        return "n/a"
    return str(int(count)) if count == int(count) else f"{count:.1f}"


def _interval(bounds: Sequence[float | None] | None) -> str:
    low, high = (metric_value({"v": b}, "v") for b in (bounds or (None, None)))
    return "n/a" if low is None or high is None else f"{low:.3f}–{high:.3f}"


def table1_markdown(table: Mapping[str, Any]) -> str:
    """Table 1 as Markdown: header line, then rows grouped in the paper's order.

    The group label appears on each group's first row (as in the paper); the best value of
    each metric column is bold (lowest for ↓ metrics, all rows equal at display precision).
    With ``intervals`` (variant -> [low, high]) the primary metric's 95% interval follows;
    with ``variant_bases`` (variant -> base name) a column says which base each row ran on.
    """
    columns = metric_columns(table.get("kind", ""))
    variants: Mapping[str, Any] = table.get("variants") or {}
    grouped = order_variants(variants)
    best = {
        c.key: _best([metric_value(variants[n], c.key) for n in variants], c.higher_is_better)
        for c in columns
    }
    intervals: Mapping[str, Sequence[float | None]] = table.get("intervals") or {}
    interval_header = f" {columns[0].name} 95% CI |" if intervals else ""
    bases: Mapping[str, str] = table.get("variant_bases") or {}
    lines = [
        table_header(table),
        "",
        "| group | method | variant | " + "base | " * bool(bases)
        + " | ".join(c.header for c in columns) + f" |{interval_header} queries |",
        "|---|---|---|" + "---|" * bool(bases)
        + "---:|" * (len(columns) + 1 + bool(intervals)),
    ]
    for group, names in grouped:
        for i, name in enumerate(names):
            cells = [group if i == 0 else "", variant_label(name), f"`{name}`"]
            if bases:
                cells.append(bases.get(name) or "none")
            for column in columns:
                shown = format_value(metric_value(variants[name], column.key))
                cells.append(f"**{shown}**" if shown == best[column.key] else shown)
            if intervals:
                cells.append(_interval(intervals.get(name)))
            cells.append(_count(variants[name]))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --- comparisons -----------------------------------------------------------------------------


def compare_variants(table: Mapping[str, Any]) -> list[str]:
    """One plain sentence per compared pair of ``table["comparisons"]``.

    Each gives the mean per-user difference of the primary metric with its 95% interval and
    the paired t-test over users, then the example-level test (exact McNemar on the queries
    only one side got right, for classification), and ends with the verdict: better or worse
    only where the test over users gives p < 0.05, "not significant" otherwise. Where the two
    tests disagree the sentence says so and why the one over users decides.
    """
    column = primary_metric(table.get("kind", ""))
    comparisons: Mapping[str, Mapping[str, Any]] = table.get("comparisons") or {}
    return [_comparison_sentence(name, values, column, table.get("kind") == "classification")
            for name, values in comparisons.items()]


def _comparison_sentence(name: str, values: Mapping[str, Any], column: MetricColumn,
                         counted: bool) -> str:
    variant, reference = split_pair(name)
    head = f"{variant_label(variant)} vs {variant_label(reference)}, {column.name}"
    mean, users = metric_value(values, "mean"), metric_value(values, "users") or 0
    if mean is None:
        return f"{head}: no user has queries under both, nothing to compare"
    low, high, p = (metric_value(values, k) for k in ("low", "high", "p"))
    over_users = f"{mean:+.3f} per user"
    if low is None or p is None:
        return f"{head}: {over_users} over {users:.0f} user(s): too few users to test"
    over_users += f" (95% CI {low:+.3f} to {high:+.3f}, p = {p:.2g}, {users:.0f} users)"
    example_p = metric_value(values, "example_p")
    if counted:
        examples = (f"queries only it got right: {values['a_better']:.0f}, only the other: "
                    f"{values['b_better']:.0f} (McNemar p = {_p(example_p)})")
    else:
        examples = f"paired over queries p = {_p(example_p)}"
    if p >= SIGNIFICANCE:
        verdict = "not significant"
    else:
        better = mean > 0 if column.higher_is_better else mean < 0
        verdict = f"{'better' if better else 'worse'}, significant"
    if example_p is not None and (example_p < SIGNIFICANCE) != (p < SIGNIFICANCE):
        verdict += (" over users, which decides: the test over queries alone (p = "
                    f"{_p(example_p)}) counts one user's queries as independent")
    return f"{head}: {over_users}; {examples}. {verdict.capitalize()}."


def _p(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2g}"


# --- writing ---------------------------------------------------------------------------------


def table_json(table: Mapping[str, Any]) -> str:
    """The table as strict JSON (NaN -> null; anything else non-JSON as its string)."""
    return json.dumps(json_safe(table), indent=2, ensure_ascii=False, allow_nan=False,
                      default=str) + "\n"


def _notes(table: Mapping[str, Any]) -> list[str]:
    variants: Mapping[str, Any] = table.get("variants") or {}
    columns = metric_columns(table.get("kind", ""))
    notes = [
        "Every number is pooled over all users' queries: each user's summable statistics are "
        "added up (under the stated aggregation the coordinator sees only those sums) and the "
        "metric is computed once, so users with more queries weigh more.",
        "Directions: " + ", ".join(c.header for c in columns) + "; bold is the best per column.",
        "OPPU without a named method is LoRA; k is the number of retrieved history items in "
        "each prompt.",
    ]
    personal = ((table.get("settings") or {}).get("personal") or {}).get("train") or {}
    bases: Mapping[str, Mapping[str, Any]] = table.get("bases") or {}
    if len(bases) > 1:
        notes.append("Each row runs on the task-adapted base of its prompt family (column "
                     "`base`), as the paper: `plain` learned from queries alone, `rag-kJ` from "
                     "queries with the user's top-J BM25 history items, `profile-kJ` from "
                     "queries with the user's PAG profile (GPG rows read their profile with "
                     "the same base).")
    elif bases:
        notes.append("Every row runs on one task-adapted base (`plain`), not the paper's one "
                     "base per prompt family.")
    for name, base in bases.items():
        notes += _base_notes(name, base, personal)
    counts = {metric_value(m, "count") for m in variants.values()} - {None}
    if len(counts) == 1 and table.get("kind") == "classification" and min(counts) > 0:
        queries = min(counts)
        notes.append(f"{int(queries)} queries: one query moves accuracy by {1 / queries:.3f}.")
    families = {v.family for v in map(known_variant, variants) if v is not None}
    notes += [f"`{shown}`: {text}." for key, (shown, text) in BASELINE_NOTES.items()
              if key in families]
    notes += _dp_notes(table.get("dp") or {})
    seconds = metric_value(table, "seconds_total")
    if seconds is not None:
        notes.append(f"Wall time of the whole simulation: {seconds:.0f} s.")
    return notes


def _dp_notes(dp: Mapping[str, Any]) -> list[str]:
    """What differential privacy cost (``coordinator.dp_round``): budget and noise."""
    if not dp:
        return []
    metric_noise = dp.get("metric_noise_std") or {}
    noise = "; ".join(f"{name} ±{value:.3f}" for name, value in metric_noise.items()
                      if isinstance(value, (int, float)))
    return [f"**Differentially private**: epsilon {dp['epsilon']:.3g} (delta {dp['delta']:g}) "
            f"this round, {dp.get('total_epsilon', dp['epsilon']):.3g} in total; each user "
            f"counts at most {dp['max_queries']} queries and every sum carries noise of std "
            f"{dp['noise_std']:.3g}, so metrics come from noisy sums and intervals and tests "
            "are widened by the noise" + (f" (noise std of the metrics: {noise})" if noise
                                          else "") + "."]


def _base_notes(name: str, base: Mapping[str, Any], trained: Mapping[str, Any]) -> list[str]:
    """What one base is, how it scored on held-out base users, and (the plain base) the
    recipe chosen there against the one the private adapters ran with (``trained``)."""
    if base.get("untuned"):
        return [f"**The {name} base is not task-adapted**: {base['untuned']}."]
    notes = []
    recipe = base.get("recipe")
    if recipe:
        epochs = trained.get("epochs")
        ran = (f"; the private adapters trained with lr {trained['lr']:g} for "
               + (f"{epochs} epoch(s)" if epochs else "the task's default epochs")
               if trained.get("lr") else "")
        notes.append(f"Private-adapter recipe chosen on {len(recipe['users'])} held-out base "
                     f"users: lr {recipe['lr']:g}, {recipe['epochs']} epoch(s){ran}.")
    check = base.get("check")
    if not check:
        return notes
    trivial = "; ".join(f"{name} {value:.3f}" for name, value in check["trivial"].items())
    version = f" ({base['version'][:12]})" if base.get("version") else ""
    note = (f"Check of the {name} base{version} on {check['queries']} queries of "
            f"{check['users']} held-out base users ({check['metric']}): untuned "
            f"{check['untuned']:.3f}, task-adapted "
            f"{check['adapted']:.3f} after {check['chosen_epochs']} epoch(s)"
            + (f"; {trivial}" if trivial else "") + ".")
    if check.get("beaten_by"):
        note = (f"**Warning: the {name} base scores below {'; '.join(check['beaten_by'])}"
                f" on held-out base users**, so every column on it starts below a trivial "
                "answer. " + note)
    return [note, *notes]


def report_markdown(
    table: Mapping[str, Any],
    figures: Mapping[str, Path] | None = None,
    skipped: Sequence[str] = (),
) -> str:
    """The whole ``table1.md``: table, comparison sentences, notes, figure list."""
    figures = figures or {}
    parts = [f"# Table 1: {table.get('task', '?')}", "", table1_markdown(table)]
    sentences = compare_variants(table)
    if sentences:
        parts += ["## Comparisons (paired, with uncertainty)", "",
                  *(f"- {s}" for s in sentences), ""]
    parts += ["## Notes", "", *(f"- {n}" for n in _notes(table)), ""]
    if table.get("cost"):
        from oppu.simulations.cost_report import cost_markdown

        parts += ["## Cost", "", *cost_markdown(table["cost"]), ""]
    if figures or skipped:
        parts += ["## Figures", ""]
        parts += [f"- {name}: `{Path(path).name}`" for name, path in figures.items()]
        parts += [f"- {reason}" for reason in skipped]
        parts.append("")
    return "\n".join(parts)


def write_report(
    out_dir: str | Path,
    table: Mapping[str, Any],
    records: Sequence[Record] = (),
    *,
    plots: bool = True,
) -> dict[str, Path]:
    """Write ``table1.md``, ``table1.json`` and the figures there is data for; name -> path.

    Names: ``markdown``, ``json``, and when drawn ``activity``, ``k``, ``peft``,
    ``similarity``. A figure that cannot be drawn is listed in ``table1.md`` with the reason
    instead of failing the report. Every file is written atomically.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    drawn: dict[str, Path] = {}
    skipped: list[str] = []
    if plots:
        drawn, skipped = figures.draw_all(out, table, list(records))
    paths = {"markdown": out / "table1.md", "json": out / "table1.json"}
    write_text_atomic(paths["json"], table_json(table))
    write_text_atomic(paths["markdown"], report_markdown(table, drawn, skipped))
    return {**paths, **drawn}
