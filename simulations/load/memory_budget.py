"""How many clients fit: the memory of N clients, estimated from the last measurement.

Flower starts a fresh ``flwr-clientapp`` process for every message, and each imports torch
(~400 MB RSS, several CPU-seconds), so N clients training at once need about N times that.
The estimate uses this machine's last run (``$OPPU_HOME/load-test/calibration.json``, written
after every run; built-in defaults before the first), and an N that does not fit in the
memory available now is refused unless forced.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from oppu.simulations.load.tiny_base import tiny_base_dir

# Before any measurement on this machine (calibration.json absent): rounded-up figures
# measured on the 2-core / 24 GB development machine with the tiny base.
DEFAULT_CALIBRATION = {"coordinator_mb": 600.0, "node_idle_mb": 200.0, "clientapp_mb": 550.0,
                       "client_share_mb": 800.0}
"""``client_share_mb``: (peak of the tree - coordinator) / N in an uncapped run; above
SuperNode + ClientApp because a client's next ClientApp may start before the last one ended."""
WAITING_WRAPPER_MB = 15.0
"""A ``--max-clientapps`` wrapper waiting for its slot (a bare Python interpreter)."""
MEMORY_HEADROOM = 0.85
"""Share of the memory available now that a run may plan to use (the rest: page cache, others)."""


def available_memory_mb() -> float:
    """Memory available now: MemAvailable, or less under a cgroup (v2) limit."""
    available = math.inf
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            available = min(available, (int(limit) - used) / 2**20)
    except (OSError, ValueError):
        pass
    return available


def calibration_path() -> Path:
    return tiny_base_dir().parent / "calibration.json"


def load_calibration() -> dict[str, float]:
    """The last run's per-client memory on this machine, else the built-in defaults."""
    try:
        data = json.loads(calibration_path().read_text())
        return {**DEFAULT_CALIBRATION, **{k: float(v) for k, v in data.items()
                                          if k in DEFAULT_CALIBRATION}, "measured": 1.0}
    except (OSError, ValueError):
        return {**DEFAULT_CALIBRATION, "measured": 0.0}


def per_client_mb(calib: dict[str, float]) -> float:
    """One uncapped client: its SuperNode at rest plus a ClientApp, or what a whole run
    showed per client, whichever is more."""
    return max(calib["node_idle_mb"] + calib["clientapp_mb"], calib["client_share_mb"])


def estimate_mb(clients: int, max_clientapps: int | None, calib: dict[str, float]) -> float:
    """Peak memory of a round: the coordinator, every node, the ClientApps that run at once."""
    if not max_clientapps or max_clientapps >= clients:
        return calib["coordinator_mb"] + clients * per_client_mb(calib)
    return (calib["coordinator_mb"] + clients * (calib["node_idle_mb"] + WAITING_WRAPPER_MB)
            + max_clientapps * calib["clientapp_mb"])


def max_clients(available_mb: float, max_clientapps: int | None,
                calib: dict[str, float]) -> int:
    """The largest N whose estimate fits in ``MEMORY_HEADROOM`` of ``available_mb``."""
    budget = available_mb * MEMORY_HEADROOM - calib["coordinator_mb"]
    uncapped = int(budget / per_client_mb(calib))
    if not max_clientapps or max_clientapps >= uncapped:
        return max(0, uncapped)
    budget -= max_clientapps * calib["clientapp_mb"]
    return max(0, int(budget / (calib["node_idle_mb"] + WAITING_WRAPPER_MB)))


class Refused(Exception):
    """The asked-for N does not fit this machine's memory (pass --force to try anyway)."""


def check_memory(clients: int, max_clientapps: int | None, force: bool) -> dict[str, Any]:
    """The run's memory budget (estimate, what is available, the largest N that fits);
    raises ``Refused`` when ``clients`` do not fit and ``force`` is off."""
    calib = load_calibration()
    available = available_memory_mb()
    need = estimate_mb(clients, max_clientapps, calib)
    largest = max_clients(available, max_clientapps, calib)
    info = {"estimated_mb": round(need), "available_mb": round(available),
            "max_clients_estimate": largest, "calibration": calib,
            "per_client_mb": round(per_client_mb(calib))}
    if need > available * MEMORY_HEADROOM and not force:
        source = "measured on this machine" if calib["measured"] else "built-in defaults"
        raise Refused(
            f"{clients} clients need about {need / 1024:.1f} GB ({source}: coordinator "
            f"{calib['coordinator_mb']:.0f} MB + {per_client_mb(calib):.0f} MB per client: "
            f"SuperNode+SuperExec {calib['node_idle_mb']:.0f} MB at rest, ClientApp "
            f"{calib['clientapp_mb']:.0f} MB while it trains), but only "
            f"{available / 1024:.1f} GB is available "
            f"({MEMORY_HEADROOM:.0%} of it may be planned). This machine holds about "
            f"{largest} clients"
            + ("" if max_clientapps else "; --max-clientapps K lets more in, slower")
            + ". Pass --force to try anyway.")
    return info


def save_calibration(report: dict[str, Any]) -> None:
    """Keep this run's per-client memory for the next run's estimate. The coordinator's
    figure includes this process: when it has torch loaded (e.g. under pytest) it is not
    the script's, so the previous figure stays."""
    from oppu.shared.atomic import write_text_atomic

    memory = report["memory_mb"]
    coordinator = memory["coordinator_peak"]
    if "torch" in sys.modules:
        coordinator = load_calibration()["coordinator_mb"]
    calib = {**load_calibration(), "coordinator_mb": coordinator,
             "node_idle_mb": memory["node_idle_median"],
             "clientapp_mb": memory["clientapp_peak_max"],
             "clients": report["clients"], "measured_at": report["finished_at"]}
    calib.pop("measured", None)
    if memory["client_share"] is not None:
        calib["client_share_mb"] = memory["client_share"]
    if all(calib[k] for k in DEFAULT_CALIBRATION):
        write_text_atomic(calibration_path(), json.dumps(calib, indent=2))
