"""The one interface every aggregation mode implements, and what a collection returns.

The ServerApp only chooses a mode and publishes what comes back; how clients are asked, how
their replies are protected and checked, and how failures are counted is the mode's business.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from flwr.app import Context
from flwr.serverapp import Grid

from oppu.coordinator.state import StateDir
from oppu.shared.federation.round_config import RoundConfig
from oppu.shared.metrics import MetricSpec, Stats


@dataclass(frozen=True)
class Collected:
    """A round's collection: only the cohort's sums and counts, never one client's numbers."""

    sums: Stats
    """The summed statistics of every client that counted, checked by the metric."""
    clients: int
    """Clients whose statistics are in ``sums``."""
    rejected: int = 0
    """Replies that came back but were refused (unsealable, impossible statistics)."""
    failures: int = 0
    """Clients asked that never contributed: an error reply, no reply within the timeout,
    or a dropout mid-protocol."""


@dataclass(frozen=True)
class Timeouts:
    """How long a round waits for replies: ``train`` for the stage in which clients train
    and evaluate (minutes of model work), ``stage`` for every other exchange (SecAgg+'s key
    setup, key sharing and unmasking take seconds): a reply lost there ends its stage in
    ``stage`` seconds, not after a training's allowance."""

    train: float
    stage: float


class Aggregator(Protocol):
    """One aggregation mode: ask ``nodes`` to run the round, return the sum of their stats."""

    def collect(self, grid: Grid, context: Context, round_cfg: RoundConfig,
                metric: MetricSpec, nodes: list[int], state: StateDir,
                timeouts: Timeouts) -> Collected:
        """Run the round's collection; raise ``OppuError`` when nothing can be published."""
        ...
