"""The paper's experiment, run by the system itself: LaMP test users as virtual Flower clients.

``run_simulation`` task-adapts the base on the base users (cached), trains the pooled-history
baseline adapter when the suite asks for it, then starts oppu's coordinator with a
*simulation* SuperLink: Flower's simulation engine (Ray) runs the very ServerApp and ClientApp
of deployment, partition ``i`` playing test user ``i``. Each virtual client evaluates its user
under every variant of the suite and answers with statistics only (SecAgg+ from three users
on), so the coordinator's secure sum *is* Table 1. The per-user records each client writes
locally feed the figures, and make a rerun resume where the last one stopped.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from oppu.coordinator.adapt import AdaptSettings
from oppu.coordinator.coordinator import Coordinator
from oppu.coordinator.results import CohortResult
from oppu.shared.atomic import write_text_atomic
from oppu.shared.cli_support import console
from oppu.shared.data import base_users, load_lamp, select_test_users
from oppu.shared.data.cohort import LampCohort
from oppu.shared.federation.aggregation_modes import AUTO
from oppu.shared.federation.dp_options import DpSettings, dp_run_config
from oppu.shared.federation.keys import RoundKey, RunKey, SimKey
from oppu.shared.federation.processes import free_port
from oppu.shared.federation.round_config import recipe_entries
from oppu.shared.llm.base_artifact import read_manifest, verify_artifact
from oppu.shared.llm.training import TrainSettings
from oppu.shared.personal.bases import (
    PLAIN,
    PROFILE_BASE_WRITER,
    BaseKind,
    ordered_bases,
    parse_base_name,
)
from oppu.shared.personal.recipe import PersonalizeSettings
from oppu.shared.personal.suite import QUICK_SUITE, suite_bases
from oppu.shared.resources import PeakMemory, release_memory
from oppu.shared.tasks import TaskSpec
from oppu.simulations.quickstart import sample_dir, small_model_personal_settings

BASE_FORMAT = 2
"""Bumped when adaptation itself changes (2: the check and the recipe choice count epochs
from 1; before, the kept epoch and the recipe's epochs were off by one)."""


@dataclass(frozen=True)
class SimulationSettings:
    """One simulated experiment; every knob is a flag of ``oppu-coordinator simulate``."""

    users: int = 100
    suite: tuple[str, ...] = QUICK_SUITE
    max_history: int = 0
    history_shift: float = 0.0
    adapt: AdaptSettings = field(default_factory=lambda: AdaptSettings(
        train=TrainSettings(lr=5e-4, epochs=3, batch_size=8)))
    personal: PersonalizeSettings = field(default_factory=small_model_personal_settings)
    recipe_from_base: bool = True
    """Train with the learning rate and epochs the base's manifest records as chosen on
    held-out base users (``base_recipe``), where it has them."""
    one_base: bool = False
    """Run every variant on the plain base (cheaper, not the paper's): by default each
    prompt family gets its own task-adapted base (``oppu.shared.personal.bases``)."""
    base_model: str | None = None
    task: str | None = None
    """Task name when the directory's outputs.json does not say (official LaMP files do)."""
    num_cpus: int = 2
    num_gpus: float = 0.0
    aggregation: str = AUTO
    insecure: bool = False
    timeout: float = 24 * 3600.0
    dp: DpSettings = field(default_factory=DpSettings)
    """Differential privacy of the round (off by default; ``oppu.shared.federation.dp_options``)."""


def run_simulation(data: Path | None, out: Path, settings: SimulationSettings, *,
                   base: Path | None = None, plots: bool = True) -> dict:
    """Run the whole experiment; returns the Table-1 dict (also written under ``out``)."""
    started = time.perf_counter()
    data = (data or sample_dir()).expanduser().resolve()
    out = out.expanduser().resolve()
    dataset = load_lamp(data, settings.task)
    task = dataset.spec
    cohort = LampCohort(dataset, settings.users)
    suite = _checked_suite(task, settings.suite)
    console.print(f"[bold]{task.name}[/]: {len(cohort)} test users as virtual clients, "
                  f"variants: {', '.join(suite)}")
    bases = prepare_bases(dataset, out, settings, suite, given=base)
    base_dir = bases[PLAIN]
    settings = with_base_recipe(settings, base_dir)  # the pooled baseline trains with it too
    pooled = None
    if any(v.startswith("pooled-") for v in suite):
        pooled = prepare_pooled(cohort, base_dir, out, settings)
    release_memory()  # the models used above are gone; the simulation needs the room
    run_config = simulation_run_config(data, out, task, cohort, suite, settings, pooled)
    memory, run_started = PeakMemory(), time.time()
    result = _run_round(out, bases, run_config, len(cohort), settings, memory)
    versions = {name: read_manifest(path).version for name, path in bases.items()}
    records = collect_records(out, cohort, suite, result.base_version,
                              {n: versions[n] for n in suite_bases(suite)} if len(bases) > 1
                              else {})
    table = {
        "task": task.name, "kind": task.kind.value, "labels": list(cohort.labels()),
        "users": result.clients, "queries": sum(r["queries"] for r in records),
        "aggregation": result.aggregation, "variants": result.variants,
        "intervals": result.intervals, "comparisons": result.comparisons, "dp": result.dp,
        "seconds_total": round(time.perf_counter() - started, 1),
        "seconds_round": round(result.seconds, 1), "run_id": result.run_id,
        "base_version": result.base_version, "data": str(data),
        "bases": {name: {**base_summary(path), "version": versions[name]}
                  for name, path in bases.items()},
        "variant_bases": variant_bases(suite, one_base=len(bases) == 1),
        "settings": _settings_summary(settings),
        "cost": simulation_cost(records, result, memory, run_started),
    }
    from oppu.simulations.report import write_report

    paths = write_report(out / "report", table, records, plots=plots)
    table["report"] = {name: str(path) for name, path in paths.items()}
    return table


def with_base_recipe(settings: SimulationSettings, base_dir: Path) -> SimulationSettings:
    """The settings with the base users' chosen lr and epochs, when wanted and recorded."""
    chosen = base_summary(base_dir).get("recipe")
    if not settings.recipe_from_base or not chosen:
        return settings
    train = replace(settings.personal.train, lr=chosen["lr"], epochs=chosen["epochs"])
    console.print(f"Private-adapter recipe from the base's manifest (chosen on "
                  f"{len(chosen['users'])} held-out base users): lr {chosen['lr']:g}, "
                  f"{chosen['epochs']} epoch(s).")
    return replace(settings, personal=replace(settings.personal, train=train))


def base_summary(base_dir: Path) -> dict:
    """What the report says of the base: its variant, whether it was adapted, its check."""
    manifest = read_manifest(base_dir)
    if manifest is None:
        return {}
    training = manifest.training or {}
    return {"variant": manifest.variant, "model_id": manifest.model_id,
            "untuned": training.get("untuned", ""), "check": training.get("check"),
            "recipe": training.get("recipe")}


def variant_bases(suite: tuple[str, ...], *, one_base: bool) -> dict[str, str]:
    """Variant -> the base it ran on ("" for those that use no model)."""
    from oppu.shared.personal.variants import FAMILIES, parse_variant

    out = {}
    for name in suite:
        variant = parse_variant(name)
        base = FAMILIES[variant.family].base(variant)
        out[name] = "" if base is None else PLAIN if one_base else base
    return out


def _checked_suite(task: TaskSpec, names: tuple[str, ...]) -> tuple[str, ...]:
    from oppu.shared.personal.suite import supported_variants

    kept = supported_variants(task, names)
    dropped = [n for n in names if n not in {v.name for v in kept}]
    if dropped:
        console.print(f"[yellow]{task.name} cannot have: {', '.join(dropped)} (left out)[/]")
    return tuple(v.name for v in kept)


def prepare_bases(dataset, out: Path, settings: SimulationSettings, suite: tuple[str, ...],
                  *, given: Path | None = None) -> dict[str, Path]:
    """Base name -> task-adapted base of every prompt family the suite runs on, plain first
    (it writes the profiles and chooses the private recipe). A ``given`` base, or
    ``one_base``, serves every variant."""
    if given is not None:
        return {PLAIN: given.expanduser().resolve()}
    names = (PLAIN,) if settings.one_base else ordered_bases((PLAIN, *suite_bases(suite)))
    return {name: prepare_base(dataset, out, settings, name) for name in names}


def prepare_base(dataset, out: Path, settings: SimulationSettings, name: str = PLAIN) -> Path:
    """One task-adapted base (``name``: plain, rag-kJ, profile-kJ), trained on base users
    only (never a test user); cached by everything that shapes it."""
    from oppu.coordinator.adapt import adapt_base, adaptation_queries
    from oppu.shared.llm.model import load_base_model

    kind = parse_base_name(name)
    adapt = replace(settings.adapt, variant=kind.variant,
                    k=settings.adapt.k if kind.variant == PLAIN else kind.k)  # plain: no k
    target = out / "base" if name == PLAIN else out / "bases" / name  # plain: where it was
    key = _digest({"data": str(dataset.directory), "adapt": asdict(adapt),
                   "base_model": settings.base_model, "personal": asdict(settings.personal),
                   "format": BASE_FORMAT})
    stamp = target / "oppu_simulation_base.json"
    if read_manifest(target) is not None and stamp.is_file() \
            and json.loads(stamp.read_text()).get("key") == key:
        verify_artifact(target)
        console.print(f"Task-adapted {name} base: reusing {target}")
        return target
    train_users = base_users(dataset, select_test_users(dataset))
    queries = adaptation_queries(dataset, train_users, adapt)
    model, tokenizer, _ = load_base_model(settings.base_model)
    console.print(f"Task-adapting the {name} base on {len(queries)} queries of "
                  f"{len(train_users)} base users...")
    adapted = adapt_base(model, tokenizer, dataset.spec, queries, adapt, out_dir=target,
                         model_id=settings.base_model or "embedded",
                         profile_of=profile_writer(model, tokenizer, dataset.spec, kind),
                         personal=settings.personal if name == PLAIN else None,
                         refuse_weak=False)
    write_text_atomic(stamp, json.dumps({"key": key, "version": adapted.manifest.version}))
    console.print(adapted.summary(), markup=False)
    if adapted.warning():
        console.print(f"[bold red]Warning:[/] {adapted.warning()} The report says so.")
    return target


def profile_writer(model, tokenizer, task: TaskSpec, kind: BaseKind):
    """For the profile base: writes each base user's PAG profile with the untuned model."""
    if kind.variant != "profile":
        return None
    from oppu.shared.personal.profiles import build_profile

    def write(items):
        return build_profile(model, tokenizer, task, items, mode=PROFILE_BASE_WRITER)

    return write


def prepare_pooled(cohort: LampCohort, base_dir: Path, out: Path,
                   settings: SimulationSettings) -> Path:
    """The non-personal baseline: one adapter on all test users' pooled histories.

    Centralized by definition (it is what OPPU is compared against), so it is trained here,
    by whoever runs the benchmark and holds the data, never inside the federation.
    """
    from oppu.shared.llm.model import load_base_model
    from oppu.simulations.pooled import train_pooled_adapter

    model, tokenizer, _ = load_base_model(str(base_dir))
    histories = [cohort.user(i).training_history(settings.max_history, settings.history_shift)
                 for i in range(len(cohort))]
    console.print(f"Pooled-history baseline adapter on {sum(map(len, histories))} items of "
                  f"{len(histories)} users...")
    return train_pooled_adapter(model, tokenizer, cohort.dataset.spec, histories,
                                settings.personal, out / "pooled",
                                labels=cohort.labels() or None)


def simulation_run_config(data: Path, out: Path, task: TaskSpec, cohort: LampCohort,
                          suite: tuple[str, ...], settings: SimulationSettings,
                          pooled: Path | None) -> dict[str, object]:
    return {
        RunKey.MIN_CLIENTS: len(cohort), RunKey.AGGREGATION: settings.aggregation,
        # One machine, no reply is lost on a network: every SecAgg+ stage may take as long
        # as the virtual clients need (a hundred of them queue for a few Ray workers).
        RunKey.TIMEOUT: settings.timeout, RunKey.STAGE_TIMEOUT: settings.timeout,
        RoundKey.TASK: task.name, RoundKey.SUITE: ",".join(suite),
        **recipe_entries(settings.personal),
        RoundKey.LABELS: json.dumps(list(cohort.labels())),
        SimKey.DATA: str(data), SimKey.OUT: str(out), SimKey.MAX_HISTORY: settings.max_history,
        SimKey.POOLED_ADAPTER: str(pooled or ""), SimKey.SHIFT: settings.history_shift,
        **dp_run_config(settings.dp),
    }


def _run_round(out: Path, bases: dict[str, Path], run_config: dict, users: int,
               settings: SimulationSettings, memory: PeakMemory) -> CohortResult:
    from rich.progress import Progress

    coordinator = Coordinator(out / "coordinator", bases[PLAIN], host="127.0.0.1",
                              public_host="localhost", port=free_port(), base_port=free_port(),
                              insecure=settings.insecure, simulation=True,
                              extra_bases=[path for name, path in bases.items() if name != PLAIN])
    federation = {"num-supernodes": users, "client-resources-num-cpus": settings.num_cpus,
                  "client-resources-num-gpus": settings.num_gpus}
    with coordinator, Progress(console=console, transient=False) as progress:
        if not settings.insecure:
            run_config = {**run_config, SimKey.CA: str(coordinator.state.tls / "ca.pem")}
        bar = progress.add_task("virtual clients done", total=users)
        since = time.time() - 1.0

        def count_done() -> None:
            memory.sample()
            progress.update(bar, completed=_records_since(out, since))

        result = coordinator.run_round(
            run_config, timeout=settings.timeout + 600, federation_config=federation,
            on_poll=count_done,
            on_submit=lambda run_id: console.print(
                f"Flower run {run_id} on a simulation SuperLink "
                f"({coordinator.superlink_address}); state: {coordinator.state.root}"))
        progress.update(bar, completed=users)
    return result


def _records_since(out: Path, since: float) -> int:
    """User records touched during this run (new ones, or ones a resumed client re-read)."""
    users = out / "users"
    if not users.is_dir():
        return 0
    return sum(1 for d in users.iterdir()
               if any(p.stat().st_mtime >= since for p in d.glob("suite-*.json")))


def collect_records(out: Path, cohort: LampCohort, suite: tuple[str, ...],
                    base_version: str, bases: dict[str, str]) -> list[dict]:
    """Each cohort user's newest record for this suite and these bases (what the figures
    plot); ``bases``: name -> version when the variants ran on several."""
    from oppu.client.simulation import safe_name

    records = []
    for user in cohort.users:
        candidates = []
        for path in (out / "users" / safe_name(user)).glob("suite-*.json"):
            record = json.loads(path.read_text())
            if tuple(record.get("variants", ())) == suite and \
                    record.get("base_version", "") == base_version and \
                    record.get("bases", {}) == bases:
                record["_mtime"] = path.stat().st_mtime
                candidates.append((record["_mtime"], record))
        if candidates:
            records.append(max(candidates, key=lambda c: c[0])[1])
    return records


def simulation_cost(records: list[dict], result: CohortResult, memory: PeakMemory,
                    run_started: float) -> dict:
    """What the users cost: per-user time and where it went, throughput, memory (whole tree,
    per worker, and each worker's resident memory after every user).

    Per-user figures come from the users' records, so users a rerun answered from an
    earlier record (``resumed``) keep what they cost then. Users per hour per worker is
    3600 / mean seconds per user (Ray runs ``cpus / num-cpus`` workers at once); users per
    hour is this run's own: its fresh users over the round's wall time. The time split sums
    the fresh users' phases; what the workers' share of the round holds beyond them is the
    framework's (Flower, Ray, SecAgg+) and the wait for the slowest worker.
    """
    seconds = [float(r.get("seconds_total", 0.0)) for r in records]
    per_user = [{"user": r["user"], "train_items": r["train_items"],
                 "history_items": r["history_items"], "seconds": r.get("seconds_total"),
                 "train_item_words_mean": r.get("train_item_words_mean"),
                 "time_split": r.get("time_split"),
                 "worker_pid": r.get("worker_pid"),
                 "worker_peak_rss_mb": r.get("worker_peak_rss_mb"),
                 "worker_rss_mb": r.get("worker_rss_mb"),
                 "finished": r.get("_mtime"),
                 "resumed": r.get("_mtime", run_started) < run_started} for r in records]
    fresh = [r for r, u in zip(records, per_user, strict=True) if not u["resumed"]]
    mean = sum(seconds) / len(seconds) if seconds else 0.0
    ordered = sorted(seconds)
    workers = len({r.get("worker_pid") for r in fresh})
    return {
        "users": len(records),
        "resumed": sum(u["resumed"] for u in per_user),
        "round_seconds": round(result.seconds, 1),
        "users_per_hour_per_worker": round(3600 / mean, 1) if mean else None,
        "users_per_hour": (round(3600 * len(fresh) / result.seconds, 1)
                           if fresh and result.seconds else None),
        "user_seconds_median": ordered[len(ordered) // 2] if ordered else None,
        "user_seconds_max": ordered[-1] if ordered else None,
        "time_split": time_split_of(fresh, workers * result.seconds),
        "peak_rss_mb_all_processes": memory.peak_mb,
        "worker_peak_rss_mb_max": max((r.get("worker_peak_rss_mb") or 0.0 for r in records),
                                      default=None),
        "workers_this_run": workers,
        "per_user": per_user,
    }


def time_split_of(fresh: list[dict], worker_seconds: float) -> dict | None:
    """Seconds per phase summed over the users this run computed, with the framework's
    share of the workers' time (``worker_seconds``) beside them; None without splits."""
    splits = [r["time_split"] for r in fresh if r.get("time_split")]
    if not splits:
        return None
    total: dict[str, float] = {}
    for split in splits:
        for name, value in split.items():
            total[name] = total.get(name, 0.0) + float(value)
    in_users = sum(float(r.get("seconds_this_run", 0.0)) for r in fresh)
    total["framework"] = max(worker_seconds - in_users, 0.0)
    return {name: round(value, 1) for name, value in total.items()}


def _settings_summary(settings: SimulationSettings) -> dict:
    data = asdict(settings)
    data["suite"] = list(settings.suite)
    return json.loads(json.dumps(data, default=str))


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()
