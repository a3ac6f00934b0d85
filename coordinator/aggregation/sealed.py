"""Sealed-metrics aggregation: each client's vector sealed to the coordinator's key.

For cohorts too small for SecAgg+ (a sum of two reveals the other's vector): every client
seals its statistics to the coordinator's X25519 key, bound to this run, round and node, and
the coordinator opens, checks and sums them. A reply that cannot be opened or holds impossible
statistics is rejected; a node that errs or stays silent counts as a failure. With DP on each
vector carries its client's full noise (local DP), so only its shape can be checked.
"""

from __future__ import annotations

from logging import WARNING

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from flwr.app import Context, Message, MessageType, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid

from oppu.coordinator.aggregation.base import Collected, Timeouts
from oppu.coordinator.state import StateDir
from oppu.shared.errors import OppuError
from oppu.shared.federation.keys import (
    ROUND_RECORD,
    SEALED_ACTION,
    SEALED_METRICS,
    SEALED_RECORD,
)
from oppu.shared.federation.round_config import RoundConfig
from oppu.shared.federation.sealing import SealingError, load_or_create_sealing_key, open_vector
from oppu.shared.metrics import MetricSpec, Stats
from oppu.shared.noisy_stats import read_noisy


class SealedAggregator:
    """Sum of the clients' statistics, each sealed to the coordinator's key and checked."""

    def collect(self, grid: Grid, context: Context, round_cfg: RoundConfig,
                metric: MetricSpec, nodes: list[int], state: StateDir,
                timeouts: Timeouts) -> Collected:
        key = load_or_create_sealing_key(state.sealing_key)
        messages = [Message(content=RecordDict({ROUND_RECORD: round_cfg.to_config_record()}),
                            dst_node_id=node,
                            message_type=f"{MessageType.TRAIN}.{SEALED_ACTION}",
                            group_id=str(round_cfg.round))
                    for node in nodes]
        total, clients, rejected, failures = metric.new_stats(), 0, 0, 0
        timeout = timeouts.train  # one stage: the clients train, evaluate and seal
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
                stats = read_sealed_reply(reply.content, key, run_id=context.run_id,
                                          round_cfg=round_cfg, node=node, metric=metric)
            except (SealingError, ValueError) as exc:
                rejected += 1
                log(WARNING, "Rejected client %s's reply: %s", node, exc)
                continue
            total = metric.add(total, stats)
            clients += 1
        if clients == 0:
            raise OppuError(f"No client returned valid sealed metrics ({failures} failed, "
                            f"{rejected} rejected).")
        return Collected(sums=total, clients=clients, rejected=rejected, failures=failures)


def read_sealed_reply(content: RecordDict, key: X25519PrivateKey, *, run_id: int,
                      round_cfg: RoundConfig, node: int, metric: MetricSpec) -> Stats:
    """A client's statistics from its reply, or ``SealingError``/``InputError`` saying why
    not: whatever a client sends (a missing record, a value of another type, bytes that are
    not a sealed vector, impossible sums) is refused, never a crash of the round."""
    record = content.config_records.get(SEALED_RECORD)
    sealed = None if record is None else record.get(SEALED_METRICS)
    if not isinstance(sealed, bytes):
        raise SealingError(f"The reply carries no sealed metrics ({SEALED_RECORD}/"
                           f"{SEALED_METRICS} is {type(sealed).__name__}, not bytes).")
    vector = open_vector(sealed, key, run_id=run_id, round_=round_cfg.round, node_id=node)
    return (read_noisy(metric, vector) if round_cfg.dp_variance > 0  # noised
            else metric.from_vector(vector))  # impossible sums refused
