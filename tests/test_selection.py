"""Local recipe selection: the user's newest training items choose the recipe, and an adapter
is kept only where it validates better than the base (and the previous adapter).

The grid logic is tested with stand-in training and scoring functions; the promise itself on
the real embedded model: with defaults (no hand-set learning rate) a user the base cannot
know gets an adapter that beats the base, and a user whose history carries nothing the base
does not already do keeps the base, is told so, and ``ask`` answers from the base.
"""

from __future__ import annotations

import json

import pytest
from helpers import DYSTOPIA_MOVIES as MOVIES
from typer.testing import CliRunner

from oppu.client.adapter_store import AdapterStore
from oppu.shared.personal.label_prior import MAJORITY, LabelPrior
from oppu.shared.personal.pipeline import personalize_user
from oppu.shared.personal.recipe import DEFAULT_RECIPE
from oppu.shared.personal.selection import (
    GridPoint,
    SelectionReport,
    SelectionSettings,
    choose,
    run_grid,
    validation_split,
)
from oppu.shared.tasks import get_task


def test_validation_is_the_newest_share_and_needs_enough_items() -> None:
    items = [{"i": i} for i in range(20)]
    fit, val = validation_split(items, SelectionSettings(val_share=0.2, min_val_items=3))
    assert [x["i"] for x in val] == [16, 17, 18, 19] and len(fit) == 16
    fit, val = validation_split(items, SelectionSettings(val_share=0.1, min_val_items=5))
    assert len(val) == 5  # the minimum wins over a smaller share
    assert validation_split(items[:9], SelectionSettings(min_val_items=5)) is None


def test_grid_stops_each_point_early_and_keeps_the_best_epoch_overall() -> None:
    curves = {1.0: [0.2, 0.5, 0.4, 0.9], 2.0: [0.6, 0.7, 0.7], 3.0: [0.1, 0.1, 0.1]}
    trained: dict[float, int] = {}
    state = {}

    def train(lr, on_epoch_end):
        for epoch, value in enumerate(curves[lr]):
            state.update(lr=lr, epoch=epoch, value=value)
            trained[lr] = epoch + 1
            if on_epoch_end(epoch):
                return

    points, best = run_grid(SelectionSettings(lrs=(1.0, 2.0, 3.0), max_epochs=3, patience=1),
                            train, lambda: (state["value"], state["lr"]), lambda: dict(state))
    assert trained == {1.0: 3, 2.0: 3, 3.0: 2}  # 1.0 stops after its dip; 3.0 never improves
    assert [p.scores for p in points] == [[0.2, 0.5, 0.4], [0.6, 0.7, 0.7], [0.1, 0.1]]
    assert best == {"lr": 2.0, "epoch": 1, "value": 0.7}  # the 0.9 lay past max_epochs
    assert (points[1].best_epoch, points[1].best_score) == (2, 0.7)
    assert points[1].best_weight == 2.0  # each epoch keeps the prior weight behind its score


def test_choice_needs_a_strictly_better_adapter() -> None:
    assert choose(0.5, None, 0.6) == "adapter"
    assert choose(0.5, None, 0.5) == "base"  # a tie keeps what the user already has
    assert choose(0.5, 0.7, 0.6) == "previous"
    assert choose(0.5, 0.4, 0.45) == "base"
    assert choose(0.5, 0.55, 0.6) == "adapter"
    assert choose(1.0, None, None) == "base"  # nothing was trained: the base was perfect


def test_the_summary_says_what_is_used_with_the_numbers() -> None:
    report = SelectionReport("mae", False, 20, 5, -1.0, None, [GridPoint(1e-3, [-1.4, -1.2])],
                             chosen="base")
    text = report.summary()
    assert "base 1.000" in text and "best new adapter 1.200 (lr 0.001, 2 epochs)" in text
    assert "the base is used" in text
    assert json.loads(json.dumps(report.to_dict()))["best"] == {
        "lr": 1e-3, "epochs": 2, "score": -1.2}
    perfect = SelectionReport("accuracy", True, 20, 5, 1.0, None, [], chosen="base")
    assert "no adapter was trained" in perfect.summary() and perfect.to_dict()["best"] is None


def test_the_label_prior_moves_decisions_toward_the_users_habits() -> None:
    prior = LabelPrior.of(["no", "no", "no", "yes", "maybe-not-a-label"], ["yes", "no"])
    assert prior.log_probs["no"] > prior.log_probs["yes"]  # 4/6 vs 2/6 with add-one
    labels, scores = ("yes", "no"), [-1.0, -1.5]  # the model alone prefers "yes"
    assert prior.choose(labels, scores) == "yes"  # weight 0: the model decides
    assert prior.with_weight(2.0).choose(labels, scores) == "no"  # 2*log(2) > 0.5
    assert prior.with_weight(0.5).choose(labels, scores) == "yes"
    assert prior.with_weight(MAJORITY).choose(labels, [-0.1, -9.0]) == "no"
    tied = LabelPrior.of(["a", "b"], ["a", "b"], MAJORITY)
    assert tied.choose(("a", "b"), [-2.0, -1.0]) == "b"  # equal habits: the model breaks ties
    assert prior.with_weight(10.0).choose(("yes", "unseen"), [-5.0, 0.0]) == "yes"  # floor
    stored = json.loads(json.dumps(prior.with_weight(MAJORITY).to_dict()))
    assert LabelPrior.from_dict(stored) == prior.with_weight(MAJORITY)


def test_majority_weight_is_written_as_a_name_in_the_report() -> None:
    report = SelectionReport("accuracy", True, 20, 5, 0.8, None,
                             [GridPoint(1e-3, [0.6, 0.7], [0.0, 1.0])], chosen="base",
                             base_weight=MAJORITY)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["base_weight"] == "majority" and data["prior_weight"] == "majority"
    assert data["grid"][0]["weights"] == [0, 1.0]
    assert "answering your most frequent label" in report.summary()
    assert "base 0.800 as your most frequent label" in report.summary()


# ---- the real model -----------------------------------------------------------------------

_THINGS = ("kettle", "hotel room", "concert", "pizza", "film", "jacket", "phone", "waiter",
           "novel", "train trip", "lamp", "dinner", "chair", "play", "bike", "board game")
MOOD_REVIEWS = [
    (f"The {thing} was " + ("wonderful, I loved every minute of it." if happy else
                            "awful, I hated every minute of it."), happy)
    for i, thing in enumerate(_THINGS * 2) for happy in [(i % 2 == 0) != (i >= 16)]]
"""32 reviews, happy and unhappy in turn, each thing once of each mood."""


@pytest.mark.slow
def test_defaults_learn_a_user_the_base_cannot_know(base, tmp_path) -> None:
    """A custom task (TOML) whose two labels mean what only this user knows: "blue" for a
    happy review, "green" for an unhappy one. Default recipe and selection, no hand-set
    learning rate: the adapter must learn the rule, as half the items defeat any constant
    answer (the label prior's limit).

    Training runs in fp32 on every CPU, so the outcome does not hang on the CI machine's kind:
    with bf16 autocast (a CPU with AMX) the rule was learned by 2 of 4 seeds, in fp32 by 4 of 4.
    """
    from dataclasses import replace

    from oppu.shared.tasks import load_task_file

    task_file = tmp_path / "colours.toml"
    task_file.write_text('name = "colour_mood"\nkind = "classification"\n'
                         'instruction = "Which colour is this review?"\n'
                         'input_fields = ["review"]\nlabel_field = "colour"\n'
                         'labels = ["blue", "green"]\n')
    task = load_task_file(task_file, replace=True)
    history = [{"review": text, "colour": "blue" if happy else "green"}
               for text, happy in MOOD_REVIEWS]
    store = AdapterStore(tmp_path / "me")
    recipe = replace(DEFAULT_RECIPE, train=replace(DEFAULT_RECIPE.train, bf16="off"))
    outcome = personalize_user(base.model, base.tokenizer, task, history, recipe,
                               store=store, holdout=8, show_progress=False,
                               selection=SelectionSettings())
    selection = outcome.selection
    print(f"\n{selection.summary()} {outcome.seconds:.0f} s "
          f"(selection {selection.seconds:.0f} s); held out: base "
          f"{outcome.baseline.predictions}, adapter {outcome.personal.predictions}")
    assert selection.chosen == "adapter" and outcome.adapter_path is not None
    assert selection.best.best_score > selection.base_score  # the base with its best prior
    assert outcome.personal.metrics["accuracy"] >= outcome.baseline.metrics["accuracy"] + 0.25
    assert outcome.personal.metrics["accuracy"] > 0.5  # any constant answer: 4 of 8
    saved = store.metadata("colour_mood")
    assert saved["selection"]["best"]["lr"] == selection.best.lr
    assert saved["train"]["lr"] == selection.best.lr


@pytest.mark.slow
def test_a_user_without_signal_keeps_the_base_and_ask_answers_from_it(base, tmp_path) -> None:
    """Ratings that are exactly the base's own answers: no adapter can beat the base there."""
    from oppu.client.cli import app
    from oppu.shared.personal.evaluation import predict

    task = get_task("LaMP_3")
    texts = [f"The {p} arrived on {d}. It does what the box says." for p in
             ("kettle", "scarf", "lamp", "mug", "clock", "chair") for d in
             ("Monday", "Friday", "a rainy day", "time")]
    items = []
    for text in texts:
        query = task.query_from_item({"text": text, "score": "3"})[0]
        items.append({"text": text, "score": predict(base.model, base.tokenizer, task, query)})
    history = tmp_path / "history.jsonl"
    history.write_text("".join(json.dumps(item) + "\n" for item in items))
    data_dir = tmp_path / "me"
    runner = CliRunner()

    trained = runner.invoke(app, ["train", "--history", str(history), "--task", "LaMP_3",
                                  "--data-dir", str(data_dir), "--device", "cpu",
                                  "--batch-size", "8"])
    assert trained.exit_code == 0, trained.output
    said = " ".join(trained.output.split())  # rich wraps long lines at the terminal's width
    assert "no adapter beat the base model: the base is used" in said
    store = AdapterStore(data_dir)
    assert store.uses_base("LaMP_3") and not store.exists("LaMP_3")

    heldout = tmp_path / "heldout.jsonl"
    heldout.write_text("".join(json.dumps(item) + "\n" for item in items[-4:]))
    report = tmp_path / "evaluation.json"
    scored = runner.invoke(app, ["evaluate", "--history", str(heldout), "--train-history",
                                 str(history), "--task", "LaMP_3", "--data-dir", str(data_dir),
                                 "--device", "cpu", "--out", str(report)])
    assert scored.exit_code == 0, scored.output
    assert "`ask` answers with the base" in " ".join(scored.output.split())
    results = json.loads(report.read_text())["results"]
    assert set(results) == {"base", "your majority label"}  # no adapter was kept
    assert results["base"]["metrics"]["mae"] == 0.0  # its own answers are the golds here

    review = "The lamp arrived on Monday. It does what the box says."
    asked = runner.invoke(app, ["ask", "--task", "LaMP_3", "--data-dir", str(data_dir),
                                "--device", "cpu", review])
    assert asked.exit_code == 0, asked.output
    assert "answering with the base" in asked.output
    query = task.query_from_item({"text": review, "score": "3"})[0]
    assert asked.output.strip().splitlines()[-1] == predict(base.model, base.tokenizer, task,
                                                            query)
    many = tmp_path / "queries.txt"
    many.write_text(f"{review}\n\n{texts[0]}\n")  # blank lines are skipped
    batch = runner.invoke(app, ["ask", "--task", "LaMP_3", "--data-dir", str(data_dir),
                                "--device", "cpu", "--queries", str(many)])
    assert batch.exit_code == 0, batch.output
    assert batch.output.strip().splitlines()[-2:] == [asked.output.strip().splitlines()[-1],
                                                      items[0]["score"]]


@pytest.mark.slow
def test_a_user_the_model_cannot_read_still_gets_their_own_habit(base, tmp_path) -> None:
    """Every item is answered with the label the base never picks: no weight of training can
    be chosen on so few items, but the user's answer frequencies can, and ``ask`` uses them."""
    from oppu.client.cli import app
    from oppu.shared.personal.evaluation import predict
    from oppu.shared.tasks import load_task_file

    task_file = tmp_path / "habit.toml"
    task_file.write_text('name = "habit_test"\nkind = "classification"\n'
                         'instruction = "Is this film a comedy?"\ninput_fields = ["plot"]\n'
                         'label_field = "answer"\nlabels = ["comedy", "drama"]\n')
    task = load_task_file(task_file, replace=True)
    picked = {predict(base.model, base.tokenizer, task,
                      task.query_from_item({"plot": m, "answer": ""})[0]) for m in MOVIES}
    assert len(picked) == 1  # the base answers one label whatever the plot
    habit = ({"comedy", "drama"} - picked).pop()
    history = [{"plot": m, "answer": habit} for m in MOVIES]
    store = AdapterStore(tmp_path / "me")
    outcome = personalize_user(base.model, base.tokenizer, task, history, DEFAULT_RECIPE,
                               store=store, holdout=8, show_progress=False,
                               selection=SelectionSettings(lrs=(1e-3,), max_epochs=1))
    selection = outcome.selection
    assert selection.chosen == "base" and selection.grid == []  # the prior alone is perfect
    assert selection.prior_weight > 0 and "answer frequencies" in selection.summary() + (
        "most frequent")
    assert outcome.baseline.metrics["accuracy"] == 0.0  # the base alone: always wrong
    assert outcome.personal.metrics["accuracy"] == 1.0  # as used: the user's habit
    asked = CliRunner().invoke(app, ["--task-file", str(task_file), "ask", "--task",
                                     "habit_test", "--data-dir", str(tmp_path / "me"),
                                     "--device", "cpu", "A quiet drama about two sisters."])
    assert asked.exit_code == 0, asked.output
    assert asked.output.strip().splitlines()[-1] == habit


def test_real_user_summary_pools_users_and_tests_pairs_exactly(tmp_path) -> None:
    from oppu.simulations.real_users import markdown, mcnemar, plot, summarize

    records = [
        {"user": "a", "golds": ["x", "x", "y", "y"], "base": ["y", "y", "y", "y"],
         "adapter": ["x", "x", "y", "x"], "majority_label": "x", "chosen": "adapter",
         "seconds_total": 1.0},
        {"user": "b", "golds": ["y", "y"], "base": ["y", "y"], "adapter": ["y", "y"],
         "majority_label": "y", "chosen": "base", "seconds_total": 1.0},
    ]
    summary = summarize(records)
    assert summary["queries"] == 6
    assert summary["pooled"] == {"base": 4 / 6, "adapter": 5 / 6, "majority": 4 / 6}
    assert (summary["users_adapter_beats_base"], summary["users_adapter_below_base"]) == (1, 0)
    # adapter right where the base is wrong on 2 items, wrong where it is right on 1
    assert summary["adapter_vs_base"] == mcnemar([True, True, True, False, True, True],
                                                 [False, False, True, True, True, True])
    assert summary["adapter_vs_base"]["a_only"] == 2 and summary["adapter_vs_base"]["b_only"] == 1
    assert summary["adapter_vs_base"]["p"] == 1.0  # 2 vs 1 discordant pairs: exact binomial
    assert "| **pooled (6 items)** | | 0.667 | 0.833 | 0.667 |" in markdown(summary)
    assert plot(summary, tmp_path / "users.png").read_bytes().startswith(b"\x89PNG")
