"""``oppu-coordinator start``: serve the bases and run federated rounds until stopped.

Rounds run on the schedule (``--rounds``, ``--every``, once ``--min-clients`` nodes are
connected) and when the operator asks (``oppu-coordinator round``); each prints the cohort
table. A restart on the same state dir resumes the schedule (``coordinator/round_log.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from oppu.coordinator.coordinator import (
    DEFAULT_BASE_PORT,
    DEFAULT_SUPERLINK_PORT,
    Coordinator,
    served_bases,
)
from oppu.coordinator.operator_server import OperatorServer
from oppu.coordinator.round_log import Schedule
from oppu.coordinator.service import CoordinatorService, RoundOutcome, checked_run_config
from oppu.shared.cli_support import console, friendly_errors, stop_cleanly_on_sigterm
from oppu.shared.dp_bounds import DEFAULT_MAX_QUERIES
from oppu.shared.federation.aggregation_modes import AGGREGATIONS, AUTO
from oppu.shared.federation.dp_options import (
    DEFAULT_DP_DELTA,
    DpBudgetDeltaOpt,
    DpBudgetEpsilonOpt,
    DpDeltaOpt,
    DpEpsilonOpt,
    DpMaxQueriesOpt,
    DpNoiseMultiplierOpt,
    DpSettings,
    dp_run_config,
)
from oppu.shared.federation.keys import (
    DEFAULT_ROUND_TIMEOUT,
    DEFAULT_STAGE_TIMEOUT,
    RoundKey,
    RunKey,
)
from oppu.shared.federation.round_config import (
    recipe_entries,
)
from oppu.shared.federation.tls import CA_CERT
from oppu.shared.paths import oppu_home
from oppu.shared.personal.recipe import DEFAULT_RECIPE, PersonalizeSettings, recipe_from_options
from oppu.shared.personal.recipe_options import (
    BatchSizeOpt,
    EpochsOpt,
    HoldoutOpt,
    KOpt,
    LoraAlphaOpt,
    LoraROpt,
    LrOpt,
    MaxStepsOpt,
    PeftOpt,
    ProfileOpt,
    SeedOpt,
)
from oppu.shared.tasks import get_task


@friendly_errors
def start(
    base: Annotated[list[Path], typer.Option(
        "--base", help="Base artifact dir (from `oppu-coordinator adapt`) to serve; repeat "
        "it for one base per prompt family (plain first, then e.g. the rag-k1 base): each "
        "variant then runs on its family's.")],
    task: Annotated[str, typer.Option("--task", help="Task of the round, e.g. LaMP_2N.")],
    state_dir: Annotated[Path | None, typer.Option(
        "--state-dir", help="Keys, certificates, logs, results (default: "
        "$OPPU_HOME/coordinator).")] = None,
    min_clients: Annotated[int, typer.Option(
        "--min-clients", min=1, help="Wait for this many clients before the round.")] = 3,
    aggregation: Annotated[str, typer.Option(
        help=f"{', '.join(AGGREGATIONS)}: auto = SecAgg+ from 3 clients, sealed below.")
    ] = AUTO,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "0.0.0.0",
    public_host: Annotated[str, typer.Option(
        help="Name clients reach this machine by (goes into the TLS certificate).")
    ] = "localhost",
    port: Annotated[int, typer.Option(help="SuperLink port.")] = DEFAULT_SUPERLINK_PORT,
    base_port: Annotated[int, typer.Option(help="BaseStore port.")] = DEFAULT_BASE_PORT,
    insecure: Annotated[bool, typer.Option(
        "--insecure", help="No TLS anywhere, no node authentication (local experiments "
        "only).")] = False,
    node_auth: Annotated[bool | None, typer.Option(
        "--node-auth/--no-node-auth", help="Admit only SuperNodes whose keys were enrolled "
        "(`oppu-coordinator enroll`). Default: on, off with --insecure.")] = None,
    peft: PeftOpt = "lora",
    lora_r: LoraROpt = 8,
    lora_alpha: LoraAlphaOpt = DEFAULT_RECIPE.peft.alpha,
    k: KOpt = 0,
    profile: ProfileOpt = "none",
    epochs: EpochsOpt = 0,
    lr: LrOpt = DEFAULT_RECIPE.train.lr,
    batch_size: BatchSizeOpt = 8,
    max_steps: MaxStepsOpt = 0,
    seed: SeedOpt = 0,
    holdout: HoldoutOpt = 0.2,
    stat_bound: Annotated[float, typer.Option(
        help="Largest statistic one client may report (SecAgg+ scaling).")] = 4096.0,
    timeout: Annotated[float, typer.Option(
        help="Seconds to wait for clients to join, and for replies while they train.")
    ] = DEFAULT_ROUND_TIMEOUT,
    stage_timeout: Annotated[float, typer.Option(
        min=1, help="Seconds to wait for replies in every other stage (SecAgg+'s key "
        "exchanges): a lost reply there ends its stage this soon.")] = DEFAULT_STAGE_TIMEOUT,
    dp_epsilon: DpEpsilonOpt = 0.0,
    dp_delta: DpDeltaOpt = DEFAULT_DP_DELTA,
    dp_noise_multiplier: DpNoiseMultiplierOpt = 0.0,
    dp_budget_epsilon: DpBudgetEpsilonOpt = 0.0,
    dp_budget_delta: DpBudgetDeltaOpt = 0.0,
    dp_max_queries: DpMaxQueriesOpt = DEFAULT_MAX_QUERIES,
    rounds: Annotated[int, typer.Option(
        min=0, help="Scheduled rounds to run, then stop (0: until stopped).")] = 0,
    every: Annotated[float, typer.Option(
        min=0, help="Seconds from one scheduled round's start to the next (0: back to "
        "back).")] = 86400.0,
    operator_port: Annotated[int, typer.Option(
        min=0, help="127.0.0.1 port for `oppu-coordinator round|status|publish` (0: any "
        "free one, written to the state dir).")] = 0,
) -> None:
    """Serve the bases over the BaseStore and the SuperLink; run rounds until stopped (or
    --rounds N), printing each cohort's metrics."""
    state = state_dir if state_dir is not None else oppu_home() / "coordinator"
    recipe = recipe_from_options(peft=peft, lora_r=lora_r, lora_alpha=lora_alpha, lr=lr,
                                 epochs=epochs, batch_size=batch_size, max_steps=max_steps,
                                 seed=seed, k=k, profile=profile)
    run_config = round_run_config(task=task, recipe=recipe, min_clients=min_clients,
                                  aggregation=aggregation, timeout=timeout, holdout=holdout,
                                  stat_bound=stat_bound, stage_timeout=stage_timeout)
    run_config.update(dp_run_config(DpSettings(
        epsilon=dp_epsilon, delta=dp_delta, noise_multiplier=dp_noise_multiplier,
        budget_epsilon=dp_budget_epsilon, budget_delta=dp_budget_delta,
        max_queries=dp_max_queries)))
    stop_cleanly_on_sigterm()
    coordinator = Coordinator(state, base[0], host=host, public_host=public_host, port=port,
                              base_port=base_port, insecure=insecure, node_auth=node_auth,
                              extra_bases=base[1:])
    with coordinator:
        served = ", ".join(f"{name} {version[:12]}" for name, version in
                           served_bases(coordinator.base_server.manifests).items())
        console.print(f"SuperLink on {coordinator.client_address}, bases {served} on "
                      f"{public_host}:{coordinator.base_server.port}. State: "
                      f"{coordinator.state.root}\n{join_instructions(coordinator)}\n"
                      f"Waiting for {min_clients} clients (Ctrl-C stops everything)...",
                      highlight=False)
        service = CoordinatorService(coordinator, Schedule(rounds, every, min_clients),
                                     run_config, round_timeout=timeout + 600,
                                     on_round=_print_round)
        with OperatorServer(service, port=operator_port):
            console.print(f"Operator commands: oppu-coordinator status|round|publish "
                          f"--state-dir {coordinator.state.root}", highlight=False)
            service.serve()


def _print_round(outcome: RoundOutcome) -> None:
    entry = outcome.entry
    if outcome.result is None:
        console.print(f"Round {entry.number} failed: {entry.error}", highlight=False)
        return
    typer.echo(outcome.table)
    console.print(f"Round {entry.number} ({entry.source}) done: run {entry.run_id}, in the "
                  "state dir's results/.", highlight=False)


def round_run_config(*, task: str, recipe: PersonalizeSettings, min_clients: int,
                     aggregation: str, timeout: float, holdout: float,
                     stat_bound: float, stage_timeout: float) -> dict[str, object]:
    """The run config of a round, checked as a client will read it before anything starts
    (a bad value is refused here, naming its key, not after clients trained)."""
    return checked_run_config({
        RunKey.MIN_CLIENTS: min_clients, RunKey.AGGREGATION: aggregation,
        RunKey.TIMEOUT: timeout, RunKey.STAGE_TIMEOUT: stage_timeout,
        RoundKey.TASK: get_task(task).name, RoundKey.HOLDOUT: holdout,
        RoundKey.STAT_BOUND: stat_bound, **recipe_entries(recipe)}, {})


def join_instructions(coordinator: Coordinator) -> str:
    """What to hand each client (files to copy, the command) and how to enroll its key."""
    from oppu.coordinator.enrollment import enrolled_keys
    from oppu.shared.federation.signing import public_key_path

    state = coordinator.state
    key = public_key_path(state.signing_key)
    join = (f"oppu-client join --history YOUR_HISTORY.jsonl --coordinator "
            f"{coordinator.client_address} --coordinator-key {key.name}")
    join += " --insecure" if coordinator.insecure else f" --ca {CA_CERT}"
    files = key.name if coordinator.insecure else f"{CA_CERT} and {key.name}"
    lines = [f"Give clients {files} (from {state.tls} and {key.parent}); they join with:",
             f"  {join}" + ("" if coordinator.node_auth else " --no-node-auth")]
    if coordinator.node_auth:
        lines.append(f"Node authentication is on: {len(enrolled_keys(state))} SuperNode keys "
                     "enrolled. Enroll a client's key (its supernode_key.pub, from "
                     "`oppu-client keygen`) with:\n  oppu-coordinator enroll KEY.pub --name "
                     f"NAME --state-dir {state.root}")
    return "\n".join(lines)
