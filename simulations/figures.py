"""The paper's figures as PNG: activity (Fig. 3), k (Fig. 4), PEFT (Fig. 6), adapters (Fig. 7),
and the paired comparisons with their intervals. Bars and points carry 95% intervals.

Inputs are the ``table`` and per-user ``records`` documented in ``oppu.simulations.report``.
Figures are drawn with matplotlib's object API (``matplotlib.figure.Figure``), never pyplot:
that needs no display and no global backend switch (``matplotlib.use``), so reporting from a
process that also plots interactively changes nothing there. matplotlib is imported lazily.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from oppu.simulations.adapter_similarity import adapter_file, adapter_similarity
from oppu.simulations.cost_report import cost_figure
from oppu.simulations.plotting import new_figure, save_png
from oppu.simulations.report_metrics import (
    MetricColumn,
    Record,
    metric_columns,
    metric_value,
    pooled_interval,
    pooled_metrics,
    primary_metric,
)
from oppu.simulations.variant_names import known_variant, ordered_names, variant_label

ACTIVITY_NAMES = {1: ("all",), 2: ("low", "high"), 3: ("low", "medium", "high")}
# Fig. 3 compares these when present, the trivial per-user baselines beside the methods;
# more bars per group would be unreadable.
ACTIVITY_VARIANTS = ("base-k0", "rag-k1", "pag-k1", "oppu-k0", "oppu-k1", "pag-oppu-k1",
                     "majority", "top-bm25")
MAX_ACTIVITY_VARIANTS = 8
TRIVIAL_BASELINES = ("majority", "top-bm25")
"""Drawn hatched: what a user's own history answers without any model."""

# --- drawing helpers -------------------------------------------------------------------------


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def _annotate_bars(ax: Any, bars: Any, values: Sequence[float | None]) -> None:
    for bar, value in zip(bars, values, strict=True):
        text = "n/a" if value is None else f"{value:.3f}"
        height = 0.0 if value is None else value
        ax.annotate(text, (bar.get_x() + bar.get_width() / 2, height),
                    ha="center", va="bottom", fontsize=8)


def _error_bars(values: Sequence[float | None],
                intervals: Sequence[Sequence[float | None] | None]) -> np.ndarray | None:
    """matplotlib's ``yerr`` (distances below and above each value) from 95% intervals; a
    missing interval draws no bar. None when there is no interval at all."""
    below, above = [], []
    for value, bounds in zip(values, intervals, strict=True):
        low, high = bounds or (None, None)
        usable = value is not None and low is not None and high is not None \
            and math.isfinite(low) and math.isfinite(high)
        below.append(value - low if usable else 0.0)
        above.append(high - value if usable else 0.0)
    return np.array([below, above]) if any(below) or any(above) else None


def _metric_for(kind: str, key: str | None) -> MetricColumn:
    if key is None:
        return primary_metric(kind)
    for column in metric_columns(kind):
        if column.key == key.lower():
            return column
    names = [c.key for c in metric_columns(kind)]
    raise ValueError(f"metric {key!r} is not reported for {kind} tasks; use one of {names}")


# --- Fig. 3: user activity -------------------------------------------------------------------


def _history_items(record: Record) -> int:
    value = record.get("history_items")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"user {record.get('user')!r} has no numeric 'history_items'")
    return int(value)


def activity_groups(records: Sequence[Record]) -> list[tuple[str, list[Record]]]:
    """Users in activity tertiles by history length: (name, records), least active first.

    Tertiles by user count (sizes differ by at most one, the low group takes the extra), so
    each bar pools about a third of the users; with 1 or 2 users there are 1 or 2 groups.
    Users with the same history length may fall into neighbouring groups.
    """
    ranked = sorted(records, key=lambda r: (_history_items(r), str(r.get("user"))))
    if not ranked:
        return []
    names = ACTIVITY_NAMES[min(len(ranked), 3)]
    chunks = np.array_split(np.arange(len(ranked)), len(names))
    return [(name, [ranked[i] for i in chunk]) for name, chunk in zip(names, chunks, strict=True)]


def _group_tick(name: str, members: Sequence[Record]) -> str:
    lengths = [_history_items(r) for r in members]
    low, high = min(lengths), max(lengths)
    items = f"{low} items" if low == high else f"{low}–{high} items"
    return f"{name}\n{items}\n{len(members)} user{'s' if len(members) != 1 else ''}"


def activity_figure(
    records: Sequence[Record],
    variants: Sequence[str],
    path: str | Path,
    *,
    metric: str | None = None,
) -> Path:
    """Fig. 3: the pooled metric per activity group, one bar per variant."""
    groups = activity_groups(records)
    if not groups or not variants:
        raise ValueError("the activity figure needs at least one user record and one variant")
    kind = str(records[0].get("kind", ""))
    column = _metric_for(kind, metric)
    with_intervals = column == primary_metric(kind)  # the sums give the primary's interval
    fig = new_figure(min(14.0, 6.0 + 0.5 * len(groups) * len(variants)), 4.5)
    ax = fig.add_subplot()
    width = 0.8 / len(variants)
    positions = np.arange(len(groups))
    for i, variant in enumerate(variants):
        values = [metric_value(pooled_metrics(members, variant), column.key)
                  for _, members in groups]
        intervals = [pooled_interval(members, variant) if with_intervals else None
                     for _, members in groups]
        offsets = positions - 0.4 + width * (i + 0.5)
        ax.bar(offsets, [_nan(v) for v in values], width, label=variant_label(variant),
               yerr=_error_bars(values, intervals), capsize=2,
               hatch="//" if variant in TRIVIAL_BASELINES else None)
    ax.set_xticks(positions, [_group_tick(name, members) for name, members in groups])
    ax.set_xlim(-0.5, len(groups) - 0.5)
    ax.set_xlabel("user activity (history length)")
    ax.set_ylabel(column.header)
    ax.set_title(f"{column.name} by user activity (pooled over each group's queries"
                 + ("; 95% intervals)" if with_intervals else ")"))
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return save_png(fig, path)


# --- Fig. 4: number of retrieved items -------------------------------------------------------


def _first_present(variants: Mapping[str, Any], *names: str) -> str | None:
    return next((n for n in names if n in variants), None)


K_LINES: tuple[tuple[str, Callable[[int], tuple[str, ...]]], ...] = (
    ("Non-personalized / RAG", lambda k: ("base-k0",) if k == 0 else (f"rag-k{k}",)),
    ("OPPU", lambda k: (f"oppu-k{k}", f"oppu-lora-k{k}")),
    ("PAG", lambda k: (f"pag-k{k}",)),
    ("PAG + OPPU", lambda k: (f"pag-oppu-k{k}", f"pag-oppu-lora-k{k}")),
)


def k_series(table: Mapping[str, Any]) -> dict[str, list[tuple[int, float, str]]]:
    """Per Fig. 4 line, its (k, primary metric, variant) points where the table has a value."""
    variants: Mapping[str, Any] = table.get("variants") or {}
    column = primary_metric(table.get("kind", ""))
    ks = sorted({v.k for v in map(known_variant, variants) if v is not None})
    series: dict[str, list[tuple[int, float, str]]] = {}
    for line, names_at in K_LINES:
        points = []
        for k in ks:
            name = _first_present(variants, *names_at(k))
            value = metric_value(variants[name], column.key) if name else None
            if value is not None:
                points.append((k, value, name))
        if points:
            series[line] = points
    return series


def k_figure(table: Mapping[str, Any], path: str | Path) -> Path:
    """Fig. 4: the primary metric against k, one line per family."""
    series = k_series(table)
    if not series:
        raise ValueError("no base/RAG/OPPU/PAG variant with a value: nothing to plot against k")
    column = primary_metric(table.get("kind", ""))
    fig = new_figure()
    ax = fig.add_subplot()
    intervals = table.get("intervals") or {}
    for line, points in series.items():
        values = [v for _, v, _ in points]
        ax.errorbar([k for k, _, _ in points], values, marker="o", label=line, capsize=3,
                    yerr=_error_bars(values, [intervals.get(n) for _, _, n in points]))
    ks = sorted({k for points in series.values() for k, _, _ in points})
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("k (retrieved history items in the prompt)")
    ax.set_ylabel(column.header)
    ax.set_title(f"{table.get('task', '')}: {column.name} vs k")
    ax.legend(fontsize=8)
    return save_png(fig, path)


# --- Fig. 6: PEFT methods --------------------------------------------------------------------

def peft_candidates() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """(bar label, variant names) for Fig. 6: the base, then every registered PEFT method."""
    from oppu.shared.personal.peft_methods import DEFAULT_PEFT_METHOD, PEFT_METHODS

    bars = [("Non-personalized", ("base-k0",))]
    for method in PEFT_METHODS.values():
        names = (f"oppu-{method.short}-k0",)
        if method.name == DEFAULT_PEFT_METHOD:  # plain ``oppu-k0`` names it too
            names = ("oppu-k0", *names)
        bars.append((f"OPPU {method.label}", names))
    return tuple(bars)


def peft_bars(table: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(bar label, variant) for Fig. 6, in the paper's order, only those in the table."""
    variants: Mapping[str, Any] = table.get("variants") or {}
    bars = [(label, _first_present(variants, *names)) for label, names in peft_candidates()]
    return [(label, name) for label, name in bars if name is not None]


def peft_figure(table: Mapping[str, Any], path: str | Path) -> Path:
    """Fig. 6: base vs each PEFT method at k=0 (needs at least one OPPU method)."""
    bars = peft_bars(table)
    if not any(name.startswith("oppu-") for _, name in bars):
        raise ValueError("no oppu-k0 or oppu-<method>-k0 in the table: no PEFT to compare")
    column = primary_metric(table.get("kind", ""))
    variants = table["variants"]
    values = [metric_value(variants[name], column.key) for _, name in bars]
    fig = new_figure(6.0, 4.5)
    ax = fig.add_subplot()
    colors = ["0.6" if name == "base-k0" else "C0" for _, name in bars]
    positions = np.arange(len(bars))
    # A missing value is an empty bar labelled n/a, so its method still shows on the axis.
    intervals = table.get("intervals") or {}
    drawn = ax.bar(positions, [0.0 if v is None else v for v in values], color=colors,
                   yerr=_error_bars(values, [intervals.get(name) for _, name in bars]),
                   capsize=3)
    _annotate_bars(ax, drawn, values)
    ax.set_xticks(positions, [label for label, _ in bars])
    ax.set_xlim(-0.6, len(bars) - 0.4)
    ax.set_ylabel(column.header)
    ax.set_title(f"{table.get('task', '')}: {column.name} by PEFT method (k=0)")
    ax.tick_params(axis="x", labelsize=8)
    return save_png(fig, path)


# --- Fig. 7: adapter similarity (the data: oppu.simulations.adapter_similarity) ------------


def short_id(user: str, limit: int = 12) -> str:
    """A user id short enough for a tick label; keeps both ends, where ids usually differ."""
    if len(user) <= limit:
        return user
    tail = (limit - 1) // 2
    return f"{user[: limit - 1 - tail]}…{user[-tail:]}"


def similarity_figure(
    users: Sequence[str], matrix: np.ndarray, path: str | Path, *, title: str | None = None
) -> Path:
    """Fig. 7: heatmap of the adapters' cosine similarities on a fixed [-1, 1] scale."""
    matrix = np.asarray(matrix, dtype=float)
    if matrix.shape != (len(users), len(users)):
        raise ValueError(f"matrix is {matrix.shape}, expected {len(users)} x {len(users)}")
    size = min(12.0, 4.0 + 0.3 * len(users))
    fig = new_figure(size + 1.2, size)
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="RdBu_r", vmin=-1.0, vmax=1.0)
    fig.colorbar(image, ax=ax, label="cosine similarity")
    if len(users) <= 40:
        ticks = np.arange(len(users))
        labels = [short_id(u) for u in users]
        ax.set_xticks(ticks, labels, rotation=90, fontsize=7)
        ax.set_yticks(ticks, labels, fontsize=7)
    if len(users) <= 10:
        for (i, j), value in np.ndenumerate(matrix):
            ax.text(j, i, "n/a" if math.isnan(value) else f"{value:.2f}", ha="center",
                    va="center", fontsize=7, color="white" if abs(value) > 0.6 else "black")
    ax.set_title(title or "Cosine similarity of users' adapters")
    return save_png(fig, path)


# --- paired comparisons ------------------------------------------------------------------


def comparisons_figure(table: Mapping[str, Any], path: str | Path) -> Path:
    """Every compared pair's mean per-user difference with its 95% interval, a line at zero:
    an interval crossing it is a difference the users do not support."""
    from oppu.shared.paired_stats import split_pair
    from oppu.shared.stat_tests import SIGNIFICANCE

    comparisons: Mapping[str, Mapping[str, Any]] = table.get("comparisons") or {}
    rows = [(name, c) for name, c in comparisons.items()
            if metric_value(c, "low") is not None]
    if not rows:
        raise ValueError("no comparison has an interval (no comparisons, or fewer than two "
                         "users)")
    column = primary_metric(table.get("kind", ""))
    fig = new_figure(8.0, 1.5 + 0.35 * len(rows))
    ax = fig.add_subplot()
    for y, (_, c) in enumerate(reversed(rows)):
        significant = c["p"] < SIGNIFICANCE
        ax.errorbar([c["mean"]], [y], xerr=[[c["mean"] - c["low"]], [c["high"] - c["mean"]]],
                    fmt="o", capsize=3, color="C0" if significant else "0.55")
    ax.axvline(0.0, color="black", linewidth=0.8)
    labels = [" vs ".join(variant_label(v) for v in split_pair(name))
              for name, _ in reversed(rows)]
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    better = "right" if column.higher_is_better else "left"
    ax.set_xlabel(f"mean per-user difference in {column.name} (first minus second; "
                  f"better is {better})\ngrey: not significant (p >= {SIGNIFICANCE})")
    ax.set_title(f"{table.get('task', '')}: paired comparisons over users, 95% intervals")
    return save_png(fig, path)


# --- everything at once ----------------------------------------------------------------------


def activity_variants(records: Sequence[Record]) -> list[str]:
    """Variants for Fig. 3: the paper's comparison set where present, else the first few."""
    present = ordered_names({v for r in records for v in (r.get("vectors") or {})})
    preferred = [v for v in ACTIVITY_VARIANTS if v in present]
    return preferred or present[:MAX_ACTIVITY_VARIANTS]


def similarity_inputs(records: Sequence[Record]) -> tuple[str, dict[str, Path], int]:
    """Variant (oppu-k0 first) with >= 2 users' adapters on disk, its paths, users missing."""
    names = ordered_names({v for r in records for v in (r.get("adapters") or {})})
    names.sort(key=lambda n: n != "oppu-k0")
    for name in names:
        listed = {str(r.get("user")): (r.get("adapters") or {}).get(name) for r in records}
        listed = {u: p for u, p in listed.items() if p}
        found = {}
        for user, path in listed.items():
            with contextlib.suppress(ValueError):
                found[user] = adapter_file(user, path)
        if len(found) >= 2:
            return name, found, len(listed) - len(found)
    raise ValueError("fewer than two users' adapter files found on disk for any variant")


def _draw_activity(table: Mapping[str, Any], records: Sequence[Record], path: Path) -> Path:
    if not records:
        raise ValueError("no per-user records given")
    return activity_figure(records, activity_variants(records), path)


def _draw_k(table: Mapping[str, Any], records: Sequence[Record], path: Path) -> Path:
    if len({k for points in k_series(table).values() for k, _, _ in points}) < 2:
        raise ValueError("values at fewer than two k")
    return k_figure(table, path)


def _draw_peft(table: Mapping[str, Any], records: Sequence[Record], path: Path) -> Path:
    return peft_figure(table, path)


def _draw_similarity(table: Mapping[str, Any], records: Sequence[Record], path: Path) -> Path:
    variant, files, missing = similarity_inputs(records)
    users, matrix = adapter_similarity(files)
    title = f"Cosine similarity of users' adapters ({variant_label(variant)})"
    if missing:
        title += f"; {missing} user(s) without an adapter file left out"
    return similarity_figure(users, matrix, path, title=title)


def _draw_comparisons(table: Mapping[str, Any], records: Sequence[Record], path: Path
                      ) -> Path:
    return comparisons_figure(table, path)


def _draw_cost(table: Mapping[str, Any], records: Sequence[Record], path: Path) -> Path:
    if not table.get("cost"):
        raise ValueError("the table has no cost section")
    return cost_figure(table["cost"], path)


FIGURES = (
    ("activity", "fig3_activity.png", _draw_activity),
    ("k", "fig4_k.png", _draw_k),
    ("peft", "fig6_peft.png", _draw_peft),
    ("similarity", "fig7_similarity.png", _draw_similarity),
    ("comparisons", "figC_comparisons.png", _draw_comparisons),
    ("cost", "figB_cost.png", _draw_cost),
)


def draw_all(
    out_dir: Path, table: Mapping[str, Any], records: Sequence[Record]
) -> tuple[dict[str, Path], list[str]]:
    """Every figure there is data for: (name -> path, reasons for those not drawn)."""
    drawn: dict[str, Path] = {}
    skipped: list[str] = []
    for name, filename, draw in FIGURES:
        try:
            drawn[name] = draw(table, records, out_dir / filename)
        except ValueError as exc:
            skipped.append(f"{name}: not drawn ({exc})")
    return drawn, skipped
