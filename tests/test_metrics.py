"""Metrics from summable statistics, checked against hand-computed values."""

from __future__ import annotations

import math

import pytest

from oppu.shared.errors import InputError
from oppu.shared.metrics import make_metric

LABELS = ("a", "b", "c")


def test_classification_hand_computed() -> None:
    metric = make_metric("classification", LABELS)
    preds = [" a ", "b", "a", "zzz", "c"]
    golds = ["a", "b", "b", "c", "c "]
    result = metric.score(preds, golds)
    # correct: ex1 (a), ex2 (b), ex5 (c) -> 3 of 5.
    # a: tp=1 fp=1 (ex3)  fn=0 -> 2*1/(2+1+0) = 2/3
    # b: tp=1 fp=0 fn=1 (ex3) -> 2/3
    # c: tp=1 fp=0 fn=1 (ex4, out-of-set prediction is fp for no class) -> 2/3
    assert result["accuracy"] == pytest.approx(3 / 5)
    assert result["f1"] == pytest.approx((2 / 3 + 2 / 3 + 2 / 3) / 3)
    assert result["count"] == 5


def test_classification_macro_over_all_labels() -> None:
    # Only 'a' ever occurs; 'b' and 'c' have no support and no predictions -> F1 0 each.
    metric = make_metric("classification", LABELS)
    result = metric.score(["a", "a"], ["a", "a"])
    assert result["accuracy"] == 1.0
    assert result["f1"] == pytest.approx((1 + 0 + 0) / 3)


def test_classification_unknown_prediction_is_wrong_and_no_fp() -> None:
    metric = make_metric("classification", LABELS)
    stats = metric.stats_for(["A", "not a label"], ["a", "b"])  # case matters, as in LaMP
    assert stats["correct"] == 0
    assert stats["fn[a]"] == 1 and stats["fn[b]"] == 1
    assert sum(stats[f"fp[{lab}]"] for lab in LABELS) == 0


def test_classification_gold_outside_label_set_rejected() -> None:
    metric = make_metric("classification", LABELS)
    with pytest.raises(InputError, match="not in the label set"):
        metric.score(["a"], ["d"])


def test_classification_layout() -> None:
    metric = make_metric("classification", ("x", "y"))
    assert metric.stat_names() == [
        "count",
        "correct",
        "tp[x]",
        "tp[y]",
        "fp[x]",
        "fp[y]",
        "fn[x]",
        "fn[y]",
    ]


@pytest.mark.parametrize(
    ("kind", "labels", "user1", "user2"),
    [
        (
            "classification",
            LABELS,
            (["a", "b", "q"], ["a", "c", "c"]),
            (["c", "c"], ["c", "b"]),
        ),
        ("rating", (), (["1", "5", "x"], ["2", "5", "4"]), (["3"], ["1"])),
        (
            "generation",
            (),
            (["the cat sat", "hello"], ["a cat sat down", "hello world"]),
            (["x y z"], ["x z"]),
        ),
    ],
)
def test_sum_of_users_equals_pooled(kind, labels, user1, user2) -> None:
    metric = make_metric(kind, labels)
    s1 = metric.stats_for(*user1)
    s2 = metric.stats_for(*user2)
    pooled = metric.stats_for(user1[0] + user2[0], user1[1] + user2[1])
    summed = metric.add(s1, s2)
    assert metric.to_vector(summed) == pytest.approx(metric.to_vector(pooled))
    vector_sum = [a + b for a, b in zip(metric.to_vector(s1), metric.to_vector(s2), strict=True)]
    assert metric.compute(metric.from_vector(vector_sum)) == pytest.approx(metric.compute(pooled))
    assert metric.sum([s1, s2]) == pytest.approx(summed)


def test_rating_hand_computed_and_unparsable() -> None:
    metric = make_metric("rating")
    # errors: 4-5 = -1; 3-3 = 0; "five" vs gold 2: |1-2|=1 < |5-2|=3 -> counts as 5, error 3;
    # "" vs gold 5: |1-5|=4 > 0 -> counts as 1, error -4.
    result = metric.score(["4", " 3 ", "five", ""], ["5", "3", "2", "5"])
    assert result["mae"] == pytest.approx((1 + 0 + 3 + 4) / 4)
    assert result["rmse"] == pytest.approx(math.sqrt((1 + 0 + 9 + 16) / 4))


def test_rating_gold_in_the_middle_takes_five() -> None:
    # gold 3: |1-3| == |5-3| -> not strictly greater -> 5 (LaMP's rule).
    metric = make_metric("rating")
    assert metric.stats_for(["nan"], ["3"])["abs_err"] == 2.0
    assert metric.parse("oops", 3.0) == 5.0


def test_rouge_hand_checked() -> None:
    metric = make_metric("generation")
    # pred "d c b a" vs gold "a b c d": all 4 unigrams match -> R1 = 1; LCS = 1 -> RL = 1/4.
    # pred "a b x" vs gold "a b c d": overlap 2, P = 2/3, R = 2/4 -> F = 4/7 (LCS also 2).
    result = metric.score(["d c b a", "a b x"], ["a b c d", "a b c d"])
    assert result["rouge-1"] == pytest.approx((1 + 4 / 7) / 2)
    assert result["rouge-l"] == pytest.approx((1 / 4 + 4 / 7) / 2)


def test_bleu_from_summed_statistics_is_sacrebleus_corpus_bleu_and_meteor_its_mean() -> None:
    from nltk.translate.meteor_score import meteor_score
    from sacrebleu import corpus_bleu

    metric = make_metric("generation")
    predictions = ["the cat sat on the mat", "running dogs bark", "a b c d e"]
    golds = ["a cat sat on the mat", "the dog runs", "a b c d e"]
    halves = [metric.stats_for(predictions[:1], golds[:1]), metric.stats_for(predictions[1:],
                                                                             golds[1:])]
    result = metric.compute(metric.sum(halves))
    assert result["bleu"] == pytest.approx(corpus_bleu(predictions, [golds]).score, rel=1e-12)
    # exact and stem stages only: "runs"/"running" match by stem, "dog"/"dogs" too
    assert result["meteor"] == pytest.approx(sum(
        meteor_score([g.split()], p.split(), wordnet=type("NoWordNet", (), {
            "synsets": staticmethod(lambda *a, **k: [])})())
        for p, g in zip(predictions, golds, strict=True)) / 3)
    assert metric.score(["x"], ["x"])["meteor"] > 0.49


def test_empty_stats_give_nan() -> None:
    metric = make_metric("rating")
    assert math.isnan(metric.compute(metric.new_stats())["mae"])


@pytest.mark.parametrize(
    ("kind", "labels", "vector", "message"),
    [
        ("rating", (), [-1, 0, 0], "negative"),
        ("rating", (), [1, float("nan"), 0], "nan"),
        ("rating", (), [1.5, 0, 0], "whole number"),
        ("rating", (), [2, 4, 1], "abs_err"),
        ("rating", (), [0, 1, 1], "zero examples"),
        ("classification", ("x",), [1, 2, 1, 0, 0], "correct"),
        ("generation", (), [1, 2, 0.5, 1, 0, *[0] * 10], "at most 1"),
        ("generation", (), [3, 0.5, 0.5, 2.0, 0, *[0] * 10], "squares of F1"),
        ("generation", (), [1, 0.5, 0.5, 0.2, 0, 3, 3, 4, 0, 0, 0, 3, 2, 1, 0], "bleu_correct_1"),
        ("generation", (), [1, 0.5], "expected 15"),
    ],
)
def test_validate_rejects_impossible(kind, labels, vector, message) -> None:
    metric = make_metric(kind, labels)
    with pytest.raises(InputError, match=message):
        metric.validate_stats(vector)


def test_validate_accepts_real_stats() -> None:
    metric = make_metric("classification", LABELS)
    metric.validate_stats(metric.stats_for(["a", "b", "zz"], ["a", "c", "b"]))


def test_bad_kind_and_labels() -> None:
    with pytest.raises(ValueError, match="unknown metric kind"):
        make_metric("regression")
    with pytest.raises(ValueError, match="duplicate"):
        make_metric("classification", ("a", "a"))


def test_accepts_task_kind_enum() -> None:
    from oppu.shared.tasks import TaskKind

    assert make_metric(TaskKind.RATING).stat_names() == ["count", "abs_err", "sq_err"]
    assert make_metric(TaskKind.GENERATION).stat_names()[:5] == ["count", "rouge1", "rougeL",
                                                                  "rouge1_sq", "meteor"]
