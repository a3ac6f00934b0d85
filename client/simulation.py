"""Simulation mode: a virtual Flower client plays one LaMP test user (partition id -> user).

The same ClientApp as deployment, fed differently: the user's history and queries come from
the run's LaMP directory (``sim-data``) instead of the node's own JSONL, and the round
usually names a *suite* of variants, so one secure sum yields the cohort's whole Table 1.
The base model stays loaded for the life of the simulation worker (Ray keeps workers
alive), so it loads once per worker, not once per user.

Each user's outcome is written to ``<sim-out>/users/<user>/suite-<key>.json`` (the benchmark
owner's local record, never sent). ``key`` hashes everything that shapes the result, so a
rerun of the same experiment answers from the record instead of retraining: resume. Each
variant's predictions are kept too (``variant_cache``), so another suite sharing variants
with an earlier run computes only the new ones.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from dataclasses import fields as dataclass_fields
from dataclasses import replace
from pathlib import Path

from flwr.app import Context

from oppu.client.round_bases import RoundBases, load_round_bases
from oppu.client.variant_cache import load_variant, save_variant, variant_key
from oppu.shared.data.items import mean_item_words
from oppu.shared.federation.keys import PERSONAL_BLOCK, NodeConfigKey, SimKey
from oppu.shared.federation.round_config import RoundConfig
from oppu.shared.resources import process_peak_rss_mb, process_rss_bytes, release_memory
from oppu.shared.timing import phase, time_split

log = logging.getLogger("oppu.client.federation")

PARTITION_ID = "partition-id"
"""Flower's node-config key for a virtual client's index in simulation."""
RECORD_FORMAT = 2
"""2: records carry each compared pair's statistics (``pairs``)."""

_MODELS: dict[tuple[str, str], tuple] = {}
"""(base, device) -> (model, tokenizer): every base of the run, kept for the life of the
worker process."""
_LOADS = [0]
"""How many times this worker loaded a base (reported per user: it should stay at the
number of bases the run names)."""


def is_simulation(context: Context) -> bool:
    return bool(context.run_config.get(SimKey.DATA)) and PARTITION_ID in context.node_config


def sim_out(context: Context, task: str) -> Path:
    from oppu.shared.paths import oppu_home

    configured = str(context.run_config.get(SimKey.OUT, "") or "")
    return Path(configured).expanduser() if configured else oppu_home() / "simulation" / task


def safe_name(user_id: str) -> str:
    """A user id as a directory name (LaMP ids are digits, other data may not be)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", user_id).strip("._") or "user"
    if cleaned == user_id:
        return cleaned
    return f"{cleaned}-{hashlib.sha1(user_id.encode()).hexdigest()[:8]}"  # keep ids distinct


def _shaping_fields(round_cfg: RoundConfig, context: Context) -> dict:
    """What a user's predictions depend on: the task, the label set, the recipe and the
    data settings. Fields that shape only what is sent (aggregation, bounds, keys) or are
    added later keep earlier records and cached results valid."""
    from oppu.shared.federation.keys import RoundKey
    from oppu.shared.federation.round_config import RECIPE_KEYS

    shaping = {*RECIPE_KEYS.values(), RoundKey.TASK, RoundKey.LABELS}
    fields = {f.name: getattr(round_cfg, f.name) for f in dataclass_fields(round_cfg)
              if f.metadata["key"] in shaping}
    fields["sim"] = {k: str(context.run_config.get(k, "")) for k in
                     (SimKey.DATA, SimKey.MAX_HISTORY, SimKey.BASE_PATH, SimKey.BASE_MODEL,
                      SimKey.SHIFT)}
    fields["key_format"] = RECORD_FORMAT
    return fields


def _pooled_digest(context: Context) -> str:
    """The pooled baseline adapter by content, not path: retrained for another cohort at the
    same path, it is another experiment."""
    pooled = Path(str(context.run_config.get(SimKey.POOLED_ADAPTER, "") or ""))
    weights = pooled / "adapter_model.safetensors"
    return hashlib.sha256(weights.read_bytes()).hexdigest() \
        if str(pooled) not in ("", ".") and weights.is_file() else ""


def suite_key(round_cfg: RoundConfig, context: Context) -> str:
    """A digest of what determines this user's record for the round's whole suite."""
    fields = {**_shaping_fields(round_cfg, context), "suite": round_cfg.suite,
              "base_version": round_cfg.base_version, "bases": round_cfg.base_versions(),
              "pooled": _pooled_digest(context)}
    text = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def variant_keys(round_cfg: RoundConfig, context: Context,
                 variants: tuple[str, ...]) -> dict[str, str]:
    """Variant -> the key of its cached result (``variant_cache``): what shapes every
    variant, plus the variant's own base (and, for the pooled baseline, its adapter)."""
    from oppu.shared.personal.variants import FAMILIES, parse_variant

    fields = _shaping_fields(round_cfg, context)
    keys = {}
    for name in variants:
        variant = parse_variant(name)
        base = FAMILIES[variant.family].base(variant)
        keys[name] = variant_key(
            fields, name, round_cfg.base_version_for(base) if base else "",
            round_cfg.base_version if variant.profile != "none" else "",
            _pooled_digest(context) if variant.family == "pooled" else "")
    return keys


def suite_variants(round_cfg: RoundConfig) -> tuple[str, ...]:
    """The variant each stats block holds; an ordinary round is its one personal adapter."""
    if round_cfg.suite:
        return round_cfg.blocks
    from oppu.shared.personal.pipeline import personal_variant

    return (personal_variant(round_cfg.recipe()).name,)


def run_simulated_user(round_cfg: RoundConfig, context: Context) -> list[float]:
    """Evaluate this virtual client's test user under the round's variants; the stats vector.

    The round's recipe trains the private adapters (each variant sets its k, profile and
    PEFT method).
    """
    from oppu.client.adapter_store import AdapterStore
    from oppu.shared.atomic import write_text_atomic
    from oppu.shared.data.cohort import load_cohort
    from oppu.shared.metrics import make_metric
    from oppu.shared.personal.evaluation import EvalQuery
    from oppu.shared.personal.pipeline import VariantsOutcome, run_variants
    from oppu.shared.tasks import get_task

    task = get_task(round_cfg.task)
    cohort = load_cohort(str(context.run_config[SimKey.DATA]), task.name)
    user = cohort.user(int(context.node_config[PARTITION_ID]))
    user_dir = sim_out(context, task.name) / "users" / safe_name(user.user_id)
    record_path = user_dir / f"suite-{suite_key(round_cfg, context)}.json"
    if record_path.is_file():
        log.info("user %s: already done in an earlier run, answering from %s", user.user_id,
                 record_path)
        return record_vector(round_cfg, json.loads(record_path.read_text()))

    labels = round_cfg.labels or tuple(task.labels or ())
    max_history = int(context.run_config.get(SimKey.MAX_HISTORY, 0) or 0)
    shift = float(context.run_config.get(SimKey.SHIFT, 0.0) or 0.0)
    history = user.training_history(max_history, shift)
    # Queries retrieve from the user's profile; under a shift, from the shifted history only.
    queries = [EvalQuery(q.input, str(q.gold), tuple(history) if shift else tuple(q.profile))
               for q in user.answered]
    variants = suite_variants(round_cfg)
    pooled = str(context.run_config.get(SimKey.POOLED_ADAPTER, "") or "")
    metric = make_metric(task.kind, labels)
    keys = variant_keys(round_cfg, context, variants)
    cached = {v: c for v in variants if (c := load_variant(user_dir, v, keys[v])) is not None}
    todo = [v for v in variants if v not in cached]
    started = time.perf_counter()
    with time_split() as split:
        with phase("base"):  # fetched, verified and loaded once per worker
            loaded = simulation_bases(round_cfg, context)
        fresh = run_variants(loaded.model, loaded.tokenizer, task, history, queries, todo,
                             round_cfg.recipe(), labels=labels or None,
                             store=AdapterStore(user_dir),
                             pooled_adapter=Path(pooled) if pooled else None,
                             bases=loaded.bases) if todo else None
    seconds_now = time.perf_counter() - started
    for name in todo:
        save_variant(user_dir, name, keys[name], fresh.results[name], fresh.seconds[name],
                     fresh.adapters.get(name))
    outcome = VariantsOutcome(
        {v: cached[v].result(metric, tuple(labels)) if v in cached else fresh.results[v]
         for v in variants},
        {v: cached[v].seconds if v in cached else fresh.seconds[v] for v in variants},
        {v: a for v in variants
         if (a := cached[v].adapter if v in cached else fresh.adapters.get(v))},
        {}, len(history), len(queries))
    release_memory()  # glibc keeps freed activations otherwise: the worker's RSS steps up
    record = {
        "format": RECORD_FORMAT, "user": user.user_id, "partition": user.partition,
        "task": task.name, "kind": task.kind.value, "labels": list(labels),
        "history_items": len(user.history), "train_items": len(history),
        "train_item_words_mean": round(mean_item_words(history, task), 1),
        "queries": len(queries), "stat_names": metric.stat_names(), "variants": list(variants),
        "vectors": {v: metric.to_vector(outcome.results[v].stats) for v in variants},
        "pairs": {p: outcome.pair_vector(metric, p) for p in round_cfg.pairs},
        "metrics": {v: metric.compute(outcome.results[v].stats) for v in variants},
        "seconds": outcome.seconds, "adapters": outcome.adapters,
        "seconds_total": round(seconds_now + sum(c.seconds for c in cached.values()), 2),
        "seconds_this_run": round(seconds_now, 3), "time_split": split,
        "variants_cached": sorted(cached),
        "worker_pid": os.getpid(), "worker_peak_rss_mb": process_peak_rss_mb(),
        "worker_rss_mb": round(process_rss_bytes(os.getpid()) / 2**20, 1),
        "worker_model_loads": _LOADS[0], "base_version": round_cfg.base_version,
        "bases": loaded.versions}
    write_text_atomic(record_path, json.dumps(record, indent=2, default=_json_number))
    log.info("user %s (%d items, %d queries) done in %.0f s (%d variant(s) from earlier "
             "runs)", user.user_id, len(history), len(queries), seconds_now, len(cached))
    return record_vector(round_cfg, record)


def record_vector(round_cfg: RoundConfig, record: dict) -> list[float]:
    """The round's stats vector from a user's record: each block's variant, in order, then
    each compared pair's."""
    return ([v for block in round_cfg.blocks for v in record["vectors"][_variant_of(block, record)]]
            + [v for pair in round_cfg.pairs for v in record["pairs"][pair]])


def _variant_of(block: str, record: dict) -> str:
    return record["variants"][0] if block == PERSONAL_BLOCK else block


def _json_number(value: object) -> object:
    return float(value)  # numpy scalars in metrics


def simulation_bases(round_cfg: RoundConfig, context: Context) -> RoundBases:
    """The round's bases, each loaded once per worker process (``round_bases``).

    ``base-path`` (a local artifact from ``oppu-coordinator adapt``) is verified and serves
    every variant; otherwise each base is fetched from the coordinator's BaseStore like in
    deployment (cached, sha256 and signature checked); without either, the untuned
    ``base-model``. A worker that moves on to another run drops the bases it no longer needs.
    """
    from oppu.shared.llm.model import load_base_model

    base_path = str(context.run_config.get(SimKey.BASE_PATH, "") or "")
    device = str(context.node_config.get(NodeConfigKey.DEVICE, "auto") or "auto")
    if base_path:
        round_cfg = replace(round_cfg, bases="")  # one local artifact serves every variant
    # What the run names, before any I/O: a loaded base is not verified or fetched again.
    default = (base_path or round_cfg.base_version or round_cfg.base_address
               or str(context.run_config.get(SimKey.BASE_MODEL, "")))
    wanted = {(version or default, device)
              for version in {round_cfg.base_version, *round_cfg.base_versions().values()}}
    for stale in set(_MODELS) - wanted:
        del _MODELS[stale]

    def obtain(version: str) -> tuple:
        key = (version or default, device)
        if key not in _MODELS:  # loaded ones are not fetched or verified again
            directory = _resolve_base(base_path, round_cfg, context, version)
            model, tokenizer, _plan = load_base_model(directory or None, device=device)
            _MODELS[key] = (model, tokenizer)
            _LOADS[0] += 1
        return _MODELS[key]

    return load_round_bases(round_cfg, obtain)


def _resolve_base(base_path: str, round_cfg: RoundConfig, context: Context,
                  version: str) -> str:
    """A base's directory (verified or fetched), or the ``base-model`` name."""
    if base_path:
        from oppu.shared.llm.base_artifact import verify_artifact

        verify_artifact(Path(base_path).expanduser())
        return base_path
    if round_cfg.base_address:
        return str(_fetch_served_base(round_cfg, context, version))
    base = str(context.run_config.get(SimKey.BASE_MODEL, "") or "")
    log.warning("no base-path and no served base: using the untuned base model %s",
                base or "(embedded)")
    return base


def _fetch_served_base(round_cfg: RoundConfig, context: Context, version: str) -> Path:
    """A served base, over TLS with ``sim-ca`` (plaintext when the run names no CA)."""
    from oppu.client.base_fetch import fetch_base

    ca = str(context.run_config.get(SimKey.CA, "") or "")
    result = fetch_base(round_cfg.base_address, coordinator_public_key=round_cfg.base_key,
                        cache_root=sim_out(context, round_cfg.task) / "base-cache",
                        root_cert=Path(ca).read_bytes() if ca else None, insecure=not ca,
                        progress=False, version=version)
    return result.path
