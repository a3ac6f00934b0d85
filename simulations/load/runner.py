"""The load test itself: a real coordinator, N real SuperNodes launched at once, one round.

Everything is real except the model's size: a real ``Coordinator`` (SuperLink over TLS,
BaseStore, signed base) and ``clients`` real ``flower-supernode`` processes started at the
same moment, each with its own synthetic history and data dir, fetching the tiny base over
TLS, training a LoRA for one step and sending its statistics back, sealed (fewer than 3
clients) or masked by SecAgg+. As the coordinator requires by default, each client's node key
is enrolled before the coordinator starts (``node_auth=False``: nodes self-register).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from oppu.shared.federation.aggregation_modes import AUTO, choose_aggregation
from oppu.simulations.load.concurrency import concurrency_wrappers
from oppu.simulations.load.history import make_history
from oppu.simulations.load.memory_budget import check_memory, save_calibration
from oppu.simulations.load.report import build_report, client_outcomes, failure
from oppu.simulations.load.round import run_round
from oppu.simulations.load.sampler import TreeSampler
from oppu.simulations.load.supernode import SuperNode, stop_all
from oppu.simulations.load.tiny_base import ensure_tiny_base


def prepare_nodes(root: Path, clients: int, coordinator: Any, *,
                  bin_dir: Path | None) -> list[SuperNode]:
    """Data dir, history, node key (enrolled when the coordinator authenticates nodes) and
    ``flower-supernode`` command of every client; nothing starts here."""
    nodes = []
    for user in range(clients):
        node = SuperNode.create(root, f"user{user:03d}", make_history(user),
                                path_prefix=bin_dir)
        node.enroll(coordinator)
        node.prepare(coordinator)
        nodes.append(node)
    return nodes


def wait_for_connections(nodes: list[SuperNode], timeout: float) -> None:
    """Watch the SuperNodes' logs until each says it is registered (or timeout, or it gave
    up); one that exits first is started again as ``join`` would (``SuperNode.keep_in``)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from oppu.shared.cli_support import console

    deadline = time.monotonic() + timeout
    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("SuperNodes connected", total=len(nodes))
        while time.monotonic() < deadline:
            waiting = 0
            for node in nodes:
                if not node.keep_in():
                    continue  # gave up: a failure to connect
                if node.connected_at is None:
                    if node.registered():
                        node.connected_at = time.time()
                    else:
                        waiting += 1
            progress.update(task, completed=sum(n.connected_at is not None for n in nodes))
            if not waiting:
                return
            time.sleep(0.2)


def _connect(nodes: list[SuperNode], timeout: float, t_launch: float,
             times: dict[str, float | None], failures: list[dict[str, Any]]) -> list[SuperNode]:
    """Wait for the launched nodes; the ones that joined, their join times in ``times``."""
    wait_for_connections(nodes, timeout)
    joined = [n for n in nodes if n.connected_at is not None]
    if joined:
        times["launch_to_first_connected_s"] = min(n.connected_at for n in joined) - t_launch
    if len(joined) == len(nodes):
        times["launch_to_all_connected_s"] = max(n.connected_at for n in joined) - t_launch
    for node in nodes:
        if node.connected_at is None:
            why = (f"exited with code {node.exited}" if node.exited is not None
                   else "not connected in time")
            failures.append(failure(node, "connect", why))
    return joined


def run_load_test(clients: int, *, aggregation: str = AUTO, max_clientapps: int | None = None,
                  force: bool = False, work_dir: Path | None = None, keep: bool = False,
                  connect_timeout: float | None = None, round_timeout: float = 1800.0,
                  node_auth: bool = True) -> dict[str, Any]:
    """Start a coordinator and ``clients`` SuperNodes at once, run one round, measure it.

    With ``node_auth`` (the coordinator's default) every client makes its node key and the
    coordinator enrolls it before starting; registering them is part of its start-up time.
    """
    from oppu.coordinator.coordinator import Coordinator
    from oppu.shared.cli_support import console
    from oppu.shared.errors import OppuError
    from oppu.shared.federation.processes import free_port

    if clients < 1:
        raise ValueError("--clients must be at least 1")
    used_aggregation = choose_aggregation(aggregation, clients)  # refuses secagg below 3
    budget = check_memory(clients, max_clientapps, force)
    console.print(f"{clients} clients: estimated peak {budget['estimated_mb']} MB of "
                  f"{budget['available_mb']} MB available.")
    base = ensure_tiny_base()
    root = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="oppu-load-"))
    root.mkdir(parents=True, exist_ok=True)
    console.print(f"Working in {root}")
    coordinator = Coordinator(root / "coordinator", base, host="127.0.0.1",
                              port=free_port(), base_port=0,
                              **({} if node_auth else {"node_auth": False}))
    bin_dir = concurrency_wrappers(root / "bin", max_clientapps) if max_clientapps else None
    nodes = prepare_nodes(root, clients, coordinator, bin_dir=bin_dir)
    sampler = TreeSampler(nodes, wrapper=str(bin_dir / "flwr-clientapp").encode()
                          if bin_dir is not None else None)
    failures: list[dict[str, Any]] = []
    result, run_id = None, None
    times: dict[str, float | None] = {}
    started = t_stop = time.time()
    t_launch: float | None = None
    try:
        with coordinator:
            times["coordinator_start_s"] = time.time() - started
            sampler.superlink_pid = coordinator.superlink.pid
            sampler.start()
            t_launch = time.time()
            for node in nodes:
                node.launch()
            try:
                joined = _connect(nodes, connect_timeout or 120.0 + 2.0 * clients, t_launch,
                                  times, failures)
                sampler.mark_idle()
                result, run_id, times_round = run_round(coordinator, joined, aggregation,
                                                        round_timeout, failures)
                times.update(times_round)
            finally:
                sampler.stop()
                t_stop = time.time()
                stop_all(nodes)
                times["stop_nodes_s"] = time.time() - t_stop
                t_stop = time.time()
        times["stop_coordinator_s"] = time.time() - t_stop
    except OppuError as exc:  # the coordinator itself did not start
        failures.append({"client": "coordinator", "stage": "start", "error": str(exc),
                         "log_tail": ""})
    finally:
        sampler.stop()
        stop_all(nodes)
    t_end = time.time()

    per_client = client_outcomes(nodes, sampler, run_id, times, failures, t_launch)
    times["total_s"] = t_end - started
    report = build_report(clients, aggregation, used_aggregation, max_clientapps, result,
                          nodes, sampler, failures, times, budget, base,
                          sum(1 for c in per_client if c["result_s"] is not None), root)
    report["per_client"] = per_client
    if report["memory_mb"]["clientapp_peak_max"]:
        save_calibration(report)
    if not keep and work_dir is None:
        shutil.rmtree(root, ignore_errors=True)
        report["work_dir"] = None
    return report
