"""What both CLIs share: friendly errors (no tracebacks for user mistakes) and quiet logs."""

from __future__ import annotations

import functools
import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console

from oppu.shared.errors import OppuError

F = TypeVar("F", bound=Callable[..., object])
console = Console(stderr=True)

EXIT_PROBLEMS = 1  # the input has problems the user can fix
EXIT_USAGE = 2  # unknown task, missing file, bad option value


def quiet_libraries() -> None:
    """Keep library chatter (HF progress bars, deprecation notes) out of the user's way."""
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="peft")
    for name in ("transformers", "peft", "flwr"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a hard dependency
        pass


def stop_cleanly_on_sigterm() -> None:
    """Treat SIGTERM like Ctrl-C, so long-running commands stop the processes they started.

    Without this a plain ``kill`` ends Python at once and orphans the SuperLink/SuperNode.
    """
    import signal

    def _interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)


def load_task_files(paths: list[Path] | None) -> None:
    """Register custom tasks (TOML/JSON) so every command can name them with --task."""
    from oppu.shared.tasks import load_task_file

    for path in paths or []:
        load_task_file(path, replace=True)


TaskFilesOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--task-file",
        help="A custom task declared in TOML or JSON (repeatable); its name then works "
        "with --task like a built-in LaMP task.",
    ),
]


def friendly_errors(func: F) -> F:
    """Turn oppu's user-facing errors into a red message and an exit code."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except OppuError as exc:
            console.print(f"[bold red]error:[/] {exc}", highlight=False)
            raise typer.Exit(EXIT_USAGE) from None
        except (ValueError, FileNotFoundError) as exc:
            if os.environ.get("OPPU_DEBUG"):
                raise
            console.print(f"[bold red]error:[/] {exc}", highlight=False)
            raise typer.Exit(EXIT_USAGE) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted: nothing was changed.[/]")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]
