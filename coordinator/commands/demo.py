"""``oppu-coordinator demo``: the quick start on the bundled sample (or any LaMP dir)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from oppu.coordinator.cli import app
from oppu.shared.cli_support import console, friendly_errors, quiet_libraries


@app.command()
@friendly_errors
def demo(
    data: Annotated[Path | None, typer.Option(help="LaMP dir; default: bundled sample.")] = None,
    users: Annotated[int, typer.Option(min=1, help="Test users to personalize.")] = 4,
    max_history: Annotated[int, typer.Option(min=1, help="Newest items per user.")] = 24,
    adapt_examples: Annotated[
        int | None, typer.Option(min=1, help="Cap on base-user examples for task adaptation.")
    ] = None,
    base_model: Annotated[str | None, typer.Option(help="HF id or directory.")] = None,
    out: Annotated[Path, typer.Option(help="Where to write results JSON.")] = Path(
        "runs/quickstart/results.json"),
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
) -> None:
    """Task-adapt the base, personalize a few users, print the comparison table."""
    quiet_libraries()
    from oppu.simulations.quickstart import QuickstartSettings, print_table, run_quickstart

    defaults = QuickstartSettings()
    settings = replace(defaults, users=users, max_history=max_history,
                       adapt=replace(defaults.adapt, max_examples=adapt_examples))
    results = run_quickstart(data, base_model=base_model, settings=settings, out=out,
                             device=device)
    print_table(results["task"], results["rows"])
    console.print(f"Done in {results['seconds_total']:.0f} s; results in {out}.")
