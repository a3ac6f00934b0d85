"""One simulated user's result per variant, kept on disk so that any suite reuses it.

A suite's record (``simulation``) answers a rerun of the same suite; these files answer a
*different* suite that shares variants with an earlier run: the untrained columns of a
100-user table first and the trained ones in a later session, or a column added to a table.
Each file holds one variant's predictions and golds for one user, keyed by everything that
shapes them: the round's recipe and data settings, the base that variant runs on (and the
plain base, which writes profiles), and for the pooled baseline its adapter's weights.
Like the adapters they are the benchmark owner's local files, never sent.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from oppu.shared.atomic import write_text_atomic
from oppu.shared.metrics import MetricSpec
from oppu.shared.personal.evaluation import EvalResult

CACHE_DIR = "variants"
CACHE_FORMAT = 1
"""Bumped when what a cached result holds, or how it is keyed, changes."""


def variant_key(fields: dict, variant: str, base_version: str, profile_writer: str,
                pooled: str) -> str:
    """A digest of ``fields`` (what shapes every variant of the round, minus the suite) and
    of what this variant alone depends on."""
    shaping = {**fields, "variant": variant, "base": base_version,
               "profile_writer": profile_writer, "pooled": pooled, "format": CACHE_FORMAT}
    text = json.dumps(shaping, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CachedVariant:
    """One variant's predictions for one user, and what it cost then."""

    predictions: list[str]
    golds: list[str]
    seconds: float
    adapter: str | None

    def result(self, metric: MetricSpec, labels: tuple[str, ...]) -> EvalResult:
        """The variant's result, scored again from its predictions (the same statistics)."""
        stats = metric.stats_for(self.predictions, self.golds)
        return EvalResult(labels, stats, metric.compute(stats), list(self.predictions),
                          list(self.golds))


def _path(user_dir: Path, variant: str, key: str) -> Path:
    return user_dir / CACHE_DIR / f"{variant}-{key}.json"


def load_variant(user_dir: Path, variant: str, key: str) -> CachedVariant | None:
    """The cached result, or None when this variant was never run with this key."""
    path = _path(user_dir, variant, key)
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return CachedVariant(data["predictions"], data["golds"], float(data["seconds"]),
                         data.get("adapter"))


def save_variant(user_dir: Path, variant: str, key: str, result: EvalResult, seconds: float,
                 adapter: str | None) -> None:
    write_text_atomic(_path(user_dir, variant, key), json.dumps({
        "variant": variant, "predictions": list(result.predictions),
        "golds": list(result.golds), "seconds": round(seconds, 2), "adapter": adapter},
        indent=1))
