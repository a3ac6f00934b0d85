"""``oppu-client``: train, ask and validate on the user's own machine."""

from __future__ import annotations

from oppu.shared.llm.threads import apply_cpu_defaults

apply_cpu_defaults()  # before anything imports torch

import typer  # noqa: E402

from oppu.shared.cli_support import TaskFilesOpt, friendly_errors, load_task_files  # noqa: E402

app = typer.Typer(
    name="oppu-client",
    help="Your private, personalized LLM: train on your own history; nothing leaves this machine.",
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


def _register_commands() -> None:
    """Put each command (a plain function in its own module) on ``app``.

    The modules do not import this package for ``app``, so it and they do not import each
    other.
    """
    from oppu.client.cli import ask, evaluate, join, keygen, task, train, validate

    for command in (ask.ask, evaluate.evaluate, join.join, keygen.keygen, train.train,
                    validate.validate):
        app.command()(command)
    app.add_typer(task.app)


_register_commands()
