"""The deployment's privacy budget: every DP round accounted, kept in the state dir.

``dp_budget.json`` lists every DP round this state dir ever ran (its zCDP parameters and
per-round epsilon). Before a round asks any client to train, ``charge`` composes the ledger
with the new round in dp-accounting's RDP accountant; over ``dp-budget-epsilon`` the round is
refused, otherwise it is written down first (atomically), so a round that then fails or is
interrupted still counts: its clients may already have sent noised statistics.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass

from oppu.coordinator.dp_round import DpPlan
from oppu.coordinator.state import StateDir
from oppu.shared.atomic import write_text_atomic
from oppu.shared.errors import OppuError
from oppu.shared.federation.dp_mechanism import epsilon_of
from oppu.shared.federation.keys import RunKey


class BudgetExceeded(OppuError):
    """A round would take the deployment past its privacy budget."""


@dataclass(frozen=True)
class Spent:
    """What the deployment has spent after a round (at ``delta``)."""

    round_epsilon: float
    total_epsilon: float
    delta: float
    budget_epsilon: float
    """0: no budget set."""
    rounds: int


def read_ledger(state: StateDir) -> list[dict]:
    if not state.dp_budget.is_file():
        return []
    return list(json.loads(state.dp_budget.read_text())["rounds"])


def total_epsilon(rounds: list[dict], delta: float) -> float:
    """Epsilon at ``delta`` of every round in ``rounds`` composed (0 for none)."""
    import dp_accounting

    if not rounds:
        return 0.0
    return epsilon_of([dp_accounting.ZCDpEvent(rho=r["rho"], xi=r["xi"]) for r in rounds],
                      delta)


def charge(state: StateDir, run_id: str, plan: DpPlan,
           run_config: Mapping[str, object]) -> Spent:
    """Account the round or refuse it (``BudgetExceeded``) before any client is asked."""
    budget = float(run_config.get(RunKey.DP_BUDGET_EPSILON, 0.0) or 0.0)
    delta = float(run_config.get(RunKey.DP_BUDGET_DELTA, 0.0) or 0.0) or plan.delta
    rounds = read_ledger(state)
    entry = {"run_id": run_id, "rho": plan.rho, "xi": plan.xi, "epsilon": plan.epsilon,
             "delta": plan.delta, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    after = total_epsilon([*rounds, entry], delta)
    if budget > 0 and after > budget:
        spent = total_epsilon(rounds, delta)
        raise BudgetExceeded(
            f"Refused before any client trained: this round costs epsilon {plan.epsilon:.3g} "
            f"(delta {plan.delta:g}) and would bring the deployment to {after:.3g} at delta "
            f"{delta:g}, over its budget '{RunKey.DP_BUDGET_EPSILON}' = {budget:g} "
            f"({spent:.3g} spent in {len(rounds)} rounds, {state.dp_budget}).")
    state.root.mkdir(parents=True, exist_ok=True)
    write_text_atomic(state.dp_budget, json.dumps({"rounds": [*rounds, entry]}, indent=2))
    return Spent(round_epsilon=plan.epsilon, total_epsilon=after, delta=delta,
                 budget_epsilon=budget, rounds=len(rounds) + 1)
