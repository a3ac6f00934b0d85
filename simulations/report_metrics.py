"""Table 1's metrics: which columns a task kind reports, and pooling users' statistics.

The ``records`` these functions read are documented in ``oppu.simulations.report``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from oppu.shared.metrics import MetricSpec, Stats, make_metric

Record = Mapping[str, Any]

# --- metrics ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricColumn:
    """One reported metric: its key in ``compute()``'s dict, display name and direction."""

    key: str
    name: str
    higher_is_better: bool

    @property
    def header(self) -> str:
        return f"{self.name} {'↑' if self.higher_is_better else '↓'}"


METRICS: dict[str, tuple[MetricColumn, ...]] = {
    "classification": (
        MetricColumn("accuracy", "accuracy", True),
        MetricColumn("f1", "macro-F1", True),
    ),
    "rating": (MetricColumn("mae", "MAE", False), MetricColumn("rmse", "RMSE", False)),
    "generation": (
        MetricColumn("rouge-1", "ROUGE-1", True),
        MetricColumn("rouge-l", "ROUGE-L", True),
        MetricColumn("bleu", "BLEU", True),
        MetricColumn("meteor", "METEOR", True),
    ),
}


def metric_columns(kind: str) -> tuple[MetricColumn, ...]:
    """The task kind's metrics, primary first (accuracy / MAE / ROUGE-1)."""
    try:
        return METRICS[str(kind).lower()]
    except KeyError:
        raise ValueError(
            f"unknown task kind {kind!r}; use one of {sorted(METRICS)}"
        ) from None


def primary_metric(kind: str) -> MetricColumn:
    """The metric the paper's comparisons and figures use."""
    return metric_columns(kind)[0]


def metric_value(metrics: Mapping[str, Any] | None, key: str) -> float | None:
    """A finite metric value, or None for missing/None/NaN (keys matched case-insensitively)."""
    if not metrics:
        return None
    value = metrics.get(key)
    if value is None:
        lowered = {str(k).lower(): v for k, v in metrics.items()}
        value = lowered.get(key.lower())
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def format_value(value: float | None) -> str:
    """Three decimals, or "n/a" where there is no number (e.g. no queries)."""
    return "n/a" if value is None else f"{value:.3f}"


# --- per-user records ------------------------------------------------------------------------


def records_metric(records: Sequence[Record]) -> MetricSpec:
    """The metric all records share; mixing tasks or label sets would sum nonsense."""
    if not records:
        raise ValueError("no user records given; pass at least one per-user record")
    first = records[0]
    for record in records[1:]:
        if (record.get("kind"), list(record.get("labels") or [])) != (
            first.get("kind"),
            list(first.get("labels") or []),
        ):
            raise ValueError(
                f"user {record.get('user')!r} has kind/labels {record.get('kind')!r}/"
                f"{record.get('labels')!r}, unlike user {first.get('user')!r}; "
                "report one task at a time"
            )
    return make_metric(first.get("kind", ""), first.get("labels") or ())


def _user_stats(metric: MetricSpec, record: Record, variant: str) -> dict[str, float] | None:
    vector = (record.get("vectors") or {}).get(variant)
    if vector is None:
        return None
    names = record.get("stat_names")
    if names is not None and list(names) != metric.stat_names():
        raise ValueError(
            f"user {record.get('user')!r} has statistics {list(names)}, expected "
            f"{metric.stat_names()}; the label order must match the task's"
        )
    return metric.from_vector(vector)


def pooled_metrics(records: Sequence[Record], variant: str) -> dict[str, float]:
    """The variant's metrics pooled over the users that ran it (sum of stats, then compute).

    Summing statistics before computing is what the coordinator does, so this equals the
    table's number for the same users; users without the variant are skipped (count 0 -> NaN).
    """
    metric, stats = _pooled_stats(records, variant)
    return metric.compute(stats)


def pooled_interval(records: Sequence[Record], variant: str) -> tuple[float, float]:
    """The variant's 95% interval of the primary metric over the same pooled statistics."""
    metric, stats = _pooled_stats(records, variant)
    return metric.interval(stats)


def _pooled_stats(records: Sequence[Record], variant: str) -> tuple[MetricSpec, Stats]:
    """The records' metric and the sum of the variant's statistics over the users that ran it."""
    metric = records_metric(records)
    stats = (_user_stats(metric, record, variant) for record in records)
    return metric, metric.sum(s for s in stats if s is not None)
