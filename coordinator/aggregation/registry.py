"""Every aggregation mode the ServerApp can run, by its name in the run config.

A new mode is one module in this package implementing ``Aggregator`` plus one line here
(and its name in ``oppu.shared.federation.aggregation_modes``).
"""

from __future__ import annotations

from oppu.coordinator.aggregation.base import Aggregator
from oppu.coordinator.aggregation.sealed import SealedAggregator
from oppu.coordinator.aggregation.secagg import SecAggAggregator
from oppu.shared.federation.aggregation_modes import SEALED, SECAGG

AGGREGATORS: dict[str, Aggregator] = {
    SECAGG: SecAggAggregator(),
    SEALED: SealedAggregator(),
}
