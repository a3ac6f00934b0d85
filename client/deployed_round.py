"""A deployed client's round: this user's own history, through the one per-user pipeline.

The variants are the round's suite, or for an ordinary round the recipe's one personal
variant (saved as the user's adapter for the task, the one ``oppu-client ask`` uses). The
vector and the metrics it gives are also written to the user's data dir
(``federation/run-<id>-round-<n>.json``): the user's own record, never sent.
"""

from __future__ import annotations

import json
import logging
import time

from flwr.app import Context

from oppu.client.adapter_store import AdapterStore
from oppu.client.node import NodeSettings, fetch_round_base
from oppu.client.round_bases import load_round_bases
from oppu.shared.atomic import write_text_atomic
from oppu.shared.data import read_history, split_history
from oppu.shared.federation.round_config import RoundConfig
from oppu.shared.llm.model import load_base_model
from oppu.shared.metrics import make_metric
from oppu.shared.personal.pipeline import heldout_queries, personal_variant, run_variants
from oppu.shared.personal.selection import SelectionSettings
from oppu.shared.tasks import TaskKind, TaskSpec, get_task

log = logging.getLogger("oppu.client.federation")


def run_deployed_round(round_cfg: RoundConfig, context: Context) -> list[float]:
    """Fetch the round's bases, run its variants on this user's data; the stats vector."""
    node = NodeSettings.from_context(context)
    task = get_task(round_cfg.task)
    labels = round_cfg.labels or tuple(task.labels or ())
    history = _within_labels(task, read_history(node.history_path, task), labels)
    loaded = load_round_bases(round_cfg, lambda version: load_base_model(
        str(fetch_round_base(round_cfg, node, version)), device=node.device)[:2])
    log.info("round %d: base loaded; personalizing on %d history items (%d base(s) for the "
             "round's prompt families)", round_cfg.round, len(history),
             len(set(loaded.versions.values())) or 1)
    recipe = round_cfg.recipe()
    primary = None if round_cfg.suite else personal_variant(recipe).name
    variants = round_cfg.blocks if round_cfg.suite else (primary,)
    started = time.perf_counter()
    train, heldout = split_history(history, round_cfg.holdout_value)
    queries = heldout_queries(task, train, heldout, labels or None)
    if round_cfg.dp_variance > 0 and round_cfg.dp_max_queries:
        # DP: one user counts at most this many queries (the newest) in the round's sum.
        queries = queries[-round_cfg.dp_max_queries:]
    # An ordinary round is the user's own adapter: chosen locally, kept only where it beats
    # the base; a suite is a benchmark and reports every trained adapter as is.
    store, base_source = AdapterStore(node.data_dir), f"federation:{_trained_on(round_cfg)}"
    resume = primary is not None and _continues(store, task.name, primary, base_source)
    outcome = run_variants(loaded.model, loaded.tokenizer, task, train, queries, variants,
                           recipe, labels=labels or None, store=store, primary=primary,
                           base_source=base_source, resume=resume,
                           selection=None if round_cfg.suite else SelectionSettings(),
                           bases=loaded.bases)
    metric = make_metric(task.kind, labels)
    vector = outcome.vector(metric, round_cfg.pairs)
    metrics = {v: r.metrics for v, r in outcome.results.items()}
    seconds = time.perf_counter() - started
    record = node.data_dir / "federation" / f"run-{context.run_id}-round-{round_cfg.round}.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(record, json.dumps({
        "run_id": str(context.run_id), "node_id": str(context.node_id),
        "round": round_cfg.round, "task": task.name, "aggregation": round_cfg.aggregation,
        "stat_names": round_cfg.metric().stat_names(), "vector": vector,
        "metrics": metrics if round_cfg.suite else metrics[primary],
        "train_items": outcome.train_items, "evaluated": outcome.queries,
        "continued": resume, "trained_examples": {
            v: r.examples if r is not None else 0 for v, r in outcome.reports.items()},
        "selection": {v: s.to_dict() for v, s in outcome.selections.items()},
        "seconds": seconds}, indent=2))
    log.info("round %d done in %.0f s; your metrics: %s", round_cfg.round, seconds, metrics)
    return vector


def _continues(store: AdapterStore, name: str, variant: str, base_source: str) -> bool:
    """Whether this round continues the user's adapter from an earlier round (the rule of
    ``train --continue``: on the items it has not seen): the same variant on the same base
    version. A new base (``oppu-coordinator publish``) or recipe starts a fresh adapter."""
    if not store.exists(name):
        return False
    meta = store.metadata(name)
    return meta.get("base_model") == base_source and meta.get("variant") == variant


def _trained_on(round_cfg: RoundConfig) -> str:
    """The version the user's own adapter is trained on (what ``ask`` must load it onto)."""
    if round_cfg.suite:
        return round_cfg.base_version
    return round_cfg.base_version_for(round_cfg.needed_bases()[0])


def _within_labels(task: TaskSpec, history: list[dict], labels: tuple[str, ...]
                   ) -> list[dict]:
    """Drop items whose gold label is outside the cohort's label set (they cannot be scored)."""
    if not labels or task.target_field is None or task.kind != TaskKind.CLASSIFICATION:
        return history
    allowed = set(labels)
    kept = [i for i in history if str(i.get(task.target_field, "")).strip() in allowed]
    if len(kept) < len(history):
        log.warning("%d history items have labels outside this round's label set and "
                    "are left out of it.", len(history) - len(kept))
    return kept
