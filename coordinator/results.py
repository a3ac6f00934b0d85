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
    if result.variants:
        return "\n".join(lines + _variant_rows(result.variants))
    width = max([len(k) for k in result.metrics] + [6])
    lines.append(f"  {'metric':<{width}}  value")
    for name, value in result.metrics.items():
        lines.append(f"  {name:<{width}}  {_shown(name, value)}")
    return "\n".join(lines)


def _shown(name: str, value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:.0f}" if name == "count" else f"{value:.4f}"


def _variant_rows(variants: Mapping[str, Mapping[str, float]]) -> list[str]:
    """One line per variant, one column per metric (``count`` last)."""
    names = [m for m in next(iter(variants.values())) if m != "count"] + ["count"]
    width = max([len(v) for v in variants] + [7])
    rows = [f"  {'variant':<{width}}  " + "  ".join(f"{n:>8}" for n in names)]
    for variant, values in variants.items():
        rows.append(f"  {variant:<{width}}  "
                    + "  ".join(f"{_shown(n, values.get(n, math.nan)):>8}" for n in names))
    return rows
