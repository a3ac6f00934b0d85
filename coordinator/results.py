"""A round's outcome: the cohort's sums and metric table, written per run to the state dir.

Only sums over the cohort are ever recorded, never one client's numbers; the ServerApp
writes a result, ``oppu-coordinator start`` and the tests read it back and print its table.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from oppu.coordinator.state import StateDir
from oppu.shared.atomic import write_text_atomic


@dataclass
class CohortResult:
    """What a round produced: only sums over the cohort, never one client's numbers."""

    run_id: str
    round: int
    task: str
    aggregation: str
    clients: int
    stat_names: list[str]
    sums: list[float]
    metrics: dict[str, float]
    rejected: int = 0
    """Replies that came back but were refused (unsealable, impossible statistics)."""
    failures: int = 0
    """Clients asked that never contributed: an error reply, no reply within the timeout, or
    a dropout mid-protocol (SecAgg+)."""
    base_version: str = ""
    seconds: float = 0.0
    config: dict = field(default_factory=dict)
    variants: dict[str, dict[str, float]] = field(default_factory=dict)
    """With a suite: each variant's metrics (the cohort's Table 1); ``metrics`` is flat."""
    finished_at: str = field(
        default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    asked: int = 0
    """Clients the round was sent to (0: not recorded, results written before it existed)."""
    intervals: dict[str, list[float]] = field(default_factory=dict)
    """With a suite: each variant's 95% interval of the primary metric."""
    comparisons: dict[str, dict[str, float]] = field(default_factory=dict)
    """With a suite: ``"<variant> vs <reference>"`` -> mean difference over users, its 95%
    interval and p-value, and the example-level test (``PairMetric.compute``)."""
    dp: dict = field(default_factory=dict)
    """With DP on: epsilon of this round and in total, delta, the noise std of every sum,
    the query cap and sensitivity, and each metric's noise std (``coordinator.dp_round``)."""

    def sum_stats(self) -> dict[str, float]:
        return dict(zip(self.stat_names, self.sums, strict=True))

    def to_json(self) -> str:
        from oppu.shared.metrics import json_safe

        return json.dumps(json_safe(asdict(self)), indent=2)

    @classmethod
    def from_json(cls, text: str) -> CohortResult:
        data = json.loads(text)
        data["metrics"] = _none_to_nan(data["metrics"])
        data["variants"] = {v: _none_to_nan(m) for v, m in data.get("variants", {}).items()}
        data["intervals"] = {v: [math.nan if x is None else x for x in i]
                             for v, i in data.get("intervals", {}).items()}
        data["comparisons"] = {c: _none_to_nan(m)
                               for c, m in data.get("comparisons", {}).items()}
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def _none_to_nan(values: Mapping[str, float | None]) -> dict[str, float]:
    return {k: (math.nan if v is None else v) for k, v in values.items()}


def write_result(state: StateDir, result: CohortResult) -> Path:
    path = state.result_path(result.run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, result.to_json())
    return path


def read_result(state: StateDir, run_id: int | str) -> CohortResult | None:
    path = state.result_path(run_id)
    return CohortResult.from_json(path.read_text()) if path.is_file() else None


def format_table(result: CohortResult) -> str:
    """The cohort's metric table as plain text (what ``start`` prints and the ServerApp logs)."""
    of = f" of {result.asked}" if result.asked > result.clients else ""
    lines = [f"Cohort metrics, run {result.run_id} round {result.round} ({result.task}): "
             f"{result.clients}{of} clients aggregated with {result.aggregation}"
             + (f", {result.rejected} rejected" if result.rejected else "")
             + (f", {result.failures} failed or dropped out" if result.failures else "")]
    lines += _dp_rows(result.dp)
    if result.variants:
        return "\n".join(lines + _variant_rows(result.variants, result.intervals)
                         + _comparison_rows(result.comparisons))
    width = max([len(k) for k in result.metrics] + [6])
    lines.append(f"  {'metric':<{width}}  value")
    for name, value in result.metrics.items():
        lines.append(f"  {name:<{width}}  {_shown(name, value)}")
    return "\n".join(lines)


def _dp_rows(dp: Mapping) -> list[str]:
    """What DP cost: epsilon this round and in total, the noise on every sum."""
    if not dp:
        return []
    budget = f" of {dp['budget_epsilon']:g}" if dp.get("budget_epsilon") else ""
    return [f"  DP: epsilon {dp['epsilon']:.3g} this round, {dp['total_epsilon']:.3g}{budget} "
            f"in total (delta {dp['delta']:g}); every sum carries noise of std "
            f"{dp['noise_std']:.3g}; at most {dp['max_queries']} queries per user; metrics "
            "from noisy sums, intervals widened by the noise"]


def _shown(name: str, value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:.0f}" if name == "count" else f"{value:.4f}"


def _variant_rows(variants: Mapping[str, Mapping[str, float]],
                  intervals: Mapping[str, list[float]]) -> list[str]:
    """One line per variant, one column per metric (``count`` last), then the primary
    metric's 95% interval."""
    names = [m for m in next(iter(variants.values())) if m != "count"] + ["count"]
    width = max([len(v) for v in variants] + [7])
    rows = [f"  {'variant':<{width}}  " + "  ".join(f"{n:>8}" for n in names)
            + ("  95% interval" if intervals else "")]
    for variant, values in variants.items():
        low, high = intervals.get(variant, (math.nan, math.nan))
        shown = "" if not intervals else "  n/a" if math.isnan(low) else \
            f"  [{low:.3f}, {high:.3f}]"
        rows.append(f"  {variant:<{width}}  "
                    + "  ".join(f"{_shown(n, values.get(n, math.nan)):>8}" for n in names)
                    + shown)
    return rows


def _comparison_rows(comparisons: Mapping[str, Mapping[str, float]]) -> list[str]:
    """One line per compared pair: the mean per-user difference, its interval, p-values."""
    if not comparisons:
        return []
    width = max(len(c) for c in comparisons)
    rows = [f"  {'comparison':<{width}}  {'users':>5}  {'mean diff':>9}  {'95% interval':>17}"
            f"  {'p (users)':>9}  {'p (examples)':>12}"]
    for name, c in comparisons.items():
        interval = "n/a" if math.isnan(c["low"]) else f"[{c['low']:+.3f}, {c['high']:+.3f}]"
        rows.append(f"  {name:<{width}}  {c['users']:>5.0f}  {_signed(c['mean']):>9}  "
                    f"{interval:>17}  {_p(c['p']):>9}  {_p(c['example_p']):>12}")
    return rows


def _signed(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:+.3f}"


def _p(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3g}"
