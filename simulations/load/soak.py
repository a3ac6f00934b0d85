"""The soak benchmark: a long-running coordinator through many rounds while clients come and go.

``python -m oppu.simulations.load.soak --rounds 10`` starts a real coordinator (SuperLink over
TLS, node authentication, BaseStore with the tiny base) as the service ``oppu-coordinator
start`` runs (``CoordinatorService``, a round as soon as the last ended), and real SuperNodes.
Between rounds, in turn, a client leaves, a new one joins, a client restarts (same data dir,
same node key). After every round it samples the coordinator's memory (this process with the
BaseStore, and the SuperLink's tree) and open file descriptors, and checks nothing was lost:
every round done, its result in the state dir, each client counted once. Prints a table and
``SOAK_JSON {...}``; the JSON also goes to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from oppu.shared.federation.keys import RunKey
from oppu.simulations.load.history import make_history
from oppu.simulations.load.round import FAST_ROUND
from oppu.simulations.load.supernode import SuperNode, stop_all, wait_online

JSON_PREFIX = "SOAK_JSON "
CHANGES = ("leave", "join", "restart")
"""What happens after round i: CHANGES[(i - 1) % 3]."""


def _open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def run_soak(rounds: int, clients: int, work_dir: Path) -> dict[str, Any]:
    from oppu.coordinator.coordinator import Coordinator
    from oppu.coordinator.round_log import RoundLog, Schedule
    from oppu.coordinator.service import CoordinatorService, RoundOutcome
    from oppu.shared.federation.processes import free_port
    from oppu.shared.resources import process_rss_bytes, tree_rss_bytes
    from oppu.simulations.load.tiny_base import ensure_tiny_base

    coordinator = Coordinator(work_dir / "coordinator", ensure_tiny_base(), host="127.0.0.1",
                              port=free_port(), base_port=0)
    made = 0

    def new_node() -> SuperNode:
        nonlocal made
        node = SuperNode.create(work_dir, f"user{made:03d}", make_history(made),
                                base_cache=work_dir / "base-cache")
        made += 1
        node.enroll(coordinator)
        return node

    online = [new_node() for _ in range(clients)]
    rows: list[dict[str, Any]] = []
    expected: list[int] = []

    def after_round(outcome: RoundOutcome) -> None:
        superlink = coordinator.superlink.pid if coordinator.superlink else None
        row = {"round": outcome.entry.number, "status": outcome.entry.status,
               "clients": outcome.entry.clients,
               "seconds": round(outcome.result.seconds, 1) if outcome.result else None,
               "coordinator_rss_mb": round(process_rss_bytes(os.getpid()) / 2**20, 1),
               "superlink_tree_rss_mb": round(tree_rss_bytes(superlink) / 2**20, 1)
               if superlink else None,
               "coordinator_fds": _open_fds(os.getpid()),
               "superlink_fds": _open_fds(superlink) if superlink else None}
        change = CHANGES[(outcome.entry.number - 1) % len(CHANGES)]
        if outcome.entry.number < rounds:
            if change == "leave":
                online.pop(0).stop()
            elif change == "join":
                online.append(new_node())
                online[-1].start(coordinator, enroll=False)
            else:
                online[0].stop()
                online[0].start(coordinator, enroll=False)
            row["then"] = change
            row["rejoin_s"] = round(wait_online(coordinator, len(online)), 1)
        expected.append(len(online))
        rows.append(row)
        print(json.dumps(row), flush=True)

    started = time.time()
    try:
        with coordinator:
            for node in online:
                node.start(coordinator, enroll=False)
            wait_online(coordinator, len(online))
            expected.append(len(online))
            service = CoordinatorService(
                coordinator, Schedule(rounds=rounds, every=0.0, min_clients=3),
                {**FAST_ROUND, RunKey.MIN_CLIENTS: 3, RunKey.TIMEOUT: 900.0},
                round_timeout=1800.0, poll_seconds=1.0, on_round=after_round)
            service.serve()
    finally:
        stop_all(online)
    entries = RoundLog.open(coordinator.state).entries
    results = [coordinator.state.result_path(e.run_id) for e in entries if e.run_id]
    lost = [e.number for e in entries if e.status != "done"] + [
        str(p) for p in results if not p.is_file()]
    counted = [json.loads(p.read_text())["clients"] for p in results if p.is_file()]
    rss = [r["coordinator_rss_mb"] for r in rows]
    fds = [r["coordinator_fds"] for r in rows]
    return {"rounds": rounds, "clients_made": made, "seconds": round(time.time() - started),
            "rounds_done": sum(e.status == "done" for e in entries),
            "lost": lost, "clients_per_round": counted,
            "clients_expected": expected[:len(counted)],
            "coordinator_rss_mb": {"first": rss[0], "last": rss[-1], "max": max(rss)},
            "coordinator_fds": {"first": fds[0], "last": fds[-1], "max": max(fds)},
            "per_round": rows}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m oppu.simulations.load.soak",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--clients", type=int, default=4, help="SuperNodes at the start.")
    parser.add_argument("--out", type=Path, default=Path("runs/soak.json"))
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="Keep state and logs here (default: a temp dir, removed).")
    args = parser.parse_args(argv)
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="oppu-soak-"))
    try:
        report = run_soak(args.rounds, args.clients, work_dir)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(JSON_PREFIX + json.dumps({k: v for k, v in report.items() if k != "per_round"}))
    return report


if __name__ == "__main__":
    main()
