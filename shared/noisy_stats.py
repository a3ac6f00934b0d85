"""Metrics, intervals and tests from DP-noised sums, honest about the noise.

With DP on, every published sum carries independent noise of a known standard deviation
``noise_std`` (value units; ``oppu.shared.federation.dp_mechanism``). Metrics are computed
from the sums clipped at 0 (post-processing costs no privacy), and every interval and test of
``stat_tests`` is widened by the noise: the noise's own standard error (delta method on the
ratio the metric is) is added in quadrature to the sampling one. A noisy sum can break the
identities exact sums obey (``correct <= count``), so noisy vectors are only checked for
shape and finiteness (``read_noisy``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from oppu.shared.block_metric import BlockMetric
from oppu.shared.errors import InputError
from oppu.shared.metrics import ClassificationMetric, MetricSpec, Stats
from oppu.shared.paired_stats import PairMetric
from oppu.shared.stat_tests import CONFIDENCE

_NUMERATOR = {"classification": "correct", "rating": "abs_err", "generation": "rouge1"}
"""The sum each kind's primary metric divides by ``count`` (accuracy, MAE, ROUGE-1)."""


def read_noisy(metric: MetricSpec, vector: Sequence[float]) -> Stats:
    """Named statistics of a noisy vector: right length, finite numbers, nothing more."""
    names = metric.stat_names()
    if not isinstance(vector, Sequence) or isinstance(vector, str | bytes) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in vector):
        raise InputError(f"expected a list of {len(names)} numbers for this {metric.kind} "
                         f"metric, got {type(vector).__name__}")
    try:
        values = [float(v) for v in vector]
    except OverflowError:  # an int past float's range
        raise InputError(f"a statistic of this {metric.kind} metric is past a float's "
                         "range") from None
    if len(values) != len(names) or not all(math.isfinite(v) for v in values):
        raise InputError(f"expected {len(names)} finite statistics for this {metric.kind} "
                         f"metric, got {len(values)}")
    return dict(zip(names, values, strict=True))


def clamped(stats: Stats) -> Stats:
    """Noisy sums clipped at 0, the least a sum of non-negative statistics can be."""
    return {k: max(v, 0.0) for k, v in stats.items()}


def primary_noise_std(inner: MetricSpec, stats: Stats, noise_std: float) -> float:
    """Standard deviation the noise gives the primary metric ``numerator / count``."""
    count = stats["count"]
    if count < 1:
        return math.nan
    ratio = stats[_NUMERATOR[inner.kind]] / count
    return noise_std * math.sqrt(1.0 + ratio * ratio) / count


def widened_interval(inner: MetricSpec, stats: Stats, noise_std: float
                     ) -> tuple[float, float]:
    """``inner``'s 95% interval of its primary metric, widened by the noise."""
    from scipy.stats import norm

    safe = clamped(stats)
    if isinstance(inner, ClassificationMetric):
        safe["correct"] = min(safe["correct"], safe["count"])
    if safe["count"] < 1:
        return math.nan, math.nan
    center = inner.compute(safe)[inner.primary]
    low, high = inner.interval(safe)
    extra = norm.ppf(0.5 + CONFIDENCE / 2) * primary_noise_std(inner, safe, noise_std)
    if math.isnan(low):
        return center - extra, center + extra
    return (center - math.hypot(center - low, extra), center + math.hypot(high - center, extra))


def noisy_comparison(paired: PairMetric, stats: Stats, noise_std: float) -> dict[str, float]:
    """``PairMetric.compute`` from noisy sums: same keys, intervals and p-values widened.

    Over users a t interval whose squared standard error adds the noise's
    ``(2 + mean^2) noise_std^2 / users^2``; over examples (McNemar's counts, or a paired t)
    a normal test whose variance adds the noise of both discordant counts.
    """
    from scipy.stats import norm

    s = clamped(stats)
    users = _t_with_noise(s["users"], stats["d_pos"] - stats["d_neg"], s["d_sq"], noise_std)
    n, diff = s["examples"], stats["e_pos"] - stats["e_neg"]
    if isinstance(paired.inner, ClassificationMetric):
        se = math.sqrt(s["e_pos"] + s["e_neg"] + 2.0 * noise_std ** 2)
        example_p = float(2 * norm.sf(abs(diff) / se)) if se > 0 else math.nan
        example_mean = diff / n if n >= 1 else math.nan
    else:
        examples = _t_with_noise(n, diff, s["e_sq"], noise_std)
        example_mean, example_p = examples["mean"], examples["p"]
    return {"users": stats["users"], "mean": users["mean"], "low": users["low"],
            "high": users["high"], "p": users["p"], "examples": stats["examples"],
            "example_mean": example_mean, "example_p": example_p,
            "a_better": stats["e_pos"], "b_better": stats["e_neg"]}


def _t_with_noise(count: float, total: float, squares: float, noise_std: float
                  ) -> dict[str, float]:
    """``stat_tests.paired_t`` whose standard error also carries the sums' noise."""
    from scipy.stats import t as student

    nan = {"mean": math.nan, "low": math.nan, "high": math.nan, "p": math.nan}
    if count < 2:
        return nan if count < 1 else {**nan, "mean": total / count}
    mean = total / count
    sampling = max(squares - total * total / count, 0.0) / (count - 1) / count
    noise = (2.0 + mean * mean) * noise_std ** 2 / count ** 2
    se = math.sqrt(sampling + noise)
    if se <= 0:
        return {"mean": mean, "low": mean, "high": mean, "p": 1.0 if mean == 0 else 0.0}
    dist = student(count - 1)
    half = dist.ppf(0.5 + CONFIDENCE / 2) * se
    return {"mean": mean, "low": mean - half, "high": mean + half,
            "p": float(2 * dist.sf(abs(mean) / se))}


def noisy_tables(metric: MetricSpec, sums: Stats, noise_std: float) -> dict:
    """What a DP round publishes from its noisy sums: metrics, per-variant rows, widened
    intervals and comparisons, and each variant's noise std of its primary metric."""
    safe = clamped(sums)
    if not isinstance(metric, BlockMetric):
        return {"metrics": metric.compute(safe), "variants": {}, "intervals": {},
                "comparisons": {},
                "metric_noise_std": {metric.primary: primary_noise_std(metric, safe,
                                                                       noise_std)}}
    inner = metric.inner
    return {
        "metrics": metric.compute(safe),
        "variants": metric.per_block(safe),
        "intervals": {b: widened_interval(inner, metric.block(sums, b), noise_std)
                      for b in metric.blocks},
        "comparisons": {p: noisy_comparison(metric.paired, metric.block(sums, p), noise_std)
                        for p in metric.pairs},
        "metric_noise_std": {b: primary_noise_std(inner, metric.block(safe, b), noise_std)
                             for b in metric.blocks},
    }
