"""``oppu-coordinator``: serve the task-adapted base and collect the cohort's metrics."""

from __future__ import annotations

from oppu.shared.llm.threads import apply_cpu_defaults

apply_cpu_defaults()  # before anything imports torch

import sys  # noqa: E402
from collections.abc import Callable  # noqa: E402
from importlib.metadata import entry_points  # noqa: E402
from typing import Any  # noqa: E402

import typer  # noqa: E402

from oppu.shared.cli_support import TaskFilesOpt, friendly_errors, load_task_files  # noqa: E402

COMMAND_GROUP = "oppu.coordinator.commands"
"""Entry-point group of commands other packages add (``name = "module:function"``): how
``oppu-coordinator simulate`` and ``demo`` (in ``oppu.simulations``) join this CLI without the
coordinator importing the simulations."""

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


def extra_commands() -> dict[str, Callable[..., Any]]:
    """The installed entry points of ``COMMAND_GROUP``, name -> function, first one wins.

    One that fails to load is left out with a warning on stderr, so a broken add-on cannot
    take the coordinator's own commands down with it.
    """
    commands: dict[str, Callable[..., Any]] = {}
    for point in entry_points(group=COMMAND_GROUP):
        if point.name in commands:
            continue
        try:
            commands[point.name] = point.load()
        except Exception as exc:  # any error importing an add-on
            print(f"oppu-coordinator: command {point.name!r} ({point.value}) not loaded: "
                  f"{type(exc).__name__}: {exc}", file=sys.stderr)
    return commands


def _register_commands() -> None:
    """Put the built-in and the entry-point commands on ``app``, in name order."""
    from oppu.coordinator.commands import adapt, enroll, operate, start

    builtin: dict[str, Callable[..., Any]] = {
        "adapt": adapt.adapt, "enroll": enroll.enroll, "start": start.start,
        "round": operate.round_, "status": operate.status, "publish": operate.publish}
    commands = {**extra_commands(), **builtin}
    for name in sorted(commands):
        app.command(name=name)(commands[name])


_register_commands()
