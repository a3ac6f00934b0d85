"""``oppu-coordinator simulate``: the LaMP test users as virtual Flower clients, Table 1 out."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from oppu.coordinator.cli import app
from oppu.shared.cli_support import (
    console,
    friendly_errors,
    quiet_libraries,
    stop_cleanly_on_sigterm,
)

SUITES = {"quick": "QUICK_SUITE", "table1": "TABLE1_SUITE", "peft": "PEFT_SUITE"}


def suite_names(text: str) -> tuple[str, ...]:
    """A preset name (quick, table1, peft) or comma-separated variants, validated."""
    from oppu.shared.personal import suite as suites
    from oppu.simulations import simulate

    if text in SUITES:
        return tuple(getattr(simulate if text == "quick" else suites, SUITES[text]))
    return tuple(v.name for v in suites.parse_suite(text))


@app.command()
@friendly_errors
def simulate(
    data: Annotated[Path | None, typer.Option(
        help="LaMP dir (questions.json/outputs.json); default: the bundled sample.")] = None,
    task: Annotated[str | None, typer.Option(
        help="Task, e.g. LaMP_2N; default: from the directory's outputs.json.")] = None,
    users: Annotated[int, typer.Option(
        min=1, help="Test users (virtual clients), most active first.")] = 100,
    suite: Annotated[str, typer.Option(
        help="quick, table1, peft, or comma-separated variants (e.g. base-k0,rag-k1,oppu-k0)."
    )] = "quick",
    max_history: Annotated[int, typer.Option(
        min=0, help="Newest history items each user trains on (0: all).")] = 0,
    history_shift: Annotated[float, typer.Option(
        min=0.0, max=0.9, help="Behaviour shift (paper Table 3): drop this share of each "
        "history, the items most relevant to the user's queries (BM25) first.")] = 0.0,
    base: Annotated[Path | None, typer.Option(
        help="Task-adapted base artifact to use (default: adapt one on the base users).")
    ] = None,
    adapt_examples: Annotated[int | None, typer.Option(
        min=1, help="Cap on base-user examples for task adaptation.")] = None,
    lr: Annotated[float | None, typer.Option(help="Private adapters' learning rate.")] = None,
    epochs: Annotated[int, typer.Option(min=0, help="0: the task's default.")] = 0,
    max_steps: Annotated[int, typer.Option(min=0, help="Cap on steps per adapter (0: none).")
    ] = 0,
    out: Annotated[Path, typer.Option(help="Users' records, adapters, report.")] = Path(
        "runs/simulation"),
    base_model: Annotated[str | None, typer.Option(help="HF id or directory.")] = None,
    num_cpus: Annotated[int, typer.Option(
        min=1, help="CPUs per virtual client (Ray); fewer runs more clients at once.")] = 2,
    num_gpus: Annotated[float, typer.Option(
        help="GPUs per virtual client (Ray), e.g. 0.25 shares one GPU by four.")] = 0.0,
    insecure: Annotated[bool, typer.Option(
        "--insecure", help="No TLS on the local SuperLink and BaseStore.")] = False,
    plots: Annotated[bool, typer.Option(help="Write the figures (PNG).")] = True,
) -> None:
    """Run the paper's experiment on Flower's simulation engine and print Table 1.

    Users already done by an earlier run with the same settings answer from their records
    (resume); delete OUT/users to start over.
    """
    quiet_libraries()
    from oppu.simulations.simulate import SimulationSettings, run_simulation

    defaults = SimulationSettings()
    personal = defaults.personal
    train = replace(personal.train, lr=lr if lr is not None else personal.train.lr,
                    epochs=epochs or personal.train.epochs, max_steps=max_steps or None)
    settings = replace(
        defaults, users=users, suite=suite_names(suite), max_history=max_history,
        history_shift=history_shift,
        adapt=replace(defaults.adapt, max_examples=adapt_examples),
        personal=replace(personal, train=train), base_model=base_model, task=task,
        num_cpus=num_cpus,
        num_gpus=num_gpus, insecure=insecure)
    stop_cleanly_on_sigterm()
    table = run_simulation(data, out, settings, base=base, plots=plots)
    from oppu.simulations.report import table1_markdown

    console.print(table1_markdown(table))
    console.print(f"Done in {table['seconds_total']:.0f} s. Report: {out / 'report'}")
