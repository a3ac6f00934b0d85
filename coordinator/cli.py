"""``oppu-coordinator``: serve the task-adapted base and collect the cohort's metrics."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="oppu-coordinator",
    help="Coordinate an oppu federation: task-adapted base, rounds, cohort metrics.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def main() -> None:
    app()
