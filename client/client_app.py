"""The client's Flower ClientApp: personalize locally, answer with metric statistics only.

A round's message carries only the round configuration. The user's data comes from the
node's own history file (deployment, ``deployed_round``) or, in a simulation, from the LaMP
test user its partition names (``simulation``); both run the one per-user pipeline. The reply
holds the statistics vector and nothing else: masked by SecAgg+ (``train``), or sealed to the
coordinator's X25519 key (``train.sealed``); with DP on, bounded and noised first
(``dp_noise``). ``audit-log`` in the node config makes the
outermost mod log every reply in full (``audit``).
"""

from __future__ import annotations

import logging

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
from flwr.compat.common import recorddict_compat as compat

from oppu.client.audit import audit_mod
from oppu.shared.federation.keys import (
    ROUND_RECORD,
    SEALED_ACTION,
    SEALED_METRICS,
    SEALED_RECORD,
)
from oppu.shared.federation.round_config import RoundConfig
from oppu.shared.federation.secagg_encoding import encode_noisy, encode_stats
from oppu.shared.llm.threads import apply_cpu_defaults

log = logging.getLogger("oppu.client.federation")
if not log.handlers:  # the ClientApp's stderr ends up in the SuperNode's log
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(levelname)s oppu: %(message)s"))
    log.addHandler(_handler)
    log.setLevel(logging.INFO)
    log.propagate = False

app = ClientApp(mods=[audit_mod])


@app.train(mods=[secaggplus_mod])
def train(msg: Message, context: Context) -> Message:
    """SecAgg+ path: reply in the FitRes layout; the stats vector is the (masked) array."""
    fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
    round_cfg = RoundConfig.from_config(fitins.config)
    encoded = upload_vector(_personalize_safely(round_cfg, context), round_cfg, sealed=False)
    # num_examples=1 and no metrics: both travel in clear, so they say nothing about the user.
    fitres = FitRes(Status(Code.OK, ""), ndarrays_to_parameters([np.asarray(encoded)]),
                    num_examples=1, metrics={})
    return Message(compat.fitres_to_recorddict(fitres, keep_input=False), reply_to=msg)


@app.train(SEALED_ACTION)
def train_sealed(msg: Message, context: Context) -> Message:
    """Small-cohort path: the stats vector sealed to the coordinator's X25519 key."""
    from oppu.shared.federation.sealing import seal_vector

    round_cfg = RoundConfig.from_config(msg.content.config_records[ROUND_RECORD])
    vector = upload_vector(_personalize_safely(round_cfg, context), round_cfg, sealed=True)
    sealed = seal_vector(vector, round_cfg.sealing_key, run_id=context.run_id,
                         round_=round_cfg.round, node_id=context.node_id)
    return Message(RecordDict({SEALED_RECORD: ConfigRecord({SEALED_METRICS: sealed})}),
                   reply_to=msg)


def upload_vector(vector: list[float], round_cfg: RoundConfig, *, sealed: bool) -> list[float]:
    """What leaves the client: the vector to seal, or its SecAgg+ encoding.

    The one place a reply gets its DP noise (both paths), after the user's pipeline: bounded,
    on SecAgg+'s integer grid, plus this client's Skellam share, all of it when sealed
    (``dp_noise``). With DP off the vector goes out exactly as before.
    """
    if round_cfg.dp_variance > 0:
        from oppu.shared.federation.dp_noise import privatize

        noisy = privatize(vector, round_cfg, sealed=sealed)
        return noisy if sealed else encode_noisy(noisy, round_cfg.stat_bound, round_cfg.clip)
    if sealed:
        return vector
    try:
        return encode_stats(vector, round_cfg.stat_bound, round_cfg.clip)
    except ValueError:  # its message would quote this user's statistic
        raise RuntimeError("a statistic exceeds the round's stat-bound; the coordinator must "
                           "raise stat-bound") from None


def _personalize_safely(round_cfg: RoundConfig, context: Context) -> list[float]:
    """Run the round; on failure say only the error's type (its text may quote the history)."""
    try:
        return personalize_round(round_cfg, context)
    except Exception as exc:
        log.exception("this round failed on this client")
        raise RuntimeError(f"the oppu client could not finish the round "
                           f"({type(exc).__name__}); details are in that client's log") from None


def personalize_round(round_cfg: RoundConfig, context: Context) -> list[float]:
    """This user's round, from the simulation partition or the node's own history."""
    apply_cpu_defaults()
    from oppu.client.simulation import is_simulation, run_simulated_user
    from oppu.shared.cli_support import quiet_libraries

    quiet_libraries()
    if is_simulation(context):
        return run_simulated_user(round_cfg, context)
    from oppu.client.deployed_round import run_deployed_round

    return run_deployed_round(round_cfg, context)
