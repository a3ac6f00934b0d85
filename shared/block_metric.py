"""Several variants' statistics in one vector: one block of the task's metric per variant.

A simulation round evaluates each user under many variants (base, RAG k=1, OPPU k=0, ...).
Their statistics travel as one vector, block after block in the round's order, so one
secure sum gives the cohort's pooled table for every variant at once. ``BlockMetric`` is a
``MetricSpec`` over that vector: names are ``<variant>/<stat>``, and validation applies the
task metric's rules to every block. After the variants come the suite's paired comparisons
(``oppu.shared.paired_stats``), one block each, so the same sum carries every comparison's
interval and p-value.
"""

from __future__ import annotations

from collections.abc import Sequence

from oppu.shared.metrics import MetricSpec, Stats
from oppu.shared.paired_stats import PairMetric, split_pair

SEPARATOR = "/"


class BlockMetric(MetricSpec):
    """The task's ``inner`` metric repeated once per block (variant), side by side, then one
    ``PairMetric`` block per compared pair (``"<variant> vs <reference>"``)."""

    def __init__(self, inner: MetricSpec, blocks: Sequence[str], pairs: Sequence[str] = ()):
        blocks, pairs = tuple(blocks), tuple(pairs)
        if not blocks:
            raise ValueError("a block metric needs at least one block (variant)")
        bad = [b for b in blocks if not isinstance(b, str) or SEPARATOR in b or not b]
        if bad:
            raise ValueError(f"block names must be non-empty strings without {SEPARATOR!r}: "
                             f"{bad}")
        if len(set(blocks)) != len(blocks):
            repeated = sorted({b for b in blocks if blocks.count(b) > 1})
            raise ValueError(f"duplicate blocks: {repeated}")
        unknown = [p for p in pairs if not set(split_pair(p)) <= set(blocks)]
        if unknown or len(set(pairs)) != len(pairs):
            raise ValueError(f"pairs must be distinct '<variant> vs <reference>' of the blocks "
                             f"{list(blocks)}: {list(pairs)}")
        self.inner = inner
        self.blocks = blocks
        self.pairs = pairs
        self.paired = PairMetric(inner)
        self.kind = inner.kind

    def _parts(self) -> list[tuple[str, MetricSpec]]:
        return [(b, self.inner) for b in self.blocks] + [(p, self.paired) for p in self.pairs]

    def stat_names(self) -> list[str]:
        return [f"{b}{SEPARATOR}{n}" for b, metric in self._parts() for n in metric.stat_names()]

    def whole_stat_names(self) -> list[str]:
        return [f"{b}{SEPARATOR}{n}" for b, metric in self._parts()
                for n in metric.whole_stat_names()]

    def block(self, stats: Stats, name: str) -> Stats:
        """One variant's (or pair's) statistics, under the inner metric's names."""
        metric = self.paired if name in self.pairs else self.inner
        return {n: stats[f"{name}{SEPARATOR}{n}"] for n in metric.stat_names()}

    def update(self, stats: Stats, prediction: str, gold: str) -> None:
        raise TypeError("a block metric has no single prediction; update each variant's "
                        "inner metric and join() them")

    def compute(self, stats: Stats) -> dict[str, float]:
        return {f"{b}{SEPARATOR}{m}": v for b, values in self.per_block(stats).items()
                for m, v in values.items()}

    def per_block(self, stats: Stats) -> dict[str, dict[str, float]]:
        """The task's metrics for every variant: the Table-1 rows."""
        return {b: self.inner.compute(self.block(stats, b)) for b in self.blocks}

    def intervals(self, stats: Stats) -> dict[str, tuple[float, float]]:
        """Each variant's 95% interval of the primary metric."""
        return {b: self.inner.interval(self.block(stats, b)) for b in self.blocks}

    def comparisons(self, stats: Stats) -> dict[str, dict[str, float]]:
        """Each pair's mean difference, interval and p-values (``PairMetric.compute``)."""
        return {p: self.paired.compute(self.block(stats, p)) for p in self.pairs}

    def _check(self, stats: Stats) -> list[str]:
        problems = []
        for b, metric in self._parts():
            problems += [f"{b}: {p}" for p in metric._check(self.block(stats, b))]
        return problems
