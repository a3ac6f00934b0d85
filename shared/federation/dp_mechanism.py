"""The round's DP mechanism: Skellam noise on SecAgg+'s integer grid, and its privacy cost.

SecAgg+ sums integers (``secagg_encoding``: one integer step is ``2 * stat-bound /
QUANTIZATION_RANGE`` in value units), so the noise is integer too: each client adds
Skellam noise, the difference of two Poisson draws. A sum of independent Skellams is a
Skellam, so clients that each add ``variance / share`` leave at least ``variance`` in any sum
of ``share`` or more of them, whichever clients dropped out.

Cost (Agarwal, Kairouz, Liu, "The Skellam Mechanism for Differentially Private Federated
Learning", NeurIPS 2021, Thm 3.5): with integer L2 / L1 sensitivities ``D2``, ``D1`` and
noise variance ``V``, for integer orders ``a > 1``::

    eps(a) <= a D2^2 / (2V) + ((2a - 1) D2^2 + 6 D1) / (4 V^2)
            = a * rho + xi,  rho = D2^2/(2V) + D2^2/(2V^2),  xi = max(0, (6 D1 - D2^2)/(4V^2))

which is dp-accounting's ``ZCDpEvent(rho, xi)``; the accountant is its ``RdpAccountant``
over integer orders only (where the bound is proven), replace-one neighbours. A user's values
are stochastically rounded to the grid before the noise, so each coordinate may move one more
step: ``D2 = l2 * scale + sqrt(d)``, ``D1 = l1 * scale + d``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from oppu.shared.dp_bounds import ContributionBounds
from oppu.shared.federation.secagg_encoding import QUANTIZATION_RANGE, secagg_shares

RDP_ORDERS: tuple[int, ...] = (*range(2, 257), 320, 384, 512, 768, 1024)
"""Integer Renyi orders: the Skellam bound holds for integer orders only."""
HEADROOM_SIGMAS = 12.0
"""A client's noisy value must stay within +-stat-bound (SecAgg+ clips beyond): stat-bound
must exceed the largest statistic by this many of one client's noise standard deviations."""


def grid_scale(stat_bound: float) -> float:
    """Integer steps per value unit on SecAgg+'s grid."""
    return QUANTIZATION_RANGE / (2.0 * stat_bound)


@dataclass(frozen=True)
class Mechanism:
    """One round's Skellam mechanism, in integer (grid) units."""

    variance: float
    """Noise variance per statistic of what the coordinator sees (sum or, sealed, a vector)."""
    l2: float
    l1: float

    @property
    def rho(self) -> float:
        v, d2sq = self.variance, self.l2 * self.l2
        return d2sq / (2.0 * v) + d2sq / (2.0 * v * v)

    @property
    def xi(self) -> float:
        v = self.variance
        return max(0.0, (6.0 * self.l1 - self.l2 * self.l2) / (4.0 * v * v))

    def event(self):
        """The dp-accounting event of one round with this mechanism."""
        import dp_accounting

        return dp_accounting.ZCDpEvent(rho=self.rho, xi=self.xi)

    def epsilon(self, delta: float) -> float:
        return epsilon_of([self.event()], delta)


def integer_sensitivities(bounds: ContributionBounds, stat_bound: float) -> tuple[float, float]:
    """(L2, L1) sensitivity on the grid, one rounding step per statistic included."""
    scale, dims = grid_scale(stat_bound), len(bounds.per_stat)
    return bounds.l2 * scale + math.sqrt(dims), bounds.l1 * scale + dims


def mechanism(bounds: ContributionBounds, stat_bound: float, *,
              noise_multiplier: float) -> Mechanism:
    """The mechanism whose noise std is ``noise_multiplier`` L2 sensitivities."""
    l2, l1 = integer_sensitivities(bounds, stat_bound)
    return Mechanism(variance=(noise_multiplier * l2) ** 2, l2=l2, l1=l1)


def accountant():
    """A fresh dp-accounting RDP accountant over integer orders, replace-one neighbours."""
    import dp_accounting

    return dp_accounting.rdp.RdpAccountant(
        orders=RDP_ORDERS, neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)


def epsilon_of(events: list, delta: float) -> float:
    """Epsilon at ``delta`` of all ``events`` composed (dp-accounting's RDP accountant)."""
    acc = accountant()
    for event in events:
        acc.compose(event)
    return float(acc.get_epsilon(delta))


def calibrate(bounds: ContributionBounds, stat_bound: float, *, epsilon: float,
              delta: float) -> Mechanism:
    """The least noise for which one round costs at most (``epsilon``, ``delta``)."""
    import dp_accounting

    multiplier = dp_accounting.calibrate_dp_mechanism(
        accountant, lambda z: mechanism(bounds, stat_bound, noise_multiplier=z).event(),
        epsilon, delta,
        bracket_interval=dp_accounting.LowerEndpointAndGuess(1e-3, 1.0), tol=1e-6)
    found = mechanism(bounds, stat_bound, noise_multiplier=multiplier)
    if found.epsilon(delta) > epsilon:  # Brent's tolerance may land a hair on the wrong side
        found = mechanism(bounds, stat_bound, noise_multiplier=multiplier * (1 + 1e-6))
    return found


def min_survivors(clients: int) -> int:
    """Fewest clients whose SecAgg+ sum Flower still unmasks.

    Flower's ring gives every client ``shares`` neighbours (itself included), each in
    ``shares`` neighbourhoods, and unmasks only while every client keeps ``threshold``
    live ones: so at least ``ceil(clients * threshold / shares)`` are summed.
    """
    shares, threshold = secagg_shares(clients)
    return math.ceil(clients * threshold / shares)


def needed_stat_bound(bounds: ContributionBounds, variance: float, share: int,
                      stat_bound: float) -> float:
    """Smallest stat-bound that leaves one client's noisy values unclipped by SecAgg+."""
    client_std = math.sqrt(variance / share) / grid_scale(stat_bound)
    return bounds.max_stat + HEADROOM_SIGMAS * client_std
