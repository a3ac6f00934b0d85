"""A coordinator that stays up: rounds on a schedule, and rounds and bases the operator asks for.

``CoordinatorService.serve`` runs in the thread that started the coordinator and is the only
place rounds run, one at a time: scheduled ones (``Schedule``: how many, how often, once
enough clients are connected) and the operator's (``request_round``, from
``coordinator/operator_server.py``), which go first. Every round is recorded in
``rounds.json`` (``round_log``) before it is submitted and when it ends, so a restart on the
same state dir resumes the schedule without losing or double counting a result.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from pathlib import Path

from oppu.coordinator.coordinator import Coordinator
from oppu.coordinator.results import CohortResult, format_table
from oppu.coordinator.round_log import RoundEntry, RoundLog, Schedule, Source
from oppu.shared.errors import ConfigError, OppuError, UnknownTaskError
from oppu.shared.federation.aggregation_modes import AGGREGATIONS, AUTO
from oppu.shared.federation.keys import RoundKey, RunKey, key_names
from oppu.shared.federation.round_config import RoundConfig, run_config_overrides
from oppu.shared.tasks import get_task

log = logging.getLogger("oppu.coordinator.service")

COORDINATOR_OWNED = frozenset({
    RunKey.STATE_DIR, RoundKey.ROUND, RoundKey.FORMAT, RoundKey.BASE_VERSION,
    RoundKey.BASE_ADDRESS, RoundKey.BASE_KEY, RoundKey.BASES, RoundKey.SEALING_KEY,
    RoundKey.DP_VARIANCE, RoundKey.DP_SHARE})
"""Settings the coordinator fills in itself: where its state and bases are, its keys, the
round number, the DP noise it derived from the operator's epsilon."""
ROUND_KEYS = (key_names(RoundKey) | key_names(RunKey)) - COORDINATOR_OWNED
"""What an operator's round may set."""


@dataclass(frozen=True)
class RoundOutcome:
    """How one round ended, as the operator's ``round`` command shows it."""

    entry: RoundEntry
    result: CohortResult | None

    @property
    def table(self) -> str:
        return format_table(self.result) if self.result is not None else ""


def checked_run_config(defaults: Mapping[str, object],
                       overrides: Mapping[str, object]) -> dict[str, object]:
    """``defaults`` with the operator's ``overrides``, checked as a client will read it: an
    unknown key or a bad value is refused here, naming it, before any client trains."""
    unknown = sorted(set(overrides) - ROUND_KEYS)
    if unknown:
        raise ConfigError(f"Unknown round setting(s) {', '.join(map(repr, unknown))}; known: "
                          f"{', '.join(sorted(ROUND_KEYS))}.")
    merged = {**defaults, **overrides}
    for key, (kind, low) in _RUN_KEY_RANGES.items():
        value = merged.get(key, low)
        if isinstance(value, bool) or not isinstance(value, kind) or not value >= low:
            raise ConfigError(f"'{key}' must be a{'n integer' if kind is int else ' number'} "
                              f">= {low}, got {value!r}.")
    if merged.get(RunKey.AGGREGATION, AUTO) not in AGGREGATIONS:
        raise ConfigError(f"'{RunKey.AGGREGATION}' must be one of {', '.join(AGGREGATIONS)}, "
                          f"got {merged[RunKey.AGGREGATION]!r}.")
    try:
        get_task(str(merged.get(RoundKey.TASK, "")))
    except UnknownTaskError as exc:
        raise ConfigError(f"'{RoundKey.TASK}': {exc.args[0] if exc.args else exc}") from None
    RoundConfig(**run_config_overrides(merged))
    return merged


_RUN_KEY_RANGES: dict[str, tuple[type | tuple[type, ...], float]] = {
    RunKey.MIN_CLIENTS: (int, 1), RunKey.TIMEOUT: ((int, float), 1.0),
    RunKey.STAGE_TIMEOUT: ((int, float), 1.0),
    RunKey.DP_EPSILON: ((int, float), 0.0), RunKey.DP_DELTA: ((int, float), 0.0),
    RunKey.DP_NOISE_MULTIPLIER: ((int, float), 0.0),
    RunKey.DP_BUDGET_EPSILON: ((int, float), 0.0), RunKey.DP_BUDGET_DELTA: ((int, float), 0.0)}
"""The ServerApp's own settings: type and least value (the round fields check themselves)."""


class CoordinatorService:
    """Runs ``coordinator``'s rounds until stopped (see the module docstring)."""

    def __init__(self, coordinator: Coordinator, schedule: Schedule,
                 run_config: Mapping[str, object], *, round_timeout: float,
                 poll_seconds: float = 5.0,
                 on_round: Callable[[RoundOutcome], None] | None = None):
        self.coordinator = coordinator
        self.schedule = schedule
        self.run_config = checked_run_config(run_config, {})
        self.round_timeout = round_timeout
        self.poll_seconds = poll_seconds
        self._on_round = on_round
        self.log = RoundLog.open(coordinator.state)
        self._requests: queue.Queue[tuple[dict[str, object], Future]] = queue.Queue()
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # publish and status against a round's bookkeeping
        self._closed = False

    # ---- called from the operator's threads --------------------------------------------------
    def request_round(self, overrides: Mapping[str, object]) -> Future:
        """Queue a round with the default run config and ``overrides`` (checked now: a
        ``ConfigError`` names the bad setting); the future gives its ``RoundOutcome``."""
        run_config = checked_run_config(self.run_config, overrides)
        future: Future = Future()
        with self._lock:
            if self._closed:
                raise OppuError("The coordinator is stopping: no more rounds.")
            self._requests.put((run_config, future))
        return future

    def publish(self, base_dir: str | Path) -> tuple[str, str]:
        """Serve a new base from the next round on (``Coordinator.publish``)."""
        with self._lock:
            name, version = self.coordinator.publish(base_dir)
        log.info("Published the %s base %s: clients fetch it at their next round.", name,
                 version[:12])
        return name, version

    def status(self) -> dict:
        """What ``oppu-coordinator status`` prints."""
        from oppu.coordinator.enrollment import enrolled_keys

        with self._lock:
            rounds = [asdict(e) for e in self.log.entries]
            bases = self.coordinator.bases
        try:
            nodes = self.coordinator.nodes()
        except OppuError as exc:
            nodes = [{"error": str(exc)}]
        return {"address": self.coordinator.client_address, "bases": bases,
                "enrolled": sorted(enrolled_keys(self.coordinator.state)), "nodes": nodes,
                "schedule": {"rounds": self.schedule.rounds, "every": self.schedule.every,
                             "min_clients": self.schedule.min_clients,
                             "scheduled_done": self.log.scheduled_done(),
                             "next_due": self.log.next_due(self.schedule)},
                "queued": self._requests.qsize(), "rounds": rounds}

    def stop(self) -> None:
        self._stopping.set()

    # ---- the serving thread ------------------------------------------------------------------
    def serve(self) -> None:
        """Run rounds until ``stop()``, or until the schedule's rounds are done and no
        operator round waits."""
        try:
            while not self._stopping.is_set():
                try:
                    run_config, future = self._requests.get_nowait()
                except queue.Empty:
                    pass
                else:
                    if future.set_running_or_notify_cancel():
                        future.set_result(self._run(run_config, "operator"))
                    continue
                if self.log.finished(self.schedule):
                    return
                if time.time() >= self.log.next_due(self.schedule) and (
                        self.coordinator.online_nodes() >= self.schedule.min_clients):
                    self._run(dict(self.run_config), "schedule")
                    continue
                self._stopping.wait(self.poll_seconds)
        finally:
            self._close()

    def _close(self) -> None:
        """No round runs after ``serve`` returns: waiting operator rounds are cancelled."""
        with self._lock:
            self._closed = True
            while not self._requests.empty():
                self._requests.get_nowait()[1].cancel()

    def _run(self, run_config: dict[str, object], source: Source) -> RoundOutcome:
        with self._lock:
            entry = self.log.begin(source)
        run_config = {**run_config, RoundKey.ROUND: entry.number}
        log.info("Round %d (%s) starting.", entry.number, source)

        def submitted(run_id: str) -> None:
            nonlocal entry
            with self._lock:
                entry = self.log.update(entry, run_id=str(run_id))

        try:
            result = self.coordinator.run_round(run_config, timeout=self.round_timeout,
                                                on_submit=submitted)
        except OppuError as exc:
            with self._lock:
                entry = self.log.update(entry, status="failed", ended=time.time(),
                                        error=str(exc)[-2000:])
            log.warning("Round %d failed: %s", entry.number, exc)
            outcome = RoundOutcome(entry, None)
        else:
            with self._lock:
                entry = self.log.update(entry, status="done", ended=time.time(),
                                        clients=result.clients)
            outcome = RoundOutcome(entry, result)
        if self._on_round is not None:
            self._on_round(outcome)
        return outcome
