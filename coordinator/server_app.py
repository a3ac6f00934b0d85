"""The coordinator's Flower ServerApp: ask every client to personalize, learn only the sums.

One round. The round's configuration goes out as a ConfigRecord; what comes back is each
client's metric-statistics vector, either masked under SecAgg+ (three clients or more: the
server only ever holds the sum) or sealed to the coordinator's X25519 key (smaller cohorts).
The cohort's metric table is computed from the sum, logged, and written to the state dir.

Faults: a client that errs, is killed or hangs gets no say in the sum. Flower answers for a
node that stopped heartbeating (within ~60 s); the round's ``timeout`` bounds the stage in which
clients train and ``stage-timeout`` each other stage (SecAgg+'s key exchanges), so
the round ends with the others; SecAgg+ reconstructs a dropped client's masks from the
survivors' shares. The result says how many clients were asked, how many were summed and how
many failed or dropped out; with fewer than ``min-clients`` summed nothing is published.

Differential privacy (``dp-epsilon`` or ``dp-noise-multiplier``): the round is planned
(``dp_round``) and charged to the deployment's budget (``dp_budget``) before any client is
asked; over budget, no client trains. Clients add the noise; the result is computed from the
noisy sums with intervals widened by it.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from logging import INFO

from flwr.app import Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from oppu.coordinator.aggregation.base import Collected, Timeouts
from oppu.coordinator.aggregation.registry import AGGREGATORS
from oppu.coordinator.dp_budget import Spent, charge
from oppu.coordinator.dp_round import DpPlan, plan_dp_round
from oppu.coordinator.results import CohortResult, format_table, write_result
from oppu.coordinator.state import FederationInfo, StateDir
from oppu.shared.block_metric import BlockMetric
from oppu.shared.errors import OppuError
from oppu.shared.federation.aggregation_modes import AUTO, SEALED, choose_aggregation
from oppu.shared.federation.keys import (
    DEFAULT_ROUND_TIMEOUT,
    DEFAULT_STAGE_TIMEOUT,
    RunKey,
    SimKey,
)
from oppu.shared.federation.round_config import RoundConfig, run_config_overrides
from oppu.shared.federation.sealing import load_or_create_sealing_key, public_bytes
from oppu.shared.metrics import MetricSpec
from oppu.shared.noisy_stats import noisy_tables
from oppu.shared.paths import oppu_home
from oppu.shared.tasks import get_task

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    started = time.perf_counter()
    config = context.run_config
    state = StateDir(str(config.get(RunKey.STATE_DIR, "")) or oppu_home() / "coordinator")
    info = federation_info(state, config)
    timeout = float(config.get(RunKey.TIMEOUT, DEFAULT_ROUND_TIMEOUT))
    timeouts = Timeouts(train=timeout, stage=min(timeout, float(
        config.get(RunKey.STAGE_TIMEOUT, DEFAULT_STAGE_TIMEOUT))))
    min_clients = int(config.get(RunKey.MIN_CLIENTS, 3))
    nodes = wait_for_nodes(grid, min_clients, timeout)
    aggregation = choose_aggregation(str(config.get(RunKey.AGGREGATION, AUTO)), len(nodes))
    round_cfg, dp = plan_dp_round(config, round_config(config, info, aggregation, state),
                                  aggregation, len(nodes))
    spent = None if dp is None else charge(state, str(context.run_id), dp, config)
    metric = round_cfg.metric()
    log(INFO, "Round %d of %s for %d clients, %s", round_cfg.round, round_cfg.task,
        len(nodes), aggregation)
    if spent is not None:
        log(INFO, "DP: this round costs epsilon %.3g (delta %g), %.3g in total", dp.epsilon,
            dp.delta, spent.total_epsilon)
    collected = AGGREGATORS[aggregation].collect(grid, context, round_cfg, metric, nodes,
                                                 state, timeouts)
    if collected.clients < min_clients:  # a "cohort" of fewer would say too much about each
        raise OppuError(f"Only {collected.clients} of the {min_clients} clients required "
                        f"returned valid statistics ({collected.failures} failed, "
                        f"{collected.rejected} rejected); nothing was published.")
    result = cohort_result(str(context.run_id), round_cfg, metric, collected, aggregation,
                           asked=len(nodes), seconds=time.perf_counter() - started, dp=dp)
    if dp is not None and spent is not None:
        result = with_dp_cost(result, dp, spent)
    path = write_result(state, result)
    log(INFO, "%s\nWritten to %s", format_table(result), path)


def cohort_result(run_id: str, round_cfg: RoundConfig, metric: MetricSpec,
                  collected: Collected, aggregation: str, *, asked: int,
                  seconds: float, dp: DpPlan | None = None) -> CohortResult:
    """What the round publishes: the sums, the metrics computed from them, the counts."""
    sums = collected.sums
    if dp is not None:
        return _noisy_result(run_id, round_cfg, metric, collected, aggregation, asked=asked,
                             seconds=seconds, noise_std=dp.noise_std(collected.clients))
    return CohortResult(
        run_id=run_id, round=round_cfg.round, task=round_cfg.task,
        aggregation=aggregation, clients=collected.clients, asked=asked,
        stat_names=metric.stat_names(),
        sums=metric.to_vector(sums), metrics=metric.compute(sums), rejected=collected.rejected,
        variants=metric.per_block(sums) if isinstance(metric, BlockMetric) else {},
        intervals=metric.intervals(sums) if isinstance(metric, BlockMetric) else {},
        comparisons=metric.comparisons(sums) if isinstance(metric, BlockMetric) else {},
        failures=collected.failures, base_version=round_cfg.base_version,
        seconds=seconds, config=round_cfg.public_summary())


def _noisy_result(run_id: str, round_cfg: RoundConfig, metric: MetricSpec,
                  collected: Collected, aggregation: str, *, asked: int, seconds: float,
                  noise_std: float) -> CohortResult:
    """A DP round's result: metrics from the noisy sums, intervals and tests widened by the
    noise (``noisy_stats``)."""
    tables = noisy_tables(metric, collected.sums, noise_std)
    return CohortResult(
        run_id=run_id, round=round_cfg.round, task=round_cfg.task, aggregation=aggregation,
        clients=collected.clients, asked=asked, stat_names=metric.stat_names(),
        sums=metric.to_vector(collected.sums), metrics=tables["metrics"],
        rejected=collected.rejected, variants=tables["variants"],
        intervals=tables["intervals"], comparisons=tables["comparisons"],
        failures=collected.failures, base_version=round_cfg.base_version, seconds=seconds,
        config=round_cfg.public_summary(),
        dp={"noise_std": noise_std, "metric_noise_std": tables["metric_noise_std"]})


def with_dp_cost(result: CohortResult, dp: DpPlan, spent: Spent) -> CohortResult:
    """The result with what DP cost: this round's epsilon and the deployment's total."""
    return replace(result, dp={**result.dp, **dp.summary(),
                               "total_epsilon": spent.total_epsilon, "total_delta": spent.delta,
                               "budget_epsilon": spent.budget_epsilon,
                               "rounds_accounted": spent.rounds})


def wait_for_nodes(grid: Grid, minimum: int, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= minimum:
            return nodes
        if time.monotonic() > deadline:
            raise OppuError(f"Only {len(nodes)} of {minimum} clients joined within "
                            f"{timeout:.0f} s.")
        time.sleep(1.0)


def federation_info(state: StateDir, run_config) -> FederationInfo | None:
    """The served base's address and key; a simulation may run without (``base-path``)."""
    if run_config.get(SimKey.DATA) and not state.info.is_file():
        return None
    return FederationInfo.read(state.root)


def round_config(run_config, info: FederationInfo | None, aggregation: str,
                 state: StateDir) -> RoundConfig:
    """The run config's round fields plus what only the coordinator knows (base, keys)."""
    fields = run_config_overrides(run_config)
    task = get_task(str(fields.get("task", "")))
    if not fields.get("labels") and run_config.get(SimKey.DATA):
        # The data's own label set (e.g. 25 HuffPost categories, not LaMP's official 15).
        fields["labels"] = simulation_labels(str(run_config[SimKey.DATA]), task.name)
    if not fields.get("labels") and task.labels:
        fields["labels"] = tuple(task.labels)  # clients must not add labels of their own
    fields["task"] = task.name
    sealing = public_bytes(load_or_create_sealing_key(state.sealing_key))
    served = {} if info is None else {
        "base_version": info.base_version, "base_address": info.base_address,
        "base_key": info.base_key_pem,
        # One base serves every variant; several: each variant runs on its family's.
        "bases": json.dumps(info.bases, sort_keys=True) if len(info.bases) > 1 else ""}
    return RoundConfig(**fields, **served, aggregation=aggregation,
                       sealing_key=sealing if aggregation == SEALED else b"")


def simulation_labels(data_dir: str, task_name: str) -> tuple[str, ...]:
    """One label set for a simulated cohort: every label the test users' queries offer."""
    from oppu.shared.data.cohort import cohort_labels

    return cohort_labels(data_dir, task_name)
