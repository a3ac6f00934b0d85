"""The coordinator's Flower ServerApp: ask every client to personalize, learn only the sums.

One round. The round's configuration goes out as a ConfigRecord; what comes back is each
client's metric-statistics vector, either masked under SecAgg+ (three clients or more: the
server only ever holds the sum) or sealed to the coordinator's X25519 key (smaller cohorts).
The cohort's metric table is computed from the sum, logged, and written to the state dir.

Faults: a client that errs, is killed or hangs gets no say in the sum. Flower answers for a
node that stopped heartbeating (within ~60 s) and the round's ``timeout`` bounds the rest, so
the round ends with the others; SecAgg+ reconstructs a dropped client's masks from the
survivors' shares. The result says how many clients were asked, how many were summed and how
many failed or dropped out; with fewer than ``min-clients`` summed nothing is published.
"""

from __future__ import annotations

import time
from logging import INFO, WARNING

from flwr.app import Context, Message, MessageType, RecordDict
from flwr.common import FitRes, Parameters, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.logger import log
from flwr.server import LegacyContext, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.serverapp import Grid, ServerApp

from oppu.coordinator.federation import (
    CohortResult,
    FederationInfo,
    StateDir,
    format_table,
    write_result,
)
from oppu.shared.block_metric import BlockMetric
from oppu.shared.errors import OppuError
from oppu.shared.federation import (
    AUTO,
    MODULUS_RANGE,
    QUANTIZATION_RANGE,
    ROUND_RECORD,
    SEALED,
    SEALED_ACTION,
    SEALED_METRICS,
    SEALED_RECORD,
    SECAGG,
    SECAGG_MAX_WEIGHT,
    SENTINEL,
    RoundConfig,
    RunKey,
    SimKey,
    choose_aggregation,
    decode_mean,
    run_config_overrides,
    secagg_max_error,
    secagg_shares,
    snap_whole,
)
from oppu.shared.federation.sealing import (
    SealingError,
    load_or_create_sealing_key,
    open_vector,
    public_bytes,
)
from oppu.shared.metrics import MetricSpec, make_metric
from oppu.shared.paths import oppu_home
from oppu.shared.tasks import get_task

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    started = time.perf_counter()
    config = context.run_config
    state = StateDir(str(config.get(RunKey.STATE_DIR, "")) or oppu_home() / "coordinator")
    info = federation_info(state, config)
    timeout = float(config.get(RunKey.TIMEOUT, 1800))
    min_clients = int(config.get(RunKey.MIN_CLIENTS, 3))
    nodes = wait_for_nodes(grid, min_clients, timeout)
    aggregation = choose_aggregation(str(config.get(RunKey.AGGREGATION, AUTO)), len(nodes))
    round_cfg = round_config(config, info, aggregation, state)
    metric = round_metric(round_cfg)
    log(INFO, "Round %d of %s for %d clients, %s", round_cfg.round, round_cfg.task,
        len(nodes), aggregation)
    if aggregation == SECAGG:
        sums, clients, failures = secagg_sum(grid, context, round_cfg, metric, len(nodes),
                                             timeout)
        rejected = 0
    else:
        sums, clients, rejected, failures = sealed_sum(grid, context, round_cfg, metric,
                                                       nodes, state, timeout)
    if clients < min_clients:  # a "cohort" of fewer would say too much about each member
        raise OppuError(f"Only {clients} of the {min_clients} clients required returned valid "
                        f"statistics ({failures} failed, {rejected} rejected); nothing was "
                        "published.")
    result = CohortResult(
        run_id=str(context.run_id), round=round_cfg.round, task=round_cfg.task,
        aggregation=aggregation, clients=clients, asked=len(nodes),
        stat_names=metric.stat_names(),
        sums=metric.to_vector(sums), metrics=metric.compute(sums), rejected=rejected,
        variants=metric.per_block(sums) if isinstance(metric, BlockMetric) else {},
        failures=failures, base_version=round_cfg.base_version,
        seconds=time.perf_counter() - started, config=round_cfg.public_summary())
    path = write_result(state, result)
    log(INFO, "%s\nWritten to %s", format_table(result), path)


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


def round_metric(round_cfg: RoundConfig) -> MetricSpec:
    """The task's metric; with a suite, one block of it per variant."""
    inner = make_metric(get_task(round_cfg.task).kind, round_cfg.labels)
    return BlockMetric(inner, round_cfg.blocks) if round_cfg.suite else inner


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
        "base_key": info.base_key_pem}
    return RoundConfig(**fields, **served, aggregation=aggregation,
                       sealing_key=sealing if aggregation == SEALED else b"")


def simulation_labels(data_dir: str, task_name: str) -> tuple[str, ...]:
    """One label set for a simulated cohort: every label the test users' queries offer."""
    from oppu.shared.data.cohort import cohort_labels

    return cohort_labels(data_dir, task_name)


# ---- SecAgg+ -------------------------------------------------------------------------------
class _KeepAggregate(FedAvg):
    """FedAvg whose aggregate_fit keeps what SecAgg+ unmasked: the mean of the encodings."""

    def __init__(self, round_cfg: RoundConfig, clients: int, initial: Parameters):
        super().__init__(fraction_fit=0.0, fraction_evaluate=0.0, min_fit_clients=clients,
                         min_available_clients=clients, initial_parameters=initial,
                         on_fit_config_fn=lambda _round: round_cfg.to_config())
        self.mean: list[float] | None = None
        self.clients = 0

    def aggregate_fit(self, server_round, results: list[tuple[object, FitRes]], failures):
        # ``failures`` is no count of clients: Flower 1.41 lists a client that dropped while
        # masking twice. The caller counts dropouts as sampled minus aggregated instead.
        if not results:
            return None, {}
        self.clients = len(results)
        # SecAgg+ hands every result the same unmasked aggregate; no averaging here.
        parameters = results[0][1].parameters
        self.mean = [float(v) for v in parameters_to_ndarrays(parameters)[0].ravel()]
        return parameters, {}


def secagg_sum(grid: Grid, context: Context, round_cfg: RoundConfig, metric: MetricSpec,
               clients: int, timeout: float):
    """Sum of the clients' statistics through SecAgg+ (Flower's legacy workflow)."""
    import numpy as np

    size = len(metric.stat_names())  # with a suite: every variant's block, side by side
    max_error = secagg_max_error(clients, round_cfg.stat_bound)
    if max_error >= 0.5:
        log(WARNING, "With %d clients and stat-bound %g, summed counts may be off by up to "
            "%.2f; lower stat-bound for exact counts.", clients, round_cfg.stat_bound, max_error)
    strategy = _KeepAggregate(round_cfg, clients,
                              ndarrays_to_parameters([np.full(size, SENTINEL)]))
    shares, threshold = secagg_shares(clients)
    legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=1),
                           strategy=strategy)
    workflow = DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(
        num_shares=shares, reconstruction_threshold=threshold, max_weight=SECAGG_MAX_WEIGHT,
        clipping_range=round_cfg.clip, quantization_range=QUANTIZATION_RANGE,
        modulus_range=MODULUS_RANGE, timeout=timeout))
    workflow(grid, legacy)
    mean = strategy.mean
    if mean is None or len(mean) != size or min(mean) <= SENTINEL / 2:
        raise OppuError(
            "SecAgg+ returned no aggregate (the server still holds its initial arrays): too "
            f"many of the {clients} clients failed or dropped out for the reconstruction "
            f"threshold of {threshold}. See the clients' logs; nothing was written.")
    failures = clients - strategy.clients
    if failures:
        log(WARNING, "%d of %d clients dropped out of SecAgg+; the sum covers the other %d "
            "(their masks were reconstructed from the survivors' shares).", failures, clients,
            strategy.clients)
    decoded = decode_mean(mean, strategy.clients, round_cfg.stat_bound, round_cfg.clip)
    sums = snap_whole(metric, dict(zip(metric.stat_names(), decoded, strict=True)),
                      secagg_max_error(strategy.clients, round_cfg.stat_bound))
    metric.validate_stats(sums)  # a client that lied can still make the sum impossible
    return sums, strategy.clients, failures


# ---- sealed metrics ------------------------------------------------------------------------
def sealed_sum(grid: Grid, context: Context, round_cfg: RoundConfig, metric: MetricSpec,
               nodes: list[int], state: StateDir, timeout: float):
    """Sum of the clients' statistics, each sealed to the coordinator's key and checked."""
    key = load_or_create_sealing_key(state.sealing_key)
    messages = [Message(content=RecordDict({ROUND_RECORD: round_cfg.to_config_record()}),
                        dst_node_id=node, message_type=f"{MessageType.TRAIN}.{SEALED_ACTION}",
                        group_id=str(round_cfg.round))
                for node in nodes]
    total, clients, rejected, failures = metric.new_stats(), 0, 0, 0
    replies = list(grid.send_and_receive(messages, timeout=timeout))
    # The SuperLink answers for a node that stopped heartbeating (killed, hung, offline)
    # with an error reply of its own: map replies back to nodes by the message they answer.
    asked = {m.metadata.message_id: m.metadata.dst_node_id for m in messages}
    answered = {asked.get(r.metadata.reply_to_message_id, r.metadata.src_node_id)
                for r in replies}
    silent = [node for node in nodes if node not in answered]
    if silent:
        failures += len(silent)
        log(WARNING, "%d of %d clients sent no reply within the %.0f s timeout: %s",
            len(silent), len(nodes), timeout, ", ".join(map(str, silent)))
    for reply in replies:
        node = asked.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
        if reply.has_error():
            failures += 1
            log(WARNING, "Client %s failed: %s", node, reply.error.reason)
            continue
        try:
            sealed = reply.content.config_records[SEALED_RECORD][SEALED_METRICS]
            vector = open_vector(sealed, key, run_id=context.run_id, round_=round_cfg.round,
                                 node_id=node)
            stats = metric.from_vector(vector)  # validate_stats: impossible sums are refused
        except (KeyError, SealingError, ValueError) as exc:
            rejected += 1
            log(WARNING, "Rejected client %s's reply: %s", node, exc)
            continue
        total = metric.add(total, stats)
        clients += 1
    if clients == 0:
        raise OppuError(f"No client returned valid sealed metrics ({failures} failed, "
                        f"{rejected} rejected).")
    return total, clients, rejected, failures
