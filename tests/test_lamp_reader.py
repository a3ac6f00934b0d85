"""LaMP directory reader and test/base user selection, on a tiny synthetic 2N fixture."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from oppu.shared.data import base_users, load_lamp, select_test_users
from oppu.shared.data.split import user_activity
from oppu.shared.errors import InputError, UnknownTaskError

FIXTURE = Path(__file__).parent / "fixtures" / "lamp2n_tiny"


@pytest.fixture
def lamp_dir(tmp_path: Path) -> Path:
    """A writable copy of the fixture, for tests that break it."""
    target = tmp_path / "lamp"
    shutil.copytree(FIXTURE, target)
    return target


def _edit_questions(directory: Path, edit) -> None:
    path = directory / "questions.json"
    questions = json.loads(path.read_text())
    edit(questions)
    path.write_text(json.dumps(questions, indent=1))


def test_loads_fixture() -> None:
    dataset = load_lamp(FIXTURE)
    assert dataset.task == "LaMP_2N"
    assert [q.id for q in dataset.queries] == ["100", "101", "200", "201", "300"]
    assert dataset.has_golds and dataset.queries[3].gold == "politics"
    users = dataset.users()
    assert list(users) == ["alice", "bob", "carol"]
    assert [len(qs) for qs in users.values()] == [2, 2, 1]
    assert dataset.queries[1].profile[2]["category"] == "business"
    assert dataset.split is None


def test_task_alias_accepted_and_mismatch_rejected() -> None:
    assert load_lamp(FIXTURE, task="2N").task == "LaMP_2N"
    with pytest.raises(InputError, match=r"outputs\.json is for task"):
        load_lamp(FIXTURE, task="LaMP_3")


def test_unknown_task(lamp_dir: Path) -> None:
    (lamp_dir / "outputs.json").unlink()
    with pytest.raises(UnknownTaskError):
        load_lamp(lamp_dir, task="LaMP_99")


def test_without_outputs_needs_task_and_has_no_golds(lamp_dir: Path) -> None:
    (lamp_dir / "outputs.json").unlink()
    with pytest.raises(InputError, match="cannot tell the task"):
        load_lamp(lamp_dir)
    dataset = load_lamp(lamp_dir, task="LaMP_2N")
    assert not dataset.has_golds
    assert all(q.gold is None for q in dataset.queries)


def test_without_user_ids_each_question_is_a_user(lamp_dir: Path) -> None:
    _edit_questions(lamp_dir, lambda qs: [q.pop("user_id") for q in qs])
    dataset = load_lamp(lamp_dir)
    assert list(dataset.users()) == ["100", "101", "200", "201", "300"]
    assert not dataset.has_user_ids


def test_users_json_gives_owners(lamp_dir: Path) -> None:
    _edit_questions(lamp_dir, lambda qs: [q.pop("user_id") for q in qs])
    users = {"u1": ["100", "101", "300"], "u2": ["200", "201"]}
    (lamp_dir / "users.json").write_text(json.dumps(users))
    assert {u: len(qs) for u, qs in load_lamp(lamp_dir).users().items()} == {"u1": 3, "u2": 2}


def test_profile_item_problems_name_file_question_and_field(lamp_dir: Path) -> None:
    def edit(questions):
        del questions[1]["profile"][2]["category"]
        questions[4]["profile"][0]["title"] = ["not", "a", "string"]

    _edit_questions(lamp_dir, edit)
    with pytest.raises(InputError) as info:
        load_lamp(lamp_dir)
    problems = info.value.problems
    assert len(problems) == 2
    assert problems[0].field == "category" and "'101'" in problems[0].message
    assert "profile item #2" in problems[0].message and "missing" in problems[0].message
    assert problems[1].field == "title" and "'300'" in problems[1].message
    assert all(p.file.endswith("questions.json") for p in problems)


def test_malformed_json_names_line(lamp_dir: Path) -> None:
    path = lamp_dir / "outputs.json"
    lines = path.read_text().splitlines()
    lines[3] = lines[3] + ","  # a trailing comma inside an object
    path.write_text("\n".join(lines))
    with pytest.raises(InputError) as info:
        load_lamp(lamp_dir)
    problem = info.value.problems[0]
    assert problem.file.endswith("outputs.json") and problem.line is not None
    assert "not valid JSON" in str(info.value)


def test_missing_and_unknown_golds(lamp_dir: Path) -> None:
    path = lamp_dir / "outputs.json"
    outputs = json.loads(path.read_text())
    outputs["golds"] = [*outputs["golds"][1:], {"id": "999", "output": "sports"}]
    path.write_text(json.dumps(outputs))
    with pytest.raises(InputError) as info:
        load_lamp(lamp_dir)
    text = str(info.value)
    assert "no gold output for question '100'" in text
    assert "'999'" in text


def test_not_a_list_and_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a directory"):
        load_lamp(tmp_path / "nope")
    (tmp_path / "questions.json").write_text('{"id": 1}')
    with pytest.raises(InputError, match="expected a list of questions"):
        load_lamp(tmp_path, task="LaMP_2N")


def test_test_users_by_activity() -> None:
    dataset = load_lamp(FIXTURE)
    # alice: 3 distinct items + 2 queries = 5; bob: 2 + 2 = 4; carol: 1 + 1 = 2.
    assert user_activity(dataset) == {"alice": 5, "bob": 4, "carol": 2}
    assert select_test_users(dataset, n=2) == ["alice", "bob"]
    assert base_users(dataset, select_test_users(dataset, n=2)) == ["carol"]
    assert select_test_users(dataset, n=10) == ["alice", "bob", "carol"]


def test_test_user_ties_broken_by_id(lamp_dir: Path) -> None:
    _edit_questions(lamp_dir, lambda qs: qs[0].update(user_id="zed") or qs[1].update(user_id="amy"))
    # zed: 2 items + 1 query = 3; amy: 3 + 1 = 4; bob: 4; carol: 2.
    assert select_test_users(load_lamp(lamp_dir), n=3) == ["amy", "bob", "zed"]


def test_split_json_wins(lamp_dir: Path) -> None:
    split = {"test_users": ["carol"], "base_users": ["alice", "bob"]}
    (lamp_dir / "split.json").write_text(json.dumps(split))
    dataset = load_lamp(lamp_dir)
    assert dataset.split is not None and dataset.split.test_users == ("carol",)
    assert select_test_users(dataset) == ["carol"]
    assert base_users(dataset) == ["alice", "bob"]
