"""The rounds a long-running coordinator ran, kept in its state dir (``rounds.json``).

Why a log of its own: Flower's SuperLink forgets runs when it restarts, and a coordinator
that stays up for weeks must resume its schedule after a restart without losing a result or
counting one twice. Each round is written as ``running`` before it is submitted and as
``done``/``failed`` after; a round found ``running`` on restart ended with the coordinator:
it counts as done if its result reached ``results/`` (the ServerApp writes that last), as
``interrupted`` otherwise, and the schedule runs it again.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

from oppu.coordinator.state import StateDir
from oppu.shared.atomic import write_text_atomic

Status = Literal["running", "done", "failed", "interrupted"]
Source = Literal["schedule", "operator"]


@dataclass(frozen=True)
class RoundEntry:
    """One round: who asked for it, its Flower run, how it ended."""

    number: int
    source: Source
    started: float
    status: Status = "running"
    run_id: str = ""
    ended: float | None = None
    error: str = ""
    clients: int = 0


@dataclass(frozen=True)
class Schedule:
    """When rounds run unattended: ``rounds`` of them (0: until stopped), a new one at most
    every ``every`` seconds, each once ``min_clients`` nodes are connected."""

    rounds: int = 0
    every: float = 0.0
    min_clients: int = 3
    retry: float = 60.0
    """Seconds after a failed scheduled round before it runs again."""


@dataclass
class RoundLog:
    """``rounds.json``: every round this state dir's coordinator ran, oldest first."""

    path: Path
    entries: list[RoundEntry] = field(default_factory=list)

    @classmethod
    def open(cls, state: StateDir) -> RoundLog:
        """Load the log; rounds a previous coordinator left ``running`` are settled now."""
        path = state.root / "rounds.json"
        entries = ([RoundEntry(**e) for e in json.loads(path.read_text())]
                   if path.is_file() else [])
        log = cls(path, entries)
        for entry in entries:
            if entry.status == "running":
                done = bool(entry.run_id) and state.result_path(entry.run_id).is_file()
                log._put(replace(entry, status="done" if done else "interrupted",
                                 ended=entry.ended or time.time()))
        return log

    def begin(self, source: Source, now: float | None = None) -> RoundEntry:
        entry = RoundEntry(number=self.next_number(), source=source,
                           started=time.time() if now is None else now)
        self.entries.append(entry)
        self._save()
        return entry

    def update(self, entry: RoundEntry, **changes) -> RoundEntry:
        updated = replace(entry, **changes)
        self._put(updated)
        return updated

    def next_number(self) -> int:
        """Round numbers count the rounds that ran to an end (a re-run takes the number of
        the round it replaces)."""
        return 1 + sum(e.status in ("done", "failed") for e in self.entries)

    def scheduled_done(self) -> int:
        return sum(e.source == "schedule" and e.status == "done" for e in self.entries)

    def next_due(self, schedule: Schedule) -> float:
        """When the next scheduled round may start: ``every`` after the last scheduled round
        that was done (at once when none was), and ``retry`` after one that failed (it runs
        again: a failed round does not count)."""
        scheduled = [e for e in self.entries if e.source == "schedule"]
        done = [e.started for e in scheduled if e.status == "done"]
        failed = [e.ended or e.started for e in scheduled if e.status == "failed"]
        due = [max(done) + schedule.every] if done else [0.0]
        if failed:
            due.append(max(failed) + schedule.retry)
        return max(due)

    def finished(self, schedule: Schedule) -> bool:
        return schedule.rounds > 0 and self.scheduled_done() >= schedule.rounds

    def _put(self, entry: RoundEntry) -> None:
        self.entries = [entry if (e.number, e.started) == (entry.number, entry.started) else e
                        for e in self.entries]
        self._save()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.path, json.dumps([asdict(e) for e in self.entries], indent=1))
