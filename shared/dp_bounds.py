"""How much one user can move a cohort's sums: the contribution bound differential privacy needs.

Noise hides one user only if that user's vector is bounded. With DP on, a client counts at
most ``max_queries`` held-out queries per round: a block (a variant, or a compared pair)
that scored more is scaled down to weigh exactly ``max_queries`` (every metric here is a ratio
of sums, so a scaled block keeps the user's accuracy, F1, MAE or ROUGE), then every statistic
is clipped to its per-user sensitivity and each block projected into the L2 ball of its
radius. ``bound_contribution`` does this on the client; ``contribution_bounds`` gives the
coordinator the same numbers for its noise and accounting.

The neighbouring relation is *replace one user's data* (who takes part is public; see
SECURITY.md). Two bounded vectors ``x, x'`` are non-negative, so ``|x - x'|_2^2 <=
|x|^2 + |x'|^2``: each block's L2 sensitivity is ``min(sqrt(sum s_i^2), sqrt(2) * radius)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from oppu.shared.block_metric import BlockMetric
from oppu.shared.metrics import ClassificationMetric, GenerationMetric, MetricSpec, RatingMetric
from oppu.shared.paired_stats import PairMetric

DEFAULT_MAX_QUERIES = 4
"""Held-out queries one user contributes per round with DP on, unless the round says."""
MAX_TOKENS_PER_QUERY = 256.0
"""Generation: bound on one query's BLEU lengths and n-gram counts (sacrebleu tokens)."""


@dataclass(frozen=True)
class ContributionBounds:
    """One user's bounds in a metric's vector (value units, the metric's own statistics)."""

    per_stat: tuple[float, ...]
    """Largest value each statistic may take for one user (its clip)."""
    blocks: tuple[tuple[int, int, float], ...]
    """(start, stop, L2 radius) of each block: the client projects each block into it."""
    l2: float
    """L2 sensitivity of the whole vector under replace-one."""
    l1: float
    """L1 sensitivity of the whole vector under replace-one."""

    @property
    def max_stat(self) -> float:
        return max(self.per_stat)


def contribution_bounds(metric: MetricSpec, max_queries: int) -> ContributionBounds:
    """Per-statistic clips, block radii and sensitivities of ``metric`` at ``max_queries``."""
    if max_queries < 1:
        raise ValueError(f"dp-max-queries must be at least 1, got {max_queries}")
    parts = _parts(metric)
    per_stat: list[float] = []
    blocks: list[tuple[int, int, float]] = []
    l2_squared = 0.0
    for part in parts:
        clips = _stat_clips(part, max_queries)
        radius = _radius(part, clips, max_queries)
        start = len(per_stat)
        per_stat += clips
        blocks.append((start, len(per_stat), radius))
        l2_squared += min(sum(c * c for c in clips), 2.0 * radius * radius)
    l1 = sum(per_stat)
    return ContributionBounds(tuple(per_stat), tuple(blocks), math.sqrt(l2_squared), l1)


def bound_contribution(metric: MetricSpec, vector: Sequence[float],
                       max_queries: int) -> list[float]:
    """This user's vector weighing at most ``max_queries`` per block, clipped to the bounds."""
    bounds = contribution_bounds(metric, max_queries)
    values = [float(v) for v in vector]
    if len(values) != len(bounds.per_stat):
        raise ValueError(f"expected {len(bounds.per_stat)} statistics, got {len(values)}")
    out: list[float] = []
    for part, (start, stop, radius) in zip(_parts(metric), bounds.blocks, strict=True):
        block = values[start:stop]
        names = part.stat_names()
        count = block[names.index("examples" if isinstance(part, PairMetric) else "count")]
        if count > max_queries:
            # The user's own numbers are the pair's per-user part: keep them, scale the rest.
            keep = {"users", "d_pos", "d_neg", "d_sq"} if isinstance(part, PairMetric) else set()
            factor = max_queries / count
            block = [v if n in keep else v * factor for n, v in zip(names, block, strict=True)]
        block = [min(max(v, 0.0), c)
                 for v, c in zip(block, bounds.per_stat[start:stop], strict=True)]
        norm = math.sqrt(sum(v * v for v in block))
        if norm > radius:
            block = [v * radius / norm for v in block]
        out += block
    return out


def _parts(metric: MetricSpec) -> list[MetricSpec]:
    """The metric's blocks in vector order (one for a plain metric)."""
    if isinstance(metric, BlockMetric):
        return [metric.inner] * len(metric.blocks) + [metric.paired] * len(metric.pairs)
    return [metric]


def _score_range(metric: MetricSpec) -> float:
    """Largest per-example score (or error) of ``metric``'s primary metric."""
    if isinstance(metric, RatingMetric):
        return metric.high - metric.low
    return 1.0  # accuracy and ROUGE-1 lie in [0, 1]


def _stat_clips(metric: MetricSpec, m: int) -> list[float]:
    """Each statistic's largest value for one user with at most ``m`` queries."""
    if isinstance(metric, PairMetric):
        b = _score_range(metric.inner)
        by_name = {"users": 1.0, "d_pos": b, "d_neg": b, "d_sq": b * b,
                   "examples": m, "e_pos": m * b, "e_neg": m * b, "e_sq": m * b * b}
    elif isinstance(metric, ClassificationMetric):
        return [float(m)] * len(metric.stat_names())
    elif isinstance(metric, RatingMetric):
        b = _score_range(metric)
        by_name = {"count": m, "abs_err": m * b, "sq_err": m * b * b}
    elif isinstance(metric, GenerationMetric):
        by_name = {n: m * (MAX_TOKENS_PER_QUERY if n.startswith("bleu_") else 1.0)
                   for n in metric.stat_names()}
    else:
        raise TypeError(f"no DP contribution bound for a {type(metric).__name__}")
    return [float(by_name[n]) for n in metric.stat_names()]


def _radius(metric: MetricSpec, clips: Sequence[float], m: int) -> float:
    """L2 radius a user's block never exceeds.

    Classification: ``count <= m``, ``correct = sum tp``, ``sum tp + sum fn = count`` and
    ``sum fp <= sum fn``, so ``|v|^2 <= m^2 + 2 (correct^2 + wrong^2) <= 3 m^2``. Otherwise
    the clips alone: ``sqrt(sum c_i^2)``.
    """
    if isinstance(metric, ClassificationMetric):
        return math.sqrt(3.0) * m
    return math.sqrt(sum(c * c for c in clips))
