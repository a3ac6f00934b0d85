"""Plan a DP round from the run config: the noise, who adds how much, what it costs.

The coordinator turns ``dp-epsilon`` / ``dp-delta`` (or ``dp-noise-multiplier``) into the
Skellam variance every client's share adds up to (``dp_mechanism``), splits it over the fewest
clients a SecAgg+ sum can hold (all of it per client when sealed), and raises ``stat-bound``
when a client's noise needs more room. The plan goes out in the round config
(``dp-max-queries``, ``dp-variance``, ``dp-share``) and into the budget and the result.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace

from oppu.shared.dp_bounds import DEFAULT_MAX_QUERIES, contribution_bounds
from oppu.shared.errors import ConfigError
from oppu.shared.federation.aggregation_modes import SEALED
from oppu.shared.federation.dp_mechanism import (
    Mechanism,
    calibrate,
    grid_scale,
    mechanism,
    min_survivors,
    needed_stat_bound,
)
from oppu.shared.federation.keys import RunKey
from oppu.shared.federation.round_config import RoundConfig

DEFAULT_DELTA = 1e-5


@dataclass(frozen=True)
class DpPlan:
    """One DP round as planned: enough to account it and to say what it costs."""

    epsilon: float
    """What this round costs at ``delta`` (dp-accounting, RDP over integer orders)."""
    delta: float
    noise_multiplier: float
    """Noise std of what the coordinator sees, in L2 sensitivities (grid units)."""
    max_queries: int
    variance: float
    """Noise variance per statistic of the sum (grid steps squared)."""
    share: int
    """Fewest contributions the variance is split over (1: sealed, each client adds all)."""
    stat_bound: float
    l2_sensitivity: float
    """One user's L2 sensitivity in value units (replace-one)."""
    rho: float
    xi: float

    def noise_std(self, clients: int) -> float:
        """Standard deviation of each published sum's noise, in value units."""
        per_client = self.variance / self.share
        return math.sqrt(per_client * clients) / grid_scale(self.stat_bound)

    def summary(self) -> dict[str, float]:
        return asdict(self)


def dp_requested(run_config: Mapping[str, object]) -> bool:
    return (_number(run_config, RunKey.DP_EPSILON) > 0
            or _number(run_config, RunKey.DP_NOISE_MULTIPLIER) > 0)


def plan_dp_round(run_config: Mapping[str, object], round_cfg: RoundConfig, aggregation: str,
                  clients: int) -> tuple[RoundConfig, DpPlan | None]:
    """``round_cfg`` with its DP fields set, and the plan; unchanged and None with DP off."""
    if not dp_requested(run_config):
        return round_cfg, None
    epsilon = _number(run_config, RunKey.DP_EPSILON)
    multiplier = _number(run_config, RunKey.DP_NOISE_MULTIPLIER)
    delta = _number(run_config, RunKey.DP_DELTA) or DEFAULT_DELTA
    if epsilon > 0 and multiplier > 0:
        raise ConfigError(f"run config keys '{RunKey.DP_EPSILON}' and "
                          f"'{RunKey.DP_NOISE_MULTIPLIER}' both set: give one of them.")
    if not 0 < delta < 1:
        raise ConfigError(f"run config key '{RunKey.DP_DELTA}' must lie in (0, 1), got {delta}.")
    queries = round_cfg.dp_max_queries or DEFAULT_MAX_QUERIES
    bounds = contribution_bounds(replace(round_cfg, dp_max_queries=queries).metric(), queries)
    share = 1 if aggregation == SEALED else min_survivors(clients)
    stat_bound = round_cfg.stat_bound
    for _ in range(4):  # the grid depends on stat-bound, the room needed on the noise
        found = (calibrate(bounds, stat_bound, epsilon=epsilon, delta=delta) if epsilon > 0
                 else mechanism(bounds, stat_bound, noise_multiplier=multiplier))
        needed = needed_stat_bound(bounds, found.variance, share, stat_bound)
        if needed <= stat_bound:
            break
        stat_bound = float(2 ** math.ceil(math.log2(needed)))
    planned = replace(round_cfg, dp_max_queries=queries, dp_variance=found.variance,
                      dp_share=share, stat_bound=stat_bound)
    return planned, _plan(found, delta, queries, share, stat_bound, bounds.l2)


def _plan(found: Mechanism, delta: float, queries: int, share: int, stat_bound: float,
          l2: float) -> DpPlan:
    return DpPlan(epsilon=found.epsilon(delta), delta=delta,
                  noise_multiplier=math.sqrt(found.variance) / found.l2,
                  max_queries=queries, variance=found.variance, share=share,
                  stat_bound=stat_bound, l2_sensitivity=l2, rho=found.rho, xi=found.xi)


def _number(run_config: Mapping[str, object], key: str) -> float:
    value = run_config.get(key, 0.0)
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"run config key '{key}' must be a number, got {value!r}.") from None
    if not math.isfinite(number) or number < 0:
        raise ConfigError(f"run config key '{key}' must be a finite number >= 0, got {value!r}.")
    return number
