"""A user's history JSONL: every problem with file, line and field; time-ordered splits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oppu.shared.data import check_history, read_history, split_history, validate_history
from oppu.shared.data.items import MAX_ITEM_WORDS
from oppu.shared.errors import InputError, UnknownTaskError

FIXTURES = Path(__file__).parent / "fixtures" / "history"


def test_good_history_keeps_extras_and_skips_blank_lines() -> None:
    items = read_history(FIXTURES / "lamp2n_good.jsonl", "LaMP_2N")
    assert [item["id"] for item in items] == [1, "2", 3]
    assert items[2]["source"] == "kept"
    assert validate_history(FIXTURES / "lamp2n_good.jsonl", "2N") == []


def test_bad_history_reports_every_problem() -> None:
    path = FIXTURES / "lamp2n_bad.jsonl"
    problems = validate_history(path, "LaMP_2N")
    assert [(p.line, p.field) for p in problems] == [
        (2, "category"),
        (3, None),
        (4, None),
        (5, "text"),
        (7, "timestamp"),
    ]
    assert "missing" in problems[0].message
    assert "not valid JSON" in problems[1].message
    assert "JSON object" in problems[2].message
    assert "must be a string" in problems[3].message
    assert all(p.file == str(path) for p in problems)
    assert f"{path}:line 5 (field 'text')" in str(problems[3])

    report = check_history(path, "LaMP_2N")
    assert [(w.line, w.field) for w in report.warnings] == [(8, "category")]
    assert [item["id"] for item in report.items] == [1, 8]
    assert report.lines == 8

    with pytest.raises(InputError) as info:
        read_history(path, "LaMP_2N")
    assert len(info.value.problems) == 5


def test_rating_scores() -> None:
    items = read_history(FIXTURES / "lamp3_good.jsonl", "LaMP_3")
    assert [item["score"] for item in items] == [5, "1", " 3 "]
    problems = validate_history(FIXTURES / "lamp3_bad.jsonl", "LaMP_3")
    assert [(p.line, p.field) for p in problems] == [(i, "score") for i in (1, 2, 3, 4)]
    assert "from 1 to 5" in problems[0].message


def test_empty_and_missing_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n")
    [problem] = validate_history(empty, "LaMP_2N")
    assert "empty" in problem.message and "text, title, category" in problem.message
    [problem] = validate_history(tmp_path / "absent.jsonl", "LaMP_2N")
    assert "not found" in problem.message


def test_unknown_task(tmp_path: Path) -> None:
    with pytest.raises(UnknownTaskError):
        validate_history(FIXTURES / "lamp2n_good.jsonl", "LaMP_99")


def test_blank_field_and_bad_utf8(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    good = json.dumps({"text": "ok", "title": "ok", "category": "sports"}).encode()
    blank = json.dumps({"text": "  ", "title": "ok", "category": "sports"}).encode()
    path.write_bytes(good + b"\n" + blank + b"\n" + b'{"text": "\xff"}\n')
    problems = validate_history(path, "LaMP_2N")
    assert [(p.line, p.field) for p in problems] == [(2, "text"), (3, None)]
    assert "UTF-8" in problems[1].message


def test_long_item_warns(tmp_path: Path) -> None:
    path = tmp_path / "long.jsonl"
    text = " ".join(["word"] * (MAX_ITEM_WORDS + 1))
    path.write_text(json.dumps({"text": text}) + "\n")
    report = check_history(path, "LaMP_7")
    assert report.ok and len(report.items) == 1
    [warning] = report.warnings
    assert warning.line == 1 and "truncated" in warning.message


def test_duplicate_ids_warn(tmp_path: Path) -> None:
    path = tmp_path / "dup.jsonl"
    path.write_text('{"id": 1, "text": "a"}\n{"id": "1", "text": "b"}\n')
    report = check_history(path, "LaMP_7")
    assert report.ok
    assert [(w.line, w.field) for w in report.warnings] == [(2, "id")]


def _items(stamps):
    return [{"text": str(i), "timestamp": s} for i, s in enumerate(stamps)]


def test_split_history_by_time() -> None:
    # ISO strings and epoch seconds mix: 1 (1970) < 2 (2023-01) < 3 (2023-11) < 0 (2024-05).
    items = _items(["2024-05-01T00:00:00Z", 0, "2023-01-01", 1.7e9])
    train, held = split_history(items, holdout=0.5)
    assert [i["text"] for i in train] == ["1", "2"]
    assert [i["text"] for i in held] == ["3", "0"]


def test_split_history_file_order_without_all_timestamps() -> None:
    items = [{"text": "a", "timestamp": 5}, {"text": "b"}, {"text": "c", "timestamp": 1}]
    train, held = split_history(items, holdout=1)
    assert [i["text"] for i in train] == ["a", "b"] and [i["text"] for i in held] == ["c"]


@pytest.mark.parametrize(
    ("n", "holdout", "expected"),
    [(10, 0.2, 2), (3, 0.2, 1), (1, 0.2, 0), (5, 2, 2), (2, 5, 1), (4, 0, 0), (0, 0.5, 0)],
)
def test_holdout_sizes(n, holdout, expected) -> None:
    train, held = split_history([{"text": str(i)} for i in range(n)], holdout=holdout)
    assert len(held) == expected and len(train) == n - expected


@pytest.mark.parametrize("holdout", [1.0, -0.1, -1, True, "0.2"])
def test_bad_holdout(holdout) -> None:
    with pytest.raises(ValueError):
        split_history([{"text": "a"}, {"text": "b"}], holdout=holdout)
