"""The load test's round: one optimizer step per client, submitted and watched to its end.

The round is about the federation, not the model, so each client trains for one step on 4
items and scores 2 held out. The federation tests run the same round.
"""

from __future__ import annotations

import time
from typing import Any

from oppu.shared.federation.aggregation_modes import MIN_SECAGG_CLIENTS, SECAGG
from oppu.shared.federation.keys import RoundKey, RunKey
from oppu.simulations.load.supernode import SuperNode

FAST_ROUND: dict[str, object] = {
    RoundKey.TASK: "LaMP_2N", RoundKey.LR: 3e-3, RoundKey.LORA_ALPHA: 16,
    RoundKey.MAX_STEPS: 1, RoundKey.EPOCHS: 1, RoundKey.BATCH_SIZE: 4, RoundKey.HOLDOUT: 2.0,
}
"""One optimizer step on 4 items, 2 held out: the round is about the federation, not the model."""


def run_round(coordinator: Any, joined: list[SuperNode], aggregation: str, timeout: float,
              failures: list[dict]) -> tuple[Any, str | None, dict[str, float]]:
    """Submit one round for the clients that joined; wait with a progress bar.

    Returns the cohort result (``None`` if the round failed; why is added to ``failures``),
    the run id once submitted, and the round's times (``submitted_at`` as a timestamp).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from oppu.coordinator.superlink import run_log
    from oppu.shared.cli_support import console
    from oppu.shared.errors import OppuError

    times: dict[str, float] = {}
    if not joined:
        return None, None, times
    if aggregation == SECAGG and len(joined) < MIN_SECAGG_CLIENTS:
        failures.append({"client": "coordinator", "stage": "round", "log_tail": "",
                         "error": f"only {len(joined)} clients joined: too few for SecAgg+"})
        return None, None, times
    run: dict[str, str] = {}
    # Every stage may wait as long as training: with --max-clientapps, N clients' key
    # exchanges queue for K ClientApp slots on one machine (a deployment has one per client).
    config = {**FAST_ROUND, RunKey.TIMEOUT: timeout, RunKey.STAGE_TIMEOUT: timeout,
              RunKey.MIN_CLIENTS: len(joined), RunKey.AGGREGATION: aggregation}
    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("Clients done training", total=len(joined))

        def on_submit(run_id: str) -> None:
            run["id"] = run_id
            times["run_started_s"] = time.time() - times["submitted_at"]

        def on_poll() -> None:
            if "id" in run:
                done = sum(1 for n in joined if n.records(run["id"]))
                progress.update(task, completed=done)

        times["submitted_at"] = time.time()
        try:
            result = coordinator.run_round(config, timeout=timeout, on_submit=on_submit,
                                           on_poll=on_poll)
        except OppuError as exc:
            tail = run_log(coordinator.state, run["id"])[-3000:] if "id" in run else ""
            failures.append({"client": "coordinator", "stage": "round", "error": str(exc),
                             "log_tail": tail})
            return None, run.get("id"), times
        times["round_wall_s"] = time.time() - times["submitted_at"]
        on_poll()
    return result, run.get("id"), times
