"""Tests and intervals from sums (count, sum, sum of squares): what survives SecAgg+.

Each function takes the summed statistics a cohort publishes and returns what scipy's own
tests return on the raw values (``ttest_1samp``, ``binomtest``), so a report computed from a
secure sum says exactly what the same computation on the pooled records would.
"""

from __future__ import annotations

import math

CONFIDENCE = 0.95
SIGNIFICANCE = 0.05
"""Reports call a difference significant when its test gives p below this."""


def paired_t(count: float, total: float, squares: float, confidence: float = CONFIDENCE
             ) -> dict[str, float]:
    """Mean of differences, its t interval and the two-sided p of "mean 0", from
    ``count``, ``sum d`` and ``sum d^2`` (the same numbers ``scipy.stats.ttest_1samp`` gives
    on the differences themselves)."""
    from scipy import stats as distributions

    nan = {"mean": math.nan, "low": math.nan, "high": math.nan, "p": math.nan}
    if count < 1:
        return nan
    mean = total / count
    if count < 2:
        return {**nan, "mean": mean}
    variance = max(squares - total * total / count, 0.0) / (count - 1)
    se = math.sqrt(variance / count)
    if se <= 1e-12 * max(1.0, abs(mean)):  # every difference equal: no spread to test
        p = 1.0 if abs(mean) <= 1e-12 else 0.0
        return {"mean": mean, "low": mean, "high": mean, "p": p}
    t = distributions.t(count - 1)
    half = t.ppf(0.5 + confidence / 2) * se
    return {"mean": mean, "low": mean - half, "high": mean + half,
            "p": float(2 * t.sf(abs(mean) / se))}


def mcnemar(a_only: float, b_only: float, examples: float) -> dict[str, float]:
    """Exact McNemar test: of the examples where exactly one side is right, is A's share
    one half? ``mean`` is the accuracy difference over all examples."""
    from scipy.stats import binomtest

    discordant = round(a_only + b_only)
    mean = (a_only - b_only) / examples if examples else math.nan
    p = float(binomtest(round(a_only), discordant, 0.5).pvalue) if discordant else 1.0
    return {"mean": mean, "p": p}


def mean_interval(count: float, total: float, squares: float,
                  confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The t interval of a mean from its count, sum and sum of squares (NaN when < 2)."""
    result = paired_t(count, total, squares, confidence)
    return result["low"], result["high"]


def wilson_interval(successes: float, count: float, confidence: float = CONFIDENCE
                    ) -> tuple[float, float]:
    """Wilson score interval of a proportion (NaN without examples)."""
    from scipy.stats import binomtest

    if count < 1:
        return math.nan, math.nan
    interval = binomtest(round(successes), round(count)).proportion_ci(confidence, "wilson")
    return float(interval.low), float(interval.high)
