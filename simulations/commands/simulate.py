"""``oppu-coordinator simulate``: the LaMP test users as virtual Flower clients, Table 1 out."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from oppu.shared.cli_support import (
    console,
    friendly_errors,
    quiet_libraries,
    stop_cleanly_on_sigterm,
)
from oppu.shared.dp_bounds import DEFAULT_MAX_QUERIES
from oppu.shared.federation.dp_options import (
    DEFAULT_DP_DELTA,
    DpBudgetDeltaOpt,
    DpBudgetEpsilonOpt,
    DpDeltaOpt,
    DpEpsilonOpt,
    DpMaxQueriesOpt,
    DpNoiseMultiplierOpt,
    DpSettings,
)
from oppu.shared.personal.recipe import DEFAULT_RECIPE, recipe_from_options, recipe_options
from oppu.shared.personal.recipe_options import (
    BatchSizeOpt,
    EpochsOpt,
    LoraAlphaOpt,
    LoraROpt,
    MaxStepsOpt,
    SeedOpt,
)
from oppu.shared.personal.suite import PRESETS, parse_suite, suite_help


def suite_names(text: str) -> tuple[str, ...]:
    """A preset name (quick, table1, peft) or comma-separated variants, validated."""
    if text in PRESETS:
        return PRESETS[text]
    return tuple(v.name for v in parse_suite(text))


@friendly_errors
def simulate(
    data: Annotated[Path | None, typer.Option(
        help="LaMP dir (questions.json/outputs.json); default: the bundled sample.")] = None,
    task: Annotated[str | None, typer.Option(
        help="Task, e.g. LaMP_2N; default: from the directory's outputs.json.")] = None,
    users: Annotated[int, typer.Option(
        min=1, help="Test users (virtual clients), most active first.")] = 100,
    suite: Annotated[str, typer.Option(
        help=suite_help())] = "quick",
    max_history: Annotated[int, typer.Option(
        min=0, help="Newest history items each user trains on (0: all).")] = 0,
    history_shift: Annotated[float, typer.Option(
        min=0.0, max=0.9, help="Behaviour shift (paper Table 3): drop this share of each "
        "history, the items most relevant to the user's queries (BM25) first.")] = 0.0,
    base: Annotated[Path | None, typer.Option(
        help="Task-adapted base artifact for every variant (default: adapt one per prompt "
        "family on the base users).")] = None,
    one_base: Annotated[bool, typer.Option(
        "--one-base", help="Adapt only the plain base and run every variant on it (cheaper; "
        "the paper adapts one per family: plain, rag-kJ, profile-kJ).")] = False,
    adapt_examples: Annotated[int | None, typer.Option(
        min=1, help="Cap on base-user examples for task adaptation.")] = None,
    lr: Annotated[float | None, typer.Option(
        "--lr", min=0.0, help="Learning rate; default: the one chosen on held-out base users "
        "(stored in the base's manifest), else the default recipe's.")] = None,
    lora_r: LoraROpt = DEFAULT_RECIPE.peft.r,
    lora_alpha: LoraAlphaOpt = DEFAULT_RECIPE.peft.alpha,
    epochs: EpochsOpt = 0,
    batch_size: BatchSizeOpt = DEFAULT_RECIPE.train.batch_size,
    max_steps: MaxStepsOpt = 0,
    seed: SeedOpt = 0,
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
    dp_epsilon: DpEpsilonOpt = 0.0,
    dp_delta: DpDeltaOpt = DEFAULT_DP_DELTA,
    dp_noise_multiplier: DpNoiseMultiplierOpt = 0.0,
    dp_budget_epsilon: DpBudgetEpsilonOpt = 0.0,
    dp_budget_delta: DpBudgetDeltaOpt = 0.0,
    dp_max_queries: DpMaxQueriesOpt = DEFAULT_MAX_QUERIES,
) -> None:
    """Run the paper's experiment on Flower's simulation engine and print Table 1.

    Users already done by an earlier run with the same settings answer from their records
    (resume); delete OUT/users to start over.
    """
    quiet_libraries()
    from oppu.simulations.simulate import SimulationSettings, run_simulation

    defaults = SimulationSettings()
    personal = recipe_from_options(**{
        **recipe_options(DEFAULT_RECIPE), "lr": lr or DEFAULT_RECIPE.train.lr,
        "lora_r": lora_r, "lora_alpha": lora_alpha,
        "epochs": epochs, "batch_size": batch_size, "max_steps": max_steps, "seed": seed})
    settings = replace(
        defaults, users=users, suite=suite_names(suite), max_history=max_history,
        history_shift=history_shift,
        adapt=replace(defaults.adapt, max_examples=adapt_examples),
        personal=personal, recipe_from_base=lr is None and not epochs,
        base_model=base_model, task=task, one_base=one_base,
        num_cpus=num_cpus,
        num_gpus=num_gpus, insecure=insecure,
        dp=DpSettings(epsilon=dp_epsilon, delta=dp_delta, noise_multiplier=dp_noise_multiplier,
                      budget_epsilon=dp_budget_epsilon, budget_delta=dp_budget_delta,
                      max_queries=dp_max_queries))
    stop_cleanly_on_sigterm()
    table = run_simulation(data, out, settings, base=base, plots=plots)
    from oppu.simulations.report import compare_variants, table1_markdown

    console.print(table1_markdown(table))
    for sentence in compare_variants(table):
        console.print(f"- {sentence}", markup=False)
    console.print(f"Done in {table['seconds_total']:.0f} s. Report: {out / 'report'}")
