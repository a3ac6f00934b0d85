"""``oppu-coordinator demo``: the quick start, a federated simulation of the bundled sample."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from oppu.shared.cli_support import friendly_errors
from oppu.simulations.commands.simulate import simulate


@friendly_errors
def demo(
    data: Annotated[Path | None, typer.Option(help="LaMP dir; default: bundled sample.")] = None,
    users: Annotated[int, typer.Option(min=1, help="Test users (virtual clients).")] = 4,
    max_history: Annotated[int, typer.Option(min=0, help="Newest items per user (0: all).")
    ] = 24,
    suite: Annotated[str, typer.Option(help="quick, table1, peft or variants.")] = "quick",
    adapt_examples: Annotated[
        int | None, typer.Option(min=1, help="Cap on base-user examples for task adaptation.")
    ] = None,
    base_model: Annotated[str | None, typer.Option(help="HF id or directory.")] = None,
    out: Annotated[Path, typer.Option(help="Records, adapters and report.")] = Path("runs/demo"),
) -> None:
    """The sample's test users as virtual Flower clients: adapt, personalize, Table 1.

    ``simulate`` with small defaults; see ``oppu-coordinator simulate --help`` for the rest.
    """
    simulate(data=data, task=None, users=users, suite=suite, max_history=max_history,
             history_shift=0.0, base=None, adapt_examples=adapt_examples, lr=None, epochs=0,
             max_steps=0, out=out, base_model=base_model, num_cpus=2, num_gpus=0.0,
             insecure=False, plots=True)
