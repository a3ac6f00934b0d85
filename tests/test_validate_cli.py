"""``oppu-client validate``: exit codes and located problems, never a traceback."""

from __future__ import annotations

from pathlib import Path

import typer
from typer.testing import CliRunner

from oppu.client.cli import app as client_app
from oppu.client.cli.validate import validate

FIXTURES = Path(__file__).parent / "fixtures" / "history"
runner = CliRunner()


def _app() -> typer.Typer:
    """An app with only this command, still invoked as a subcommand like the real one."""
    app = typer.Typer()
    app.callback()(lambda: None)
    app.command()(validate)
    return app


def _run(*args: str):
    return runner.invoke(_app(), ["validate", *args])


def test_malformed_history_fails_with_lines() -> None:
    path = FIXTURES / "lamp2n_bad.jsonl"
    result = _run("--history", str(path), "--task", "LaMP_2N")
    assert result.exit_code == 1, result.output
    assert f"{path}:line 2 (field 'category')" in result.output
    assert f"{path}:line 3: not valid JSON" in result.output
    assert "line 8" in result.output  # the off-label warning
    assert "Traceback" not in result.output


def test_valid_history_passes() -> None:
    result = _run("--history", str(FIXTURES / "lamp2n_good.jsonl"), "--task", "2N")
    assert result.exit_code == 0, result.output
    assert "Read 3 valid item(s)" in result.output and "OK" in result.output


def test_unknown_task_and_missing_file_exit_2(tmp_path: Path) -> None:
    result = _run("--history", str(FIXTURES / "lamp2n_good.jsonl"), "--task", "LaMP_99")
    assert result.exit_code == 2 and "LaMP_99" in result.output
    assert isinstance(result.exception, SystemExit)
    result = _run("--history", str(tmp_path / "absent.jsonl"), "--task", "LaMP_2N")
    assert result.exit_code == 2 and "No such file" in result.output


def test_registered_on_client_app() -> None:
    names = [c.name or c.callback.__name__ for c in client_app.registered_commands]
    assert "validate" in names
