"""Custom tasks a person writes in a minute: the short form, ``task init`` drafting it from a
history, and ``validate`` showing the prompt an item renders to."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import DYSTOPIA_MOVIES as MOVIES
from typer.testing import CliRunner

from oppu.client.cli import app
from oppu.shared.data import read_history
from oppu.shared.errors import InputError
from oppu.shared.personal.adapter_meta import history_labels
from oppu.shared.tasks import TaskKind, load_task_file

SHORT = """
name = "{name}"
kind = "classification"
instruction = "Would this user watch this film?"
input_fields = ["title", "plot"]
label_field = "verdict"
"""


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _history(path: Path, rows: list[dict]) -> Path:
    return _write(path, "".join(json.dumps(row) + "\n" for row in rows))


def _films(n: int = 24) -> list[dict]:
    return [{"id": str(i), "title": f"Film {i}", "plot": MOVIES[i % len(MOVIES)],
             "verdict": "watch" if i % 4 else "skip"} for i in range(n)]


def test_short_form_derives_templates_retrieval_and_labels_from_the_history(tmp_path):
    spec = load_task_file(_write(tmp_path / "t.toml", SHORT.format(name="short_films")))
    assert spec.kind == TaskKind.CLASSIFICATION and spec.item_fields == (
        "title", "plot", "verdict")
    assert spec.target_field == "verdict" and spec.labels == ()
    items = read_history(_history(tmp_path / "h.jsonl", _films()), spec)
    labels = history_labels(spec, items)  # no labels declared: the history's own
    assert labels == ("skip", "watch")
    query, answer = spec.query_from_item(items[1], labels=labels)
    assert answer == "watch"
    assert query.splitlines() == [
        "Would this user watch this film? Answer with one of the labels: [skip, watch]",
        "title: Film 1", f"plot: {MOVIES[1]}"]
    assert spec.label_set(query) == labels
    assert spec.retrieval_query(query) == f"Film 1\nplot: {MOVIES[1]}"  # the inputs only
    assert "verdict" not in spec.item_text(items[1])  # BM25 never searches the answer
    assert spec.context_template == "title: {title} plot: {plot} verdict: {verdict}"


def test_a_full_key_beside_the_short_form_overrides_what_is_derived(tmp_path):
    text = SHORT.format(name="short_override") + 'item_text_template = "{plot}"\n'
    text += 'labels = ["watch", "skip"]\n'
    spec = load_task_file(_write(tmp_path / "t.toml", text))
    assert spec.item_text_template == "{plot}" and spec.labels == ("watch", "skip")


@pytest.mark.parametrize(("edit", "fields"), [
    (lambda t: t.replace('instruction = "Would this user watch this film?"\n', ""),
     {"instruction"}),
    (lambda t: t.replace('label_field = "verdict"', 'label_field = "plot"'), {"label_field"}),
    (lambda t: t.replace('input_fields = ["title", "plot"]', "input_fields = []"),
     {"input_fields"}),
    (lambda t: t + 'item_fields = ["title"]\noutput_field = "x"\n',
     {"item_fields", "output_field"}),
    (lambda t: t + 'labels = ["yes, please", "no"]\n', {"labels"}),
])
def test_short_form_mistakes_are_named_per_field(tmp_path, edit, fields):
    path = _write(tmp_path / "t.toml", edit(SHORT.format(name="short_bad")))
    with pytest.raises(InputError) as info:
        load_task_file(path)
    assert {p.field for p in info.value.problems} == fields
    assert all(p.file == str(path) for p in info.value.problems)


def test_task_init_drafts_a_file_that_validates_and_shows_its_prompt(tmp_path):
    history = _history(tmp_path / "films.jsonl", _films())
    runner = CliRunner()
    out = tmp_path / "films.toml"
    drafted = runner.invoke(app, ["task", "init", "--history", str(history), "--out", str(out)])
    assert drafted.exit_code == 0, drafted.output
    text = out.read_text()
    assert 'name = "films"' in text and 'kind = "classification"' in text
    assert 'input_fields = ["title", "plot"]' in text  # id is bookkeeping, not an input
    assert 'label_field = "verdict"' in text
    assert 'labels = ["watch", "skip"]' in text  # most frequent first
    again = runner.invoke(app, ["task", "init", "--history", str(history), "--out", str(out)])
    assert again.exit_code == 2 and "--force" in again.output  # never overwrites silently

    checked = runner.invoke(app, ["--task-file", str(out), "validate", "--history",
                                  str(history), "--task", "films"])
    assert checked.exit_code == 0, checked.output
    assert "as the model sees it" in checked.output
    assert "Which verdict does this user give this title and plot? Answer with one of the " \
           "labels: [watch, skip]" in checked.output
    assert "title: Film 23" in checked.output and "Answer it learns: watch" in checked.output


def test_task_init_guesses_rating_and_generation_tasks(tmp_path):
    runner = CliRunner()
    ratings = _history(tmp_path / "reviews.jsonl", [
        {"review": MOVIES[i], "stars": str(1 + i % 5)} for i in range(20)])
    made = runner.invoke(app, ["task", "init", "--history", str(ratings), "--out",
                               str(tmp_path / "r.toml")])
    assert made.exit_code == 0, made.output
    rating = load_task_file(tmp_path / "r.toml", replace=True)
    assert rating.kind == TaskKind.RATING and rating.labels == ("1", "2", "3", "4", "5")

    titles = _history(tmp_path / "headlines.jsonl", [
        {"article": text, "headline": text.split(",")[0]} for text in MOVIES[:20]])
    made = runner.invoke(app, ["task", "init", "--history", str(titles), "--out",
                               str(tmp_path / "g.toml")])
    assert made.exit_code == 0, made.output
    generation = load_task_file(tmp_path / "g.toml", replace=True)
    assert generation.kind == TaskKind.GENERATION and generation.target_field == "headline"


def test_task_init_lists_every_problem_instead_of_a_wrong_draft(tmp_path):
    rows = [json.dumps(row) for row in _films(12)]
    rows[3] = '{"title": "Film 3", "plot": "no verdict here"}'
    rows[5] = '{"title": "Film 5", "plot": "x", "verdict": "watch", "mood": "happy"}'
    rows[7] = "{not json"
    bad = _write(tmp_path / "bad.jsonl", "\n".join(rows) + "\n")
    runner = CliRunner()
    result = runner.invoke(app, ["task", "init", "--history", str(bad)])
    assert result.exit_code == 2
    said = " ".join(result.output.split())
    assert "line 8" in said and "not valid JSON" in said  # malformed lines first
    rows[7] = json.dumps(_films(12)[7])
    _write(bad, "\n".join(rows) + "\n")
    result = runner.invoke(app, ["task", "init", "--history", str(bad)])
    said = " ".join(result.output.split())
    assert result.exit_code == 2
    assert "line 4" in said and "verdict" in said and "missing" in said
    assert "line 6" in said and "mood" in said
    assert not (tmp_path / "bad.toml").exists() and not Path("bad.toml").exists()

    few = _history(tmp_path / "few.jsonl", _films(4))
    result = runner.invoke(app, ["task", "init", "--history", str(few)])
    assert result.exit_code == 2 and "only 4 item(s)" in " ".join(result.output.split())
    same = _history(tmp_path / "same.jsonl", [{"plot": m, "verdict": "watch"}
                                              for m in MOVIES[:12]])
    result = runner.invoke(app, ["task", "init", "--history", str(same), "--answer-field",
                                 "verdict"])
    assert result.exit_code == 2 and "two or more different answers" in " ".join(
        result.output.split())


@pytest.mark.slow
def test_init_validate_train_evaluate_on_a_fresh_history(tmp_path, monkeypatch):
    """The README's path for a new user with their own task, end to end on the real model."""
    from conftest import TEST_HOME

    monkeypatch.setenv("OPPU_HOME", str(TEST_HOME))  # the converted embedded model
    films = _films(24)
    history = _history(tmp_path / "mine.jsonl", films[:20])
    heldout = _history(tmp_path / "heldout.jsonl", films[20:])
    task_file = tmp_path / "mine.toml"
    runner = CliRunner()
    steps = [
        ["task", "init", "--history", str(history), "--out", str(task_file),
         "--instruction", "Would this user watch this film?"],
        ["--task-file", str(task_file), "validate", "--history", str(history), "--task", "mine"],
        ["--task-file", str(task_file), "train", "--history", str(history), "--task", "mine",
         "--data-dir", str(tmp_path / "me"), "--device", "cpu"],
        ["--task-file", str(task_file), "evaluate", "--history", str(heldout),
         "--train-history", str(history), "--task", "mine", "--data-dir", str(tmp_path / "me"),
         "--device", "cpu", "--out", str(tmp_path / "scores.json")],
    ]
    for args in steps:
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.output)
    said = " ".join(result.output.split())
    assert "4 held-out items" in said
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["queries"] == 4 and {"base", "your majority label"} <= set(scores["results"])
    assert scores["results"]["your majority label"]["predictions"] == ["watch"] * 4
