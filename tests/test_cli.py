"""The two console scripts as a user meets them: help, bad commands, bad input, no tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
FIXTURES = Path(__file__).parent / "fixtures"


def run(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OPPU_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.mark.parametrize("script, commands", [
    ("oppu-client", ["train", "ask", "evaluate", "validate", "join", "keygen"]),
    ("oppu-coordinator", ["adapt", "demo", "start", "enroll", "simulate"]),
])
def test_help_lists_commands(script, commands, tmp_path):
    result = run(script, "--help", home=tmp_path)
    assert result.returncode == 0, result.stderr
    for command in commands:
        assert command in result.stdout


@pytest.mark.parametrize("script", ["oppu-client", "oppu-coordinator"])
def test_unknown_command_is_a_clear_error(script, tmp_path):
    result = run(script, "frobnicate", home=tmp_path)
    assert result.returncode == 2
    assert "No such command" in result.stderr
    assert "Traceback" not in result.stderr


def test_validate_malformed_history_names_the_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "title": "t", "category": "politics"}\n{"text": oops}\n')
    result = run("oppu-client", "validate", "--history", str(bad), "--task", "LaMP_2N",
                 home=tmp_path)
    assert result.returncode == 1
    assert "line 2" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_train_on_empty_history_fails_cleanly(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    result = run("oppu-client", "train", "--history", str(empty), "--task", "LaMP_2N",
                 home=tmp_path)
    assert result.returncode == 2
    assert "empty" in result.stderr.lower()
    assert "Traceback" not in result.stderr


def test_unknown_task_lists_known_tasks(tmp_path):
    result = run("oppu-client", "train", "--history", str(FIXTURES / "history" /
                 "lamp2n_good.jsonl"), "--task", "LaMP_99", home=tmp_path)
    assert result.returncode == 2
    assert "LaMP_2N" in result.stderr
    assert "Traceback" not in result.stderr


def test_ask_without_adapter_says_how_to_train(tmp_path):
    result = run("oppu-client", "ask", "--task", "LaMP_2N", "some article", home=tmp_path)
    assert result.returncode == 2
    assert "oppu-client train" in result.stderr
    assert "Traceback" not in result.stderr


def test_custom_task_file_registers_a_task(tmp_path):
    task_file = Path(__file__).parent.parent / "shared" / "sample" / "custom_task_example.toml"
    history = tmp_path / "recipes.jsonl"
    history.write_text('{"title": "Pad thai", "ingredients": "rice noodles", "cuisine": "thai"}\n')
    result = run("oppu-client", "--task-file", str(task_file), "validate", "--history",
                 str(history), "--task", "recipe_cuisine", home=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 valid item" in result.stdout


def test_join_shows_each_round_the_client_finished_once(tmp_path, capsys):
    """``join`` prints the user's own results of every round it finished, from the record
    the round wrote locally, and each only once."""
    import json

    from oppu.client.cli.join import show_new_rounds

    records = tmp_path / "federation"
    records.mkdir()
    (records / "run-7-round-1.json").write_text(json.dumps({
        "round": 1, "run_id": "7", "metrics": {"accuracy": 0.5, "f1": 0.25, "count": 2.0},
        "evaluated": 2, "trained_examples": {"oppu-k0": 4}, "continued": False}))
    shown = show_new_rounds(records, set())
    (records / "run-8-round-2.json").write_text(json.dumps({
        "round": 2, "run_id": "8", "metrics": {"base-k0": {"accuracy": 0.0},
                                               "oppu-k0": {"accuracy": 1.0}},
        "evaluated": 2, "trained_examples": {"oppu-k0": 2}, "continued": True}))
    shown |= show_new_rounds(records, shown)
    assert show_new_rounds(records, shown) == set()
    captured = capsys.readouterr()
    out = " ".join((captured.out + captured.err).split())
    assert "Round 1 done (run 7): accuracy 0.500, f1 0.250 on your 2 newest items; trained " \
           "on 4 example(s)." in out
    assert "Round 2 done (run 8): base-k0: accuracy 0.000; oppu-k0: accuracy 1.000" in out
    assert "continuing your adapter" in out and out.count("Round 1 done") == 1
