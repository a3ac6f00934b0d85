"""SecAgg+ parameters and the encoding of a client's statistics vector for it.

Under SecAgg+ a client's statistics vector is the (masked) array it uploads. SecAgg+ clips
every value into ``[-clip, clip]`` and quantizes it, so each statistic is divided by a bound
``B`` the coordinator announces (``v / B * clip`` lies in ``[0, clip]``); a value over ``B`` is
refused rather than silently clipped. The server gets the mean of the encodings (each client
weighs 1) and multiplies back: ``sum = mean * n * B / clip``. Stochastic rounding adds at most
one quantization step per client, ``2 * B / quantization_range`` in value units, so counts are
exact after rounding while ``n * 2 * B / quantization_range < 0.5``.
"""

from __future__ import annotations

from collections.abc import Sequence

from oppu.shared.federation.aggregation_modes import MIN_SECAGG_CLIENTS
from oppu.shared.metrics import MetricSpec, Stats

QUANTIZATION_RANGE = 1 << 22
MODULUS_RANGE = 1 << 32
MAX_SECAGG_CLIENTS = MODULUS_RANGE // QUANTIZATION_RANGE - 1
"""Each client adds up to ``QUANTIZATION_RANGE`` (its weight too) modulo ``MODULUS_RANGE``."""
SECAGG_MAX_WEIGHT = 1.0
"""Every client weighs 1 (num_examples=1): the server's weighted mean is the plain mean."""
SENTINEL = -1.0
"""Initial array value; no mean of encodings (all >= 0) can be negative."""


def secagg_shares(clients: int) -> tuple[int, int]:
    """(num_shares, reconstruction_threshold) Flower's SecAgg+ accepts for ``clients``.

    Flower bumps an even share count that differs from the cohort size by one *after*
    sending it to clients (a client then fails with an IndexError and the server silently
    keeps its initial arrays), so the count is the cohort itself or an odd number.
    """
    if not MIN_SECAGG_CLIENTS <= clients <= MAX_SECAGG_CLIENTS:
        raise ValueError(f"SecAgg+ here takes {MIN_SECAGG_CLIENTS}..{MAX_SECAGG_CLIENTS} "
                         f"clients, got {clients}.")
    shares = clients if clients <= 11 else 11
    return shares, shares // 2 + 1


def secagg_max_error(clients: int, stat_bound: float) -> float:
    """Worst-case absolute error of a summed statistic after SecAgg+ quantization."""
    return clients * 2.0 * stat_bound / QUANTIZATION_RANGE


def encode_stats(vector: Sequence[float], stat_bound: float, clip: float) -> list[float]:
    """Map statistics in ``[0, stat_bound]`` into ``[0, clip]`` for SecAgg+."""
    over = [v for v in vector if not (0.0 <= v <= stat_bound)]
    if over:
        raise ValueError(f"a statistic ({over[0]}) lies outside [0, stat-bound={stat_bound}]; "
                         "the coordinator must raise stat-bound for this cohort.")
    return [v / stat_bound * clip for v in vector]


def encode_noisy(vector: Sequence[float], stat_bound: float, clip: float) -> list[float]:
    """A DP-noised vector (``dp_noise``) for SecAgg+: no range check, since noise may take a
    value below 0 or past ``stat_bound``; SecAgg+ clips at +-``clip`` (value +-``stat_bound``),
    which the round's ``stat_bound`` leaves room for (``RoundConfig._check_dp``)."""
    return [v / stat_bound * clip for v in vector]


def decode_mean(mean: Sequence[float], clients: int, stat_bound: float,
                clip: float) -> list[float]:
    """Sums of statistics from the mean of ``clients`` encodings."""
    return [m * clients * stat_bound / clip for m in mean]


def snap_whole(metric: MetricSpec, stats: Stats, max_error: float) -> Stats:
    """Round the statistics that must be whole numbers, if within ``max_error`` of one."""
    out = dict(stats)
    for name in metric.whole_stat_names():
        nearest = round(out[name])
        if abs(out[name] - nearest) <= max(max_error, 1e-6):
            out[name] = float(nearest)
    for name, value in out.items():  # quantization noise may dip a zero slightly below 0
        if -max(max_error, 1e-9) <= value < 0:
            out[name] = 0.0
    return out
