"""The DP flags ``start`` and ``simulate`` share, and their one mapping to run-config keys."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import typer

from oppu.shared.dp_bounds import DEFAULT_MAX_QUERIES
from oppu.shared.errors import ConfigError
from oppu.shared.federation.keys import RoundKey, RunKey

DEFAULT_DP_DELTA = 1e-5


@dataclass(frozen=True)
class DpSettings:
    """Differential privacy of a round (all off by default)."""

    epsilon: float = 0.0
    delta: float = DEFAULT_DP_DELTA
    noise_multiplier: float = 0.0
    budget_epsilon: float = 0.0
    budget_delta: float = 0.0
    max_queries: int = DEFAULT_MAX_QUERIES

    @property
    def on(self) -> bool:
        return self.epsilon > 0 or self.noise_multiplier > 0


def dp_run_config(dp: DpSettings) -> dict[str, object]:
    """Run-config entries of ``dp``; none at all with DP off (the round is as before)."""
    if dp.epsilon > 0 and dp.noise_multiplier > 0:
        raise ConfigError("give --dp-epsilon or --dp-noise-multiplier, not both.")
    if not dp.on:
        return {}
    return {RunKey.DP_EPSILON: dp.epsilon, RunKey.DP_DELTA: dp.delta,
            RunKey.DP_NOISE_MULTIPLIER: dp.noise_multiplier,
            RunKey.DP_BUDGET_EPSILON: dp.budget_epsilon,
            RunKey.DP_BUDGET_DELTA: dp.budget_delta, RoundKey.DP_MAX_QUERIES: dp.max_queries}


DpEpsilonOpt = Annotated[float, typer.Option(
    "--dp-epsilon", rich_help_panel="Differential privacy",
    help="Epsilon one round may cost (at --dp-delta); clients add noise. 0: DP off.")]
DpDeltaOpt = Annotated[float, typer.Option(
    "--dp-delta", rich_help_panel="Differential privacy", help="Delta of each round.")]
DpNoiseMultiplierOpt = Annotated[float, typer.Option(
    "--dp-noise-multiplier", rich_help_panel="Differential privacy",
    help="Noise std in L2 sensitivities, instead of --dp-epsilon.")]
DpBudgetEpsilonOpt = Annotated[float, typer.Option(
    "--dp-budget-epsilon", rich_help_panel="Differential privacy",
    help="Total epsilon of all DP rounds of this state dir; a round past it is refused "
         "before any client trains. 0: no limit.")]
DpBudgetDeltaOpt = Annotated[float, typer.Option(
    "--dp-budget-delta", rich_help_panel="Differential privacy",
    help="Delta the total is stated at (0: --dp-delta).")]
DpMaxQueriesOpt = Annotated[int, typer.Option(
    "--dp-max-queries", min=1, rich_help_panel="Differential privacy",
    help="Held-out queries one user counts per round with DP (its contribution bound).")]
