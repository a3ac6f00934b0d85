"""Oversized input is refused or streamed with bounded memory, never loaded whole.

A 1 GiB history line and a 10^6-item history are built as a sparse file and a ~25 MB file,
so the suite writes no gigabyte to disk; peak Python memory is measured with ``tracemalloc``
(which sees every bytes buffer a read allocates) and must stay far below the input's size.
"""

from __future__ import annotations

import json
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from oppu.shared.data import check_history, load_lamp, read_history
from oppu.shared.data.history import MAX_HISTORY_LINES, MAX_LINE_BYTES, MAX_PROBLEMS, ReadLimits
from oppu.shared.errors import InputError
from oppu.shared.tasks.custom import MAX_TASK_FILE_BYTES, read_task_file

GIB = 1024**3
MIB = 1024**2
MILLION = 1_000_000


def _peak(func: Callable[[], Any]) -> tuple[Any, int]:
    """(what ``func`` returned or raised, peak bytes Python allocated while it ran)."""
    tracemalloc.start()
    try:
        try:
            result: Any = func()
        except Exception as exc:  # the caller checks which
            result = exc
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _sparse(path: Path, head: bytes, size: int, tail: bytes) -> None:
    """``head``, NUL bytes up to ``size``, then ``tail``; the NULs take no disk space."""
    with path.open("wb") as fh:
        fh.write(head)
        fh.seek(size)
        fh.write(tail)


def test_gigabyte_line_is_refused_with_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    _sparse(path, b'{"text": "first"}\n{"text": "', GIB, b'"}\n')
    report, peak = _peak(lambda: check_history(path, "LaMP_7"))
    [problem] = report.problems
    assert problem.line == 2 and f"longer than {MAX_LINE_BYTES // MIB} MiB" in problem.message
    assert str(problem).startswith(f"{path}:line 2: line longer than 16 MiB")
    assert [item["text"] for item in report.items] == ["first"]
    assert peak < 64 * MIB, f"peak {peak / MIB:.0f} MiB for a 1 GiB line"
    with pytest.raises(InputError, match="line 2: line longer than 16 MiB"):
        read_history(path, "LaMP_7")


def test_long_line_amid_newer_lines_is_reported_not_counted(tmp_path: Path) -> None:
    """A line over the line limit is reported, and does not use up the byte budget that
    decides how many of the newest lines are read."""
    path = tmp_path / "history.jsonl"
    _sparse(path, b'{"text": "old"}\n{"text": "', 64 * MIB, b'"}\n{"text": "new"}\n')
    limits = ReadLimits(max_line_bytes=MIB, max_bytes=2 * MIB)
    report, peak = _peak(lambda: check_history(path, "LaMP_7", limits=limits))
    assert [p.line for p in report.problems] == [2] and not report.warnings
    assert [item["text"] for item in report.items] == ["old", "new"]
    assert peak < 8 * MIB


def test_line_limit_is_exact_and_overridable(tmp_path: Path) -> None:
    limits = ReadLimits(max_line_bytes=40)
    fits = json.dumps({"text": "x" * 28}).encode()
    over = json.dumps({"text": "x" * 29}).encode()
    assert (len(fits), len(over)) == (40, 41)
    path = tmp_path / "h.jsonl"
    path.write_bytes(fits + b"\r\n" + over + b"\n" + fits + b"\n" + over + b"\r\n" + fits)
    report = check_history(path, "LaMP_7", limits=limits)
    assert [p.line for p in report.problems] == [2, 4]  # the line ending does not count
    assert all("longer than 40 bytes" in p.message for p in report.problems)
    assert len(report.items) == 3  # lines 1, 3 and 5 (no final newline) fit exactly


@pytest.fixture(scope="module")
def million_lines(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A history of 10^6 small items (about 25 MB), ids 0..999999 oldest first."""
    path = tmp_path_factory.mktemp("big") / "history.jsonl"
    with path.open("wb") as fh:
        for start in range(0, MILLION, 100_000):
            fh.write(b"".join(b'{"id": %d, "text": "w"}\n' % i
                              for i in range(start, start + 100_000)))
    return path


def test_million_item_history_keeps_the_newest_quickly(million_lines: Path) -> None:
    """A heavy user's 10^6 items are valid: oppu reads the newest 100,000 (the end of the
    file), says so, and is done in seconds, not minutes."""
    started = time.perf_counter()
    report = check_history(million_lines, "LaMP_7")
    seconds = time.perf_counter() - started
    assert report.ok and report.lines == MILLION
    assert len(report.items) == MAX_HISTORY_LINES
    assert report.items[0]["id"] == MILLION - MAX_HISTORY_LINES
    assert report.items[-1]["id"] == MILLION - 1
    [warning] = report.warnings
    assert "1,000,000 lines" in warning.message and "newest 100,000" in warning.message
    assert "lines 1-900,000 were skipped" in warning.message
    assert seconds < 30, f"{seconds:.1f} s"  # about 1-2 s; the guard is for the CI's CPUs


def test_million_item_history_memory_follows_the_limit(million_lines: Path) -> None:
    size = million_lines.stat().st_size
    report, peak = _peak(lambda: check_history(million_lines, "LaMP_7",
                                               limits=ReadLimits(max_lines=1_000)))
    assert [item["id"] for item in report.items] == list(range(MILLION - 1_000, MILLION))
    assert peak < size / 5, f"peak {peak / MIB:.1f} MiB for a {size / MIB:.0f} MiB file"


def test_byte_budget_keeps_the_newest_lines(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    line = json.dumps({"text": "y" * 88}).encode() + b"\n"  # 101 bytes
    path.write_bytes(line * 50)
    report = check_history(path, "LaMP_7", limits=ReadLimits(max_bytes=1_000))
    assert len(report.items) == 9 and report.lines == 50  # 9 * 101 <= 1000 < 10 * 101
    assert "lines 1-41 were skipped" in report.warnings[0].message


def test_problems_are_capped(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    path.write_bytes(b"not json\n" * 10_000)
    report = check_history(path, "LaMP_7")
    assert len(report.problems) == MAX_PROBLEMS + 1
    assert "more problems not listed" in report.problems[-1].message
    assert [p.line for p in report.problems[:3]] == [1, 2, 3]


def test_oversized_lamp_file_is_refused_unread(tmp_path: Path) -> None:
    _sparse(tmp_path / "questions.json", b"[", 64 * MIB, b"]")
    error, peak = _peak(lambda: load_lamp(tmp_path, "LaMP_2N", max_file_bytes=MIB))
    assert isinstance(error, InputError), error
    [problem] = error.problems
    assert problem.file.endswith("questions.json") and "over the 1,048,576-byte" in str(error)
    assert peak < MIB


def test_oversized_task_file_is_refused_with_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "task.toml"
    _sparse(path, b'name = "', GIB, b'"\n')
    error, peak = _peak(lambda: read_task_file(path))
    assert isinstance(error, InputError) and "larger than" in str(error), error
    assert error.problems[0].file == str(path)
    assert peak < 4 * MAX_TASK_FILE_BYTES
