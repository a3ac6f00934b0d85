"""Intervals and paired tests from summed statistics equal scipy's on the pooled records."""

from __future__ import annotations

import random

import pytest
from scipy import stats as scipy_stats

from oppu.shared.block_metric import BlockMetric
from oppu.shared.errors import InputError
from oppu.shared.metrics import make_metric
from oppu.shared.paired_stats import PairMetric, pair_name
from oppu.shared.personal.suite import comparison_pairs
from oppu.shared.stat_tests import paired_t

LABELS = ["a", "b", "c"]


def random_users(kind: str, seed: int, users: int = 9) -> list[dict[str, list[str]]]:
    """Per-user golds and two variants' predictions: A right more often than B."""
    rng = random.Random(seed)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "then", "it", "ran", "off"]
    out = []
    for _ in range(users):
        n = rng.randint(1, 6)
        if kind == "classification":
            golds = [rng.choice(LABELS) for _ in range(n)]
            a = [g if rng.random() < 0.7 else rng.choice(LABELS) for g in golds]
            b = [g if rng.random() < 0.4 else rng.choice(LABELS) for g in golds]
        elif kind == "rating":
            golds = [str(rng.randint(1, 5)) for _ in range(n)]
            a = [str(min(5, max(1, int(g) + rng.choice((-1, 0, 0, 1))))) for g in golds]
            b = [str(rng.randint(1, 5)) for _ in golds]
        else:
            golds = [" ".join(rng.sample(words, 5)) for _ in range(n)]
            a = [" ".join(rng.sample(g.split(), 3) + rng.sample(words, 2)) for g in golds]
            b = [" ".join(rng.sample(words, 5)) for _ in golds]
        out.append({"golds": golds, "a": a, "b": b})
    return out


def client_vector(metric, user: dict[str, list[str]]) -> list[float]:
    """What one client uploads for the blocks A, B and the pair "A vs B"."""
    paired = PairMetric(metric)
    return (metric.to_vector(metric.stats_for(user["a"], user["golds"]))
            + metric.to_vector(metric.stats_for(user["b"], user["golds"]))
            + paired.to_vector(paired.user_stats(user["a"], user["b"], user["golds"])))


@pytest.mark.parametrize("kind", ["classification", "rating", "generation"])
def test_summed_client_statistics_give_the_pooled_records_tests(kind: str) -> None:
    metric = make_metric(kind, LABELS if kind == "classification" else ())
    users = random_users(kind, seed=len(kind))
    block = BlockMetric(metric, ["A", "B"], [pair_name("A", "B")])
    summed = [sum(column) for column in zip(*(client_vector(metric, u) for u in users),
                                            strict=True)]
    sums = block.from_vector(summed)  # what the coordinator holds, validated as an upload
    comparison = block.comparisons(sums)["A vs B"]

    # The same computations on the pooled per-user records, with scipy on raw values.
    primary = metric.primary
    per_user = [metric.score(u["a"], u["golds"])[primary]
                - metric.score(u["b"], u["golds"])[primary] for u in users]
    reference = scipy_stats.ttest_rel(
        [metric.score(u["a"], u["golds"])[primary] for u in users],
        [metric.score(u["b"], u["golds"])[primary] for u in users])
    interval = reference.confidence_interval(0.95)
    assert comparison["users"] == len(users)
    assert comparison["mean"] == pytest.approx(sum(per_user) / len(users), abs=1e-12)
    assert comparison["p"] == pytest.approx(reference.pvalue, rel=1e-9)
    assert (comparison["low"], comparison["high"]) == pytest.approx(
        (interval.low, interval.high), rel=1e-9)

    paired = PairMetric(metric)
    examples_a = [s for u in users for s in paired.example_scores(u["a"], u["golds"])]
    examples_b = [s for u in users for s in paired.example_scores(u["b"], u["golds"])]
    if kind == "classification":
        only_a = sum(a > b for a, b in zip(examples_a, examples_b, strict=True))
        only_b = sum(b > a for a, b in zip(examples_a, examples_b, strict=True))
        assert (comparison["a_better"], comparison["b_better"]) == (only_a, only_b)
        assert comparison["example_p"] == pytest.approx(
            scipy_stats.binomtest(only_a, only_a + only_b, 0.5).pvalue, rel=1e-12)
    else:
        assert comparison["example_p"] == pytest.approx(
            scipy_stats.ttest_rel(examples_a, examples_b).pvalue, rel=1e-9)

    # Each variant's own interval: Wilson for accuracy, t over examples for MAE and ROUGE-1.
    low, high = block.intervals(sums)["A"]
    if kind == "classification":
        wilson = scipy_stats.binomtest(int(sum(examples_a)), len(examples_a)).proportion_ci(
            0.95, "wilson")
        assert (low, high) == pytest.approx((wilson.low, wilson.high), rel=1e-12)
    else:
        t_interval = scipy_stats.ttest_1samp(examples_a, 0.0).confidence_interval(0.95)
        assert (low, high) == pytest.approx((t_interval.low, t_interval.high), rel=1e-9)


def test_pair_statistics_are_never_negative_so_secagg_can_carry_them() -> None:
    metric = make_metric("classification", LABELS)
    worse = PairMetric(metric).user_stats(["b", "b"], ["a", "a"], ["a", "a"])
    assert min(worse.values()) >= 0
    assert worse["d_neg"] == 1.0 and worse["d_pos"] == 0.0 and worse["e_neg"] == 2.0


def test_impossible_pair_statistics_are_refused() -> None:
    paired = PairMetric(make_metric("classification", LABELS))
    good = paired.user_stats(["a"], ["b"], ["a"])
    paired.validate_stats(good)
    with pytest.raises(InputError, match="e_pos"):
        paired.validate_stats({**good, "e_pos": 5.0, "e_sq": 25.0})
    with pytest.raises(InputError, match="d_sq"):
        paired.validate_stats({**good, "d_sq": 0.01})
    # A bound met with equality survives SecAgg+'s rounding of fractional sums.
    rounded = {**good, "d_pos": good["d_pos"] + 0.01, "d_sq": good["d_sq"] - 0.01}
    paired.validate_stats(rounded)


def test_constant_differences_have_no_spread_to_test() -> None:
    assert paired_t(4, 0.0, 0.0)["p"] == 1.0
    assert paired_t(4, 2.0, 1.0) == {"mean": 0.5, "low": 0.5, "high": 0.5, "p": 0.0}
    one = paired_t(1, 0.5, 0.25)
    assert one["mean"] == 0.5 and one["p"] != one["p"]  # one user: a mean, no test


def test_comparison_pairs_follow_the_paper() -> None:
    suite = ["base-k0", "rag-k1", "pag-k0", "oppu-k0", "oppu-k1", "pag-oppu-k0", "pooled-k0",
             "majority", "top-bm25"]
    pairs = comparison_pairs(suite)
    assert pairs[:2] == ("rag-k1 vs base-k0", "pag-k0 vs base-k0")
    assert {"oppu-k1 vs base-k0", "oppu-k1 vs rag-k1", "oppu-k1 vs pooled-k0",
            "oppu-k1 vs majority", "pag-oppu-k0 vs pag-k0", "pag-oppu-k0 vs majority",
            "oppu-k0 vs pooled-k0"} <= set(pairs)
    assert "oppu-k0 vs rag-k1" not in pairs and "majority vs oppu-k0" not in pairs
    assert len(pairs) == len(set(pairs))
    assert comparison_pairs(["oppu-k0", "majority"]) == ("oppu-k0 vs majority",)
    assert comparison_pairs(["base-k0", "rag-k1", "pag-k1", "gpg-k1"])[-3:] == (
        "gpg-k1 vs base-k0", "gpg-k1 vs pag-k1", "gpg-k1 vs rag-k1")


def test_a_user_without_queries_adds_nothing_for_any_kind() -> None:
    for kind in ("classification", "rating", "generation"):
        paired = PairMetric(make_metric(kind, LABELS if kind == "classification" else ()))
        empty = paired.user_stats([], [], [])
        paired.validate_stats(empty)
        assert set(empty.values()) == {0.0}
