"""SecAgg+ aggregation: the server only ever holds the cohort's sum (three clients or more).

Runs Flower's legacy ``SecAggPlusWorkflow`` for one round. Each client uploads its encoded
statistics (``oppu.shared.federation.secagg_encoding``) masked; the workflow unmasks only the
mean, which is decoded back into sums. A dropped client's masks are reconstructed from the
survivors' shares, so the round ends with the others.
"""

from __future__ import annotations

from logging import WARNING

from flwr.app import Context
from flwr.common import FitRes, Parameters, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.logger import log
from flwr.server import LegacyContext, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.serverapp import Grid

from oppu.coordinator.aggregation.base import Collected, Timeouts
from oppu.coordinator.state import StateDir
from oppu.shared.errors import OppuError
from oppu.shared.federation.round_config import RoundConfig
from oppu.shared.federation.secagg_encoding import (
    MODULUS_RANGE,
    QUANTIZATION_RANGE,
    SECAGG_MAX_WEIGHT,
    SENTINEL,
    decode_mean,
    secagg_max_error,
    secagg_shares,
    snap_whole,
)
from oppu.shared.metrics import MetricSpec
from oppu.shared.noisy_stats import read_noisy


class _KeepAggregate(FedAvg):
    """FedAvg whose aggregate_fit keeps what SecAgg+ unmasked: the mean of the encodings."""

    def __init__(self, round_cfg: RoundConfig, clients: int, initial: Parameters):
        super().__init__(fraction_fit=0.0, fraction_evaluate=0.0, min_fit_clients=clients,
                         min_available_clients=clients, initial_parameters=initial,
                         on_fit_config_fn=lambda _round: round_cfg.to_config())
        self.mean: list[float] | None = None
        self.clients = 0

    def aggregate_fit(self, server_round, results: list[tuple[object, FitRes]], failures):
        # ``failures`` is no count of clients: Flower 1.42 lists a client that dropped while
        # masking twice. The caller counts dropouts as sampled minus aggregated instead.
        if not results:
            return None, {}
        self.clients = len(results)
        # SecAgg+ hands every result the same unmasked aggregate; no averaging here.
        parameters = results[0][1].parameters
        self.mean = [float(v) for v in parameters_to_ndarrays(parameters)[0].ravel()]
        return parameters, {}


class StagedSecAggPlusWorkflow(SecAggPlusWorkflow):
    """Flower's SecAgg+ workflow with a timeout per stage: clients train in the masked-vector
    stage (``timeouts.train``); setup, key sharing and unmasking wait ``timeouts.stage``.

    Flower's workflow reads its one ``timeout`` in each stage's ``send_and_receive``
    (flwr 1.41-1.42 ``secaggplus_workflow.py``), so each stage runs with its own value set.
    A node whose reply does not come in time leaves the protocol at that stage; the round
    goes on while the reconstruction threshold holds.
    """

    def __init__(self, timeouts: Timeouts, **kwargs) -> None:
        super().__init__(timeout=timeouts.stage, **kwargs)
        self.timeouts = timeouts

    def share_keys_stage(self, grid: Grid, context, state) -> bool:
        """Key sharing, then the nodes that left before it ended taken out of the protocol.

        A client masks its vector only with the neighbours whose key shares reached it
        (``secaggplus_mod._collect_masked_vectors``), so a node that did not answer setup or
        key sharing is in no one's masks and has no shares to recover. Flower's unmask stage
        still counts it among the sampled (dead) nodes and asks for its shares, which the
        survivors do not hold: the round then fails ("Not enough shares", flwr 1.41-1.42).
        Forgetting it here makes such a dropout cost only itself, as the protocol intends.
        """
        ok = super().share_keys_stage(grid, context, state)
        active = set(state.active_node_ids)
        state.sampled_node_ids = set(active)
        state.nid_to_neighbours = {nid: neighbours & active for nid, neighbours
                                   in state.nid_to_neighbours.items() if nid in active}
        return ok

    def collect_masked_vectors_stage(self, *args) -> bool:
        self.timeout = self.timeouts.train
        try:
            return super().collect_masked_vectors_stage(*args)
        finally:
            self.timeout = self.timeouts.stage


class SecAggAggregator:
    """Sum of the clients' statistics through SecAgg+ (Flower's legacy workflow)."""

    def collect(self, grid: Grid, context: Context, round_cfg: RoundConfig,
                metric: MetricSpec, nodes: list[int], state: StateDir,
                timeouts: Timeouts) -> Collected:
        import numpy as np

        clients = len(nodes)
        size = len(metric.stat_names())  # with a suite: every variant's block, side by side
        max_error = secagg_max_error(clients, round_cfg.stat_bound)
        if max_error >= 0.5:
            log(WARNING, "With %d clients and stat-bound %g, summed counts may be off by up to "
                "%.2f; lower stat-bound for exact counts.", clients, round_cfg.stat_bound,
                max_error)
        dp = round_cfg.dp_variance > 0
        # A noised mean may dip below 0, never below -clip: a DP round's sentinel lies below.
        sentinel = -2.0 * round_cfg.clip if dp else SENTINEL
        strategy = _KeepAggregate(round_cfg, clients,
                                  ndarrays_to_parameters([np.full(size, sentinel)]))
        shares, threshold = secagg_shares(clients)
        legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=1),
                               strategy=strategy)
        workflow = DefaultWorkflow(fit_workflow=StagedSecAggPlusWorkflow(
            timeouts, num_shares=shares, reconstruction_threshold=threshold,
            max_weight=SECAGG_MAX_WEIGHT, clipping_range=round_cfg.clip,
            quantization_range=QUANTIZATION_RANGE, modulus_range=MODULUS_RANGE))
        workflow(grid, legacy)
        mean = strategy.mean
        if mean is None or len(mean) != size or min(mean) <= sentinel * (0.75 if dp else 0.5):
            raise OppuError(
                "SecAgg+ returned no aggregate (the server still holds its initial arrays): "
                f"too many of the {clients} clients failed or dropped out for the "
                f"reconstruction threshold of {threshold}. See the clients' logs; nothing was "
                "written.")
        failures = clients - strategy.clients
        if failures:
            log(WARNING, "%d of %d clients dropped out of SecAgg+; the sum covers the other "
                "%d (their masks were reconstructed from the survivors' shares).", failures,
                clients, strategy.clients)
        decoded = decode_mean(mean, strategy.clients, round_cfg.stat_bound, round_cfg.clip)
        if dp:
            return _noisy_collected(round_cfg, metric, decoded, strategy.clients, failures)
        sums = snap_whole(metric, dict(zip(metric.stat_names(), decoded, strict=True)),
                          secagg_max_error(strategy.clients, round_cfg.stat_bound))
        metric.validate_stats(sums)  # a client that lied can still make the sum impossible
        return Collected(sums=sums, clients=strategy.clients, failures=failures)


def _noisy_collected(round_cfg: RoundConfig, metric: MetricSpec, decoded: list[float],
                     summed: int, failures: int) -> Collected:
    """A DP round's sum: noisy, so neither snapped to whole numbers nor checked for
    identities noise breaks; refused when fewer clients than ``dp-share`` carry the noise."""
    if summed < round_cfg.dp_share:
        raise OppuError(f"Only {summed} clients were summed, fewer than the {round_cfg.dp_share} "
                        "the DP noise was split over: the sum would carry less noise than "
                        "accounted, so nothing was published.")
    return Collected(sums=read_noisy(metric, decoded), clients=summed, failures=failures)
