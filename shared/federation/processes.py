"""Start and stop the Flower processes both sides run locally (SuperLink, SuperNode).

Each runs in its own process group, so stopping it also stops the helpers Flower spawns
(``flower-superexec``, ``flwr-serverapp``, ``flwr-clientapp``); helpers that start sessions
of their own are found before the leader goes and stopped after it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from oppu.shared.errors import OppuError

TELEMETRY_ENV = ("FLWR_TELEMETRY_ENABLED", "RAY_USAGE_STATS_ENABLED")
"""Usage reporting that Flower and Ray switch on by default; "0" turns each off."""
UNAUTHENTICATED_API_ENV = ("FLWR_INTERNAL_GRPC_CONTROL_API", "FLWR_INTERNAL_GRPC_FLEET_API")
"""Switches that make a SuperLink also open Flower's legacy gRPC Control/Fleet API on
0.0.0.0, beside oppu's Fleet-only TLS proxy and without its checks: never passed on."""


def flower_env(flwr_home: str | Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for a Flower process: its own FLWR_HOME, this venv's scripts on PATH.

    Flower starts ``flower-superexec``, ``flwr-serverapp`` and ``flwr-clientapp`` by name, so
    the directory of this interpreter's scripts must come first on PATH. Flower's usage
    telemetry (on by default: every SuperLink, SuperNode and ClientApp posts events to
    telemetry.flower.ai), and Ray's usage stats in simulation, are off unless the user turned
    them on: a client promises to send nothing but its encrypted metrics. Flower's switches
    for its legacy gRPC APIs are dropped: they would open an unauthenticated Control API.
    """
    env = {k: v for k, v in os.environ.items() if k not in UNAUTHENTICATED_API_ENV}
    for name in TELEMETRY_ENV:
        env.setdefault(name, "0")
    env["FLWR_HOME"] = str(flwr_home)
    scripts = str(Path(sys.executable).parent)
    env["PATH"] = scripts + os.pathsep + env.get("PATH", "")
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.update(extra or {})
    return env


def launch(cmd: Sequence[str], *, log_path: str | Path,
           env: Mapping[str, str]) -> subprocess.Popen:
    """Start ``cmd`` in its own process group (so ``stop`` reaches its children too)."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        return subprocess.Popen(list(cmd), stdout=log_file, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=dict(env),
                                start_new_session=True)


def log_since(path: str | Path, offset: int = 0) -> str:
    """What a process's log gained from byte ``offset`` on ("" while there is no log): one
    attempt's lines, when a caller relaunches the process on the same log."""
    try:
        with open(path, "rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")
    except OSError:
        return ""


def stop(proc, *, grace: float = 10.0) -> None:
    """SIGINT the process group, then SIGTERM, then SIGKILL; returns once it is gone.

    Flower starts some helpers in sessions of their own (the SuperLink's SuperExec, and
    below it the simulation runtime and Ray): they are found before the leader goes, and
    stopped after it, so nothing outlives ``stop``.
    """
    if proc is None:
        return
    from oppu.shared.resources import descendants

    family = descendants(proc.pid)
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; helpers it spawned (superexec, clientapps) share its group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        break
    _stop_stragglers(family)


def _stop_stragglers(pids: Sequence[int], grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL, whichever of ``pids`` still run (e.g. Ray under SuperExec)."""
    alive = [pid for pid in pids if _signal(pid, signal.SIGTERM)]
    deadline = time.monotonic() + grace
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [pid for pid in alive if _signal(pid, 0)]
    for pid in alive:
        _signal(pid, signal.SIGKILL)


def _signal(pid: int, sig: int) -> bool:
    """Send ``sig`` to ``pid``; False when there is no such process (any more)."""
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def wait_for_port(host: str, port: int, timeout: float, *, proc=None, what: str = "server",
                  log_path: str | Path | None = None) -> None:
    """Wait until ``host:port`` accepts TCP connections; fail early if ``proc`` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = Path(log_path).read_text(errors="replace")[-3000:] if log_path else ""
            raise OppuError(f"{what} exited ({proc.returncode}) while starting.\n{tail}")
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.3)
    raise OppuError(f"{what} did not listen on {host}:{port} within {timeout:.0f} s.")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (for local SuperNodes and tests)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
