"""The client's Flower ClientApp: personalize locally, answer with metric statistics only.

A round's message carries only the round configuration. The client reads its history from
the path in its own node config, fetches the coordinator's base over oppu's BaseStore (once
per version, verified against the coordinator's signing key), trains its private adapter and
evaluates it on its held-out items. History, profile and adapter stay in the client's data
dir; the reply holds the statistics vector and nothing else: masked by SecAgg+ (``train``),
or sealed to the coordinator's X25519 key (``train.sealed``). Flower starts a fresh process
per message, so the model is loaded from disk each round (the base is cached).

``audit-log`` in the node config makes the outermost mod append every reply's full content
to a local file, so a user can check exactly what left the machine.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
from flwr.compat.common import recorddict_compat as compat

from oppu.shared.federation import (
    ROUND_RECORD,
    SEALED_ACTION,
    SEALED_METRICS,
    SEALED_RECORD,
    NodeKey,
    RoundConfig,
    encode_stats,
)
from oppu.shared.llm.threads import apply_cpu_defaults

log = logging.getLogger("oppu.client.federation")
if not log.handlers:  # the ClientApp's stderr ends up in the SuperNode's log
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(levelname)s oppu: %(message)s"))
    log.addHandler(_handler)
    log.setLevel(logging.INFO)
    log.propagate = False


@dataclass(frozen=True)
class NodeSettings:
    """The client's private settings, from ``--node-config`` (never sent anywhere)."""

    history_path: Path
    data_dir: Path
    ca_path: Path | None
    insecure: bool
    base_address: str
    coordinator_key: Path | None
    base_cache: Path | None
    audit_log: Path | None
    device: str

    @classmethod
    def from_context(cls, context: Context) -> NodeSettings:
        from oppu.shared.paths import user_dir

        node = context.node_config

        def path(key: str) -> Path | None:
            value = str(node.get(key, "") or "")
            return Path(value).expanduser() if value else None

        history = path(NodeKey.HISTORY_PATH)
        if history is None:
            raise ValueError(f"This SuperNode has no {NodeKey.HISTORY_PATH} in its node config; "
                             "start it with `oppu-client join --history FILE`.")
        return cls(history_path=history, data_dir=path(NodeKey.DATA_DIR) or user_dir(),
                   ca_path=path(NodeKey.CA_PATH), insecure=bool(node.get(NodeKey.INSECURE)),
                   base_address=str(node.get(NodeKey.BASE_ADDRESS, "") or ""),
                   coordinator_key=path(NodeKey.COORDINATOR_KEY),
                   base_cache=path(NodeKey.BASE_CACHE), audit_log=path(NodeKey.AUDIT_LOG),
                   device=str(node.get(NodeKey.DEVICE, "auto")))


def audit_mod(msg: Message, context: Context, call_next) -> Message:
    """Append what this client sends back (content and all) to the node's audit log."""
    target = context.node_config.get(NodeKey.AUDIT_LOG)
    stage = _secagg_stage(msg)  # read first: the mods below may consume the instruction
    try:
        reply = call_next(msg, context)
    except Exception as exc:  # Flower turns it into an error reply carrying this text
        if target:
            _audit(Path(str(target)), msg, context, None, f"{type(exc).__name__}: {exc}",
                   stage)
        raise
    if target:
        _audit(Path(str(target)), msg, context, reply,
               reply.error.reason if reply.has_error() else None, stage)
    return reply


def _audit(path: Path, msg: Message, context: Context, reply: Message | None,
           error: str | None, stage: str | None = None) -> None:
    content = b""
    if reply is not None and reply.has_content():
        from flwr.common.serde import recorddict_to_proto

        content = recorddict_to_proto(reply.content).SerializeToString()
    entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
             "run_id": context.run_id, "message_type": msg.metadata.message_type,
             "group_id": msg.metadata.group_id, "stage": stage,
             "records": sorted(reply.content.keys()) if content else [],
             "error": error, "content_b64": base64.b64encode(content).decode()}
    path = path.expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")


def _secagg_stage(msg: Message) -> str | None:
    """The SecAgg+ stage this reply answers (setup, share_keys, ...); None outside SecAgg+.

    Lets a user (or a test) see how far a round got: e.g. that keys were shared before a
    client dropped out.
    """
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key

    if not msg.has_content() or RECORD_KEY_CONFIGS not in msg.content.config_records:
        return None
    stage = msg.content.config_records[RECORD_KEY_CONFIGS].get(Key.STAGE)
    return str(stage) if stage is not None else None


app = ClientApp(mods=[audit_mod])


@app.train(mods=[secaggplus_mod])
def train(msg: Message, context: Context) -> Message:
    """SecAgg+ path: reply in the FitRes layout; the stats vector is the (masked) array."""
    fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
    round_cfg = RoundConfig.from_config(fitins.config)
    vector = _personalize_safely(round_cfg, context)
    try:
        encoded = encode_stats(vector, round_cfg.stat_bound, round_cfg.clip)
    except ValueError:  # its message would quote this user's statistic
        raise RuntimeError("a statistic exceeds the round's stat-bound; the coordinator must "
                           "raise stat-bound") from None
    # num_examples=1 and no metrics: both travel in clear, so they say nothing about the user.
    fitres = FitRes(Status(Code.OK, ""), ndarrays_to_parameters([np.asarray(encoded)]),
                    num_examples=1, metrics={})
    return Message(compat.fitres_to_recorddict(fitres, keep_input=False), reply_to=msg)


@app.train(SEALED_ACTION)
def train_sealed(msg: Message, context: Context) -> Message:
    """Small-cohort path: the stats vector sealed to the coordinator's X25519 key."""
    from oppu.shared.federation.sealing import seal_vector

    round_cfg = RoundConfig.from_config(msg.content.config_records[ROUND_RECORD])
    vector = _personalize_safely(round_cfg, context)
    sealed = seal_vector(vector, round_cfg.sealing_key, run_id=context.run_id,
                         round_=round_cfg.round, node_id=context.node_id)
    return Message(RecordDict({SEALED_RECORD: ConfigRecord({SEALED_METRICS: sealed})}),
                   reply_to=msg)


def _personalize_safely(round_cfg: RoundConfig, context: Context) -> list[float]:
    """Run the round; on failure say only the error's type (its text may quote the history)."""
    try:
        return personalize_round(round_cfg, context)
    except Exception as exc:
        log.exception("this round failed on this client")
        raise RuntimeError(f"the oppu client could not finish the round "
                           f"({type(exc).__name__}); details are in that client's log") from None


def personalize_round(round_cfg: RoundConfig, context: Context) -> list[float]:
    """Fetch the base, train and evaluate this user's adapter; the stats vector comes back.

    The vector and the metrics it gives are also written to the user's data dir
    (``federation/run-<id>-round-<n>.json``): the user's own record, never sent.
    """
    apply_cpu_defaults()
    from oppu.client.simulation import is_simulation, run_simulated_user
    from oppu.shared.atomic import write_text_atomic
    from oppu.shared.block_metric import BlockMetric
    from oppu.shared.cli_support import quiet_libraries
    from oppu.shared.data import read_history
    from oppu.shared.llm.model import load_base_model
    from oppu.shared.metrics import make_metric
    from oppu.shared.tasks import get_task

    quiet_libraries()
    settings = round_settings(round_cfg)
    if is_simulation(context):
        return run_simulated_user(round_cfg, context, settings)
    node = NodeSettings.from_context(context)
    task = get_task(round_cfg.task)
    labels = round_cfg.labels or tuple(task.labels or ())
    history = _within_labels(task, read_history(node.history_path, task), labels)
    base_dir = fetch_round_base(round_cfg, node)
    model, tokenizer, _plan = load_base_model(str(base_dir), device=node.device)
    log.info("round %d: base loaded; personalizing on %d history items", round_cfg.round,
             len(history))
    metric = make_metric(task.kind, labels)
    if round_cfg.suite:
        local = _deployed_suite(model, tokenizer, task, history, settings, round_cfg, node,
                                labels, metric)
    else:
        local = _personal_round(model, tokenizer, task, history, settings, round_cfg, node,
                                labels, metric)
    vector = local.pop("vector")
    names = BlockMetric(metric, round_cfg.blocks).stat_names() if round_cfg.suite \
        else metric.stat_names()
    record = node.data_dir / "federation" / f"run-{context.run_id}-round-{round_cfg.round}.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(record, json.dumps({
        "run_id": str(context.run_id), "node_id": str(context.node_id),
        "round": round_cfg.round, "task": task.name, "aggregation": round_cfg.aggregation,
        "stat_names": names, "vector": vector, **local}, indent=2))
    log.info("round %d done in %.0f s; your metrics: %s", round_cfg.round, local["seconds"],
             local["metrics"])
    return vector


def _personal_round(model, tokenizer, task, history, settings, round_cfg: RoundConfig,
                    node: NodeSettings, labels: tuple[str, ...], metric) -> dict:
    """An ordinary round: this user's adapter on their held-out items (vector and record)."""
    from oppu.client.adapter_store import AdapterStore
    from oppu.shared.personal.pipeline import personalize_user

    outcome = personalize_user(
        model, tokenizer, task, history, settings, store=AdapterStore(node.data_dir),
        base_source=f"federation:{round_cfg.base_version}", holdout=round_cfg.holdout_value,
        eval_k=round_cfg.k, evaluate_baseline=False, labels=labels or None,
        show_progress=False)
    stats = outcome.personal.stats if outcome.personal is not None else metric.new_stats()
    return {"vector": metric.to_vector(stats), "metrics": metric.compute(stats),
            "train_items": outcome.train_items, "evaluated": outcome.evaluated_queries,
            "seconds": outcome.seconds}


def _deployed_suite(model, tokenizer, task, history, settings, round_cfg: RoundConfig,
                    node: NodeSettings, labels: tuple[str, ...], metric) -> dict:
    """A suite round on a real user's machine: every variant on their held-out items."""
    from oppu.client.adapter_store import AdapterStore
    from oppu.shared.data import split_history
    from oppu.shared.personal.pipeline import heldout_queries
    from oppu.shared.personal.suite import run_suite

    started = time.perf_counter()
    train, heldout = split_history(history, round_cfg.holdout_value)
    queries = heldout_queries(task, train, heldout, labels or None)
    outcome = run_suite(model, tokenizer, task, train, queries, round_cfg.blocks, settings,
                        labels=labels or None, store=AdapterStore(node.data_dir))
    return {"vector": outcome.vector(metric),
            "metrics": {v: r.metrics for v, r in outcome.results.items()},
            "train_items": outcome.train_items, "evaluated": outcome.queries,
            "seconds": time.perf_counter() - started}


def round_settings(round_cfg: RoundConfig):
    """The round's private-adapter recipe as ``PersonalizeSettings``."""
    from oppu.shared.llm.training import TrainSettings
    from oppu.shared.personal.peft_methods import PeftSettings
    from oppu.shared.personal.private_adapter import PersonalizeSettings

    return PersonalizeSettings(
        peft=PeftSettings(method=round_cfg.peft_method, r=round_cfg.lora_r,
                          alpha=round_cfg.lora_alpha),
        train=TrainSettings(lr=round_cfg.lr, epochs=round_cfg.epochs or None,
                            batch_size=round_cfg.batch_size,
                            max_steps=round_cfg.max_steps or None, seed=round_cfg.seed),
        k=round_cfg.k, profile=round_cfg.profile_mode)


def _within_labels(task, history: list[dict], labels: tuple[str, ...]) -> list[dict]:
    """Drop items whose gold label is outside the cohort's label set (they cannot be scored)."""
    if not labels or task.target_field is None or task.kind.value != "classification":
        return history
    allowed = set(labels)
    kept = [i for i in history if str(i.get(task.target_field, "")).strip() in allowed]
    if len(kept) < len(history):
        log.warning("%d history items have labels outside this round's label set and "
                    "are left out of it.", len(history) - len(kept))
    return kept


def fetch_round_base(round_cfg: RoundConfig, node: NodeSettings) -> Path:
    """The round's base, from the local cache or the coordinator's BaseStore, verified."""
    from oppu.client.base_fetch import fetch_base
    from oppu.shared.errors import OppuError

    address = node.base_address or round_cfg.base_address
    key = node.coordinator_key if node.coordinator_key is not None else round_cfg.base_key
    if not address or not key:
        raise OppuError("The round names no base address or coordinator key.")
    root_cert = node.ca_path.read_bytes() if node.ca_path is not None else None
    result = fetch_base(address, coordinator_public_key=key, cache_root=node.base_cache,
                        root_cert=None if node.insecure else root_cert,
                        insecure=node.insecure, progress=False)
    if round_cfg.base_version and result.version != round_cfg.base_version:
        raise OppuError(f"The coordinator serves base {result.version[:12]} but the round "
                        f"asks for {round_cfg.base_version[:12]}.")
    return result.path
