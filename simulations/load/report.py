"""What a load test run measured, as one JSON report (``LOAD_JSON {...}`` and ``--out``).

Clients joined / served / failed (each failure with its log tail); time from launch to the
SuperNodes connected; from submitting the round to the first and last client result (the
mtime of each client's own round record; the audit log gives each reply's time, to the
second); the round's wall time; ClientApp CPU-seconds; and memory: the peak RSS of the whole
process tree and per client. ``per_client`` holds each client's own timeline.
"""

from __future__ import annotations

import calendar
import os
import statistics
import time
from pathlib import Path
from typing import Any

from oppu.simulations.load.memory_budget import max_clients, per_client_mb
from oppu.simulations.load.round import FAST_ROUND
from oppu.simulations.load.sampler import TreeSampler
from oppu.simulations.load.supernode import SuperNode

JSON_PREFIX = "LOAD_JSON "
VERSION = 1


def failure(node: SuperNode, stage: str, error: str) -> dict[str, Any]:
    """One failed client, with the tail of its SuperNode's log to say why."""
    return {"client": node.name, "stage": stage, "error": error, "log_tail": node.log_tail()}


def client_outcomes(nodes: list[SuperNode], sampler: TreeSampler, run_id: str | None,
                    times: dict[str, float | None], failures: list[dict[str, Any]],
                    t_launch: float | None) -> list[dict]:
    """Each client's timeline from its own files: when it connected, when it finished its
    local round (its record's mtime), when it sent each reply (audit log, whole seconds).
    Adds the first/last result times to ``times`` and failed clients to ``failures``."""
    finish_times, reply_times, per_client = [], [], []
    t_submit = times.get("submitted_at")
    for index, node in enumerate(nodes):
        found = node.records(run_id) if run_id is not None else []
        record = found[0] if found else None
        if record is not None:
            finish_times.append(record.stat().st_mtime)
        entries = [e for e in node.sent() if str(e.get("run_id")) == str(run_id)]
        errors = [e["error"] for e in entries if e.get("error")]
        stamps = [t for t in map(_audit_time, entries) if t is not None]
        if stamps:
            reply_times.append(stamps[-1])
        per_client.append({
            "client": node.name,
            "connected_s": _since(node.connected_at, t_launch),
            "relaunches": node.rejoin.relaunches if node.rejoin is not None else 0,
            "result_s": _since(record.stat().st_mtime if record else None, t_submit),
            "replies_s": [_since(t, t_submit) for t in stamps],
            "idle_mb": _mb(sampler.node_idle.get(index, 0)),
            "peak_mb": _mb(sampler.node_peaks.get(index, 0)),
            "error": errors[0] if errors else None})
        if node.connected_at is not None and (errors or record is None):
            failures.append(failure(node, "round", errors[0] if errors
                                    else "no local record of the round"))
        elif node.connected_at is not None and node.exited is not None:
            failures.append(failure(node, "exited", f"exited with code {node.exited}"))
    if t_submit is not None:
        if finish_times:
            times["submit_to_first_result_s"] = min(finish_times) - t_submit
            times["submit_to_last_result_s"] = max(finish_times) - t_submit
        if reply_times:  # whole seconds, rounded down: known to within 1 s
            times["submit_to_last_reply_s"] = max(reply_times) - t_submit
    return per_client


def build_report(clients: int, aggregation: str, used: str, max_clientapps: int | None,
                 result: Any, nodes: list[SuperNode], sampler: TreeSampler,
                 failures: list[dict], times: dict[str, float | None], budget: dict[str, Any],
                 base: Path, finished_locally: int, root: Path) -> dict[str, Any]:
    """The report's JSON (without ``per_client``), from everything the run gathered."""
    from oppu.shared.llm.base_artifact import read_manifest

    idle = [sampler.node_idle.get(i, 0) for i, n in enumerate(nodes)
            if n.connected_at is not None and sampler.node_idle.get(i, 0)]
    peaks = [sampler.node_peaks.get(i, 0) for i in range(len(nodes))
             if sampler.node_peaks.get(i, 0)]
    apps = list(sampler.clientapp_peaks.values())
    cpu = list(sampler.clientapp_cpu.values())
    manifest = read_manifest(base)
    uncapped = not max_clientapps or max_clientapps >= clients
    share = ((sampler.peak_total - sampler.peak_coordinator) / clients
             if uncapped and sampler.peak_coordinator and apps else None)
    memory = {
        "peak_tree": _mb(sampler.peak_total),
        "self_peak": _mb(sampler.peak_self),
        "coordinator_peak": _mb(sampler.peak_coordinator),
        "node_idle_median": _mb(statistics.median(idle)) if idle else None,
        "node_peak_max": _mb(max(peaks)) if peaks else None,
        "clientapp_peak_max": _mb(max(apps)) if apps else None,
        "clientapp_peak_median": _mb(statistics.median(apps)) if apps else None,
        "clientapp_processes": len(apps),
        "concurrent_clientapps_peak": sampler.peak_concurrent,
        "client_share": _mb(share) if share is not None else None,
    }
    cpu_s = {"clientapp_max": round(max(cpu), 2) if cpu else None,
             "clientapps_per_client": round(sum(cpu) / clients, 2) if cpu else None}
    measured = {"coordinator_mb": memory["coordinator_peak"],
                "node_idle_mb": memory["node_idle_median"],
                "clientapp_mb": memory["clientapp_peak_max"],
                "client_share_mb": memory["client_share"] or 0.0}
    if all(v for k, v in measured.items() if k != "client_share_mb"):
        budget = {**budget, "measured_now": measured,
                  "max_clients_estimate_now": max_clients(budget["available_mb"],
                                                          max_clientapps, measured),
                  "per_client_mb_now": round(per_client_mb(measured))}
    rounded = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in times.items()
               if k != "submitted_at"}
    return {
        "version": VERSION,
        "clients": clients,
        "aggregation_requested": aggregation,
        "aggregation": result.aggregation if result is not None else used,
        "max_clientapps": max_clientapps,
        "joined": sum(1 for n in nodes if n.connected_at is not None),
        "relaunched": sum(1 for n in nodes if n.rejoin is not None and n.rejoin.relaunches),
        "finished_locally": finished_locally,
        "served": result.clients if result is not None else 0,
        "failures": len(failures),
        "coordinator_failures": (result.failures + result.rejected) if result is not None
        else None,
        "failure_details": failures,
        "times_s": rounded,
        "server_app_s": round(result.seconds, 2) if result is not None else None,
        "memory_mb": memory,
        "cpu_s": cpu_s,
        "budget": budget,
        "machine": {"cpus": os.cpu_count(), "available_mb_at_start": budget["available_mb"]},
        "base": {"model_id": manifest.model_id if manifest else None,
                 "version": manifest.version if manifest else None,
                 "parameters": (manifest.training or {}).get("parameters") if manifest
                 else None},
        "round": dict(FAST_ROUND),
        "run_id": result.run_id if result is not None else None,
        "work_dir": str(root),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _since(stamp: float | None, origin: float | None) -> float | None:
    return None if stamp is None or origin is None else round(stamp - origin, 2)


def _mb(value: float) -> float:
    return round(value / 2**20, 1)


def _audit_time(entry: dict) -> float | None:
    try:
        return float(calendar.timegm(time.strptime(entry["time"], "%Y-%m-%dT%H:%M:%SZ")))
    except (KeyError, ValueError):
        return None
