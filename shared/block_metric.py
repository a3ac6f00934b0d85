"""Several variants' statistics in one vector: one block of the task's metric per variant.

A simulation round evaluates each user under many variants (base, RAG k=1, OPPU k=0, ...).
Their statistics travel as one vector, block after block in the round's order, so one
secure sum gives the cohort's pooled table for every variant at once. ``BlockMetric`` is a
``MetricSpec`` over that vector: names are ``<variant>/<stat>``, and validation applies the
task metric's rules to every block.
"""

from __future__ import annotations

from collections.abc import Sequence

from oppu.shared.metrics import MetricSpec, Stats

SEPARATOR = "/"


class BlockMetric(MetricSpec):
    """The task's ``inner`` metric repeated once per block (variant), side by side."""

    def __init__(self, inner: MetricSpec, blocks: Sequence[str]):
        blocks = tuple(blocks)
        if not blocks:
            raise ValueError("a block metric needs at least one block (variant)")
        bad = [b for b in blocks if not isinstance(b, str) or SEPARATOR in b or not b]
        if bad:
            raise ValueError(f"block names must be non-empty strings without {SEPARATOR!r}: "
                             f"{bad}")
        if len(set(blocks)) != len(blocks):
            repeated = sorted({b for b in blocks if blocks.count(b) > 1})
            raise ValueError(f"duplicate blocks: {repeated}")
        self.inner = inner
        self.blocks = blocks
        self.kind = inner.kind

    def stat_names(self) -> list[str]:
        return [f"{b}{SEPARATOR}{n}" for b in self.blocks for n in self.inner.stat_names()]

    def whole_stat_names(self) -> list[str]:
        whole = self.inner.whole_stat_names()
        return [f"{b}{SEPARATOR}{n}" for b in self.blocks for n in whole]

    def block(self, stats: Stats, name: str) -> Stats:
        """One variant's statistics, under the inner metric's names."""
        return {n: stats[f"{name}{SEPARATOR}{n}"] for n in self.inner.stat_names()}

    def update(self, stats: Stats, prediction: str, gold: str) -> None:
        raise TypeError("a block metric has no single prediction; update each variant's "
                        "inner metric and join() them")

    def compute(self, stats: Stats) -> dict[str, float]:
        return {f"{b}{SEPARATOR}{m}": v for b, values in self.per_block(stats).items()
                for m, v in values.items()}

    def per_block(self, stats: Stats) -> dict[str, dict[str, float]]:
        """The task's metrics for every variant: the Table-1 rows."""
        return {b: self.inner.compute(self.block(stats, b)) for b in self.blocks}

    def _check(self, stats: Stats) -> list[str]:
        problems = []
        for b in self.blocks:
            problems += [f"{b}: {p}" for p in self.inner._check(self.block(stats, b))]
        return problems
