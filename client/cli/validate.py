"""``oppu-client validate``: check a history file before spending time on training."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from oppu.shared.data.history import check_history
from oppu.shared.errors import OppuError, Problem

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2  # unknown task or no such file: nothing could be checked

MAX_SHOWN = 50
"""Problems (and warnings) listed before summarizing the rest as a count."""


def _show(console: Console, title: str, style: str, problems: list[Problem]) -> None:
    console.print(f"[{style}]{title}[/{style}] ({len(problems)})")
    for problem in problems[:MAX_SHOWN]:
        console.print(f"  {problem}", markup=False, highlight=False)
    if len(problems) > MAX_SHOWN:
        console.print(f"  ... and {len(problems) - MAX_SHOWN} more", markup=False)


def validate(
    history: Annotated[
        Path,
        typer.Option(
            "--history",
            help="Your history file: one JSON object per line with the task's fields.",
        ),
    ],
    task: Annotated[str, typer.Option("--task", help="Task name, e.g. LaMP_2N, LaMP-3 or 7.")],
) -> None:
    """Check a history file and list every problem (file, line, field) to fix."""
    console = Console(soft_wrap=True, highlight=False)
    if not history.is_file():
        console.print(f"No such file: {history}", markup=False)
        raise typer.Exit(EXIT_USAGE)
    try:
        report = check_history(history, task)
    except OppuError as exc:  # unknown task: nothing to check the file against
        console.print(str(exc), markup=False)
        raise typer.Exit(EXIT_USAGE) from None
    console.print(
        f"Read {len(report.items)} valid item(s) from {report.lines} line(s) of {history} "
        f"for task {report.task}.",
        markup=False,
    )
    if report.warnings:
        _show(console, "Warnings", "yellow", report.warnings)
    if report.problems:
        _show(console, "Problems", "bold red", report.problems)
        console.print("Fix these and run validate again.", markup=False)
        raise typer.Exit(EXIT_PROBLEMS)
    console.print("[green]OK[/green]: this history is ready for training.")
    _show_prompt(console, report.task, report.items)


def _show_prompt(console: Console, task_name: str, items: list[dict]) -> None:
    """The newest item as the model will see it: the prompt and the answer it learns."""
    from oppu.shared.personal.adapter_meta import history_labels
    from oppu.shared.tasks import get_task

    spec = get_task(task_name)
    if not items or not spec.supervised:
        return
    labels = history_labels(spec, items)
    query, answer = spec.query_from_item(items[-1], labels=labels)
    console.print("\nYour newest item, as the model sees it (without retrieved items):",
                  markup=False)
    console.print(spec.build_prompt(query), markup=False)
    console.print(f"Answer it learns: {answer}", markup=False)
    if labels:
        console.print(f"Labels: {', '.join(labels)}", markup=False)
