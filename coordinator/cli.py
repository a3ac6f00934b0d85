"""``oppu-coordinator``: serve the task-adapted base and collect the cohort's metrics."""

from __future__ import annotations

from oppu.shared.llm.threads import apply_cpu_defaults

apply_cpu_defaults()  # before anything imports torch

import typer  # noqa: E402

from oppu.shared.cli_support import TaskFilesOpt, friendly_errors, load_task_files  # noqa: E402

app = typer.Typer(
    name="oppu-coordinator",
    help="Coordinate an oppu federation: task-adapted base, rounds, cohort metrics.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
@friendly_errors
def _global_options(task_file: TaskFilesOpt = None) -> None:
    load_task_files(task_file)


def main() -> None:
    app()


# Each command lives in its own module and registers itself on ``app``.
from oppu.coordinator.commands import adapt, demo, enroll, simulate, start  # noqa: E402, F401
