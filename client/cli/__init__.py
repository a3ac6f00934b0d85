"""``oppu-client``: train, ask and validate on the user's own machine."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="oppu-client",
    help="Your private, personalized LLM: train on your own history; nothing leaves this machine.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def main() -> None:
    app()


# Each command lives in its own module and registers itself on ``app``.
from oppu.client.cli import ask, train, validate  # noqa: E402, F401
