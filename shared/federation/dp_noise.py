"""A client's share of the round's DP noise, added to its statistics before they leave.

One place for both paths (``client_app``): the vector is bounded (``dp_bounds``), put on
SecAgg+'s integer grid by stochastic rounding, and Skellam noise is added there. Under SecAgg+
the client adds ``dp-variance / dp-share`` (the coordinator sets ``dp-share`` to the fewest
clients its sum can hold, so any surviving sum has at least ``dp-variance``); sealed, the
coordinator sees the vector itself, so the client adds all of ``dp-variance`` (local DP).

Skellam = Poisson - Poisson, drawn with NumPy's Poisson sampler rather than a hand-written
discrete-Gaussian sampler: it is exact, and closed under sums, which is the point here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from oppu.shared.dp_bounds import bound_contribution
from oppu.shared.federation.dp_mechanism import grid_scale
from oppu.shared.federation.round_config import RoundConfig


def skellam(rng: np.random.Generator, variance: float, size: int) -> np.ndarray:
    """Integer noise with mean 0 and ``variance``: the difference of two Poisson draws."""
    if variance <= 0:
        return np.zeros(size, dtype=np.int64)
    lam = variance / 2.0
    return rng.poisson(lam, size).astype(np.int64) - rng.poisson(lam, size).astype(np.int64)


def stochastic_round(rng: np.random.Generator, values: np.ndarray) -> np.ndarray:
    """Round each value down or up with the probabilities that keep its mean (as SecAgg+)."""
    low = np.floor(values)
    return (low + (rng.random(values.shape) < values - low)).astype(np.int64)


def privatize(vector: Sequence[float], round_cfg: RoundConfig, *, sealed: bool,
              rng: np.random.Generator | None = None) -> list[float]:
    """The bounded, grid-rounded, noised vector (value units; exact grid points)."""
    rng = rng if rng is not None else np.random.default_rng()  # seeded from the OS
    bounded = np.asarray(bound_contribution(round_cfg.metric(), vector,
                                            round_cfg.dp_max_queries))
    scale = grid_scale(round_cfg.stat_bound)
    share = 1 if sealed else round_cfg.dp_share
    steps = stochastic_round(rng, bounded * scale) + skellam(
        rng, round_cfg.dp_variance / share, bounded.size)
    return [float(v) for v in steps / scale]
