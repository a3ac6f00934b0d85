"""Memory and CPU of the load test's whole process tree, sampled in a thread.

The tree is this process (with the BaseStore), the SuperLink and its ServerApp, and every
SuperNode with its SuperExec and ClientApps; one ``/proc`` scan per sample keeps a hundred
nodes cheap to watch.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from oppu.simulations.load.supernode import SuperNode

SAMPLE_INTERVAL_S = 0.5


@dataclass
class TreeSampler:
    """Samples RSS of this process's whole tree, each SuperNode's tree and each ClientApp,
    every ``SAMPLE_INTERVAL_S``, in a thread (one ``/proc`` scan per sample)."""

    nodes: list[SuperNode]
    superlink_pid: int | None = None
    wrapper: bytes | None = None
    """The ``--max-clientapps`` wrapper's path, whose waiting processes are not ClientApps."""
    peak_total: int = 0
    peak_self: int = 0
    peak_coordinator: int = 0
    peak_concurrent: int = 0
    node_peaks: dict[int, int] = field(default_factory=dict)
    """Each node's tree at its largest, by index in ``nodes``."""
    node_idle: dict[int, int] = field(default_factory=dict)
    """Each node's tree once all had connected, before the round (``mark_idle``)."""
    clientapp_peaks: dict[int, int] = field(default_factory=dict)
    clientapp_cpu: dict[int, float] = field(default_factory=dict)
    """CPU-seconds (user + system) each ClientApp had used when last seen."""
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> TreeSampler:
        self._thread = threading.Thread(target=self._loop, daemon=True, name="rss-sampler")
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.sample()

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL_S):
            self.sample()

    def mark_idle(self) -> None:
        """Sample now and keep each node's tree as its at-rest size."""
        self.node_idle = self.sample()

    def sample(self) -> dict[int, int]:
        """One sample; returns each node's tree RSS (by node index)."""
        from oppu.shared.resources import process_rss_bytes, process_trees

        me = os.getpid()
        procs = [(i, n.proc.pid) for i, n in enumerate(self.nodes) if n.proc is not None]
        roots = [me, *[pid for _, pid in procs]]
        if self.superlink_pid is not None:
            roots.append(self.superlink_pid)
        trees = process_trees(roots)
        rss = {pid: process_rss_bytes(pid) for pid in trees[me]}
        self.peak_total = max(self.peak_total, sum(rss.values()))
        self.peak_self = max(self.peak_self, rss.get(me, 0))
        if self.superlink_pid is not None:
            coordinator = rss.get(me, 0) + sum(rss.get(p, 0) for p in trees[self.superlink_pid])
            self.peak_coordinator = max(self.peak_coordinator, coordinator)
        per_node, concurrent = {}, 0
        for index, pid in procs:
            members = trees.get(pid, [])
            total = sum(rss.get(p, 0) for p in members)
            per_node[index] = total
            self.node_peaks[index] = max(self.node_peaks.get(index, 0), total)
            for member in members[1:]:
                if _is_clientapp(member, self.wrapper):
                    concurrent += 1
                    self.clientapp_peaks[member] = max(self.clientapp_peaks.get(member, 0),
                                                       rss.get(member, 0))
                    self.clientapp_cpu[member] = max(self.clientapp_cpu.get(member, 0.0),
                                                     _cpu_seconds(member))
        self.peak_concurrent = max(self.peak_concurrent, concurrent)
        return per_node


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def _is_clientapp(pid: int, wrapper: bytes | None) -> bool:
    """A ClientApp (Flower's, or through oppu's FAB gate); not a ``--max-clientapps``
    ``wrapper`` still waiting for its slot."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"flwr-clientapp" in cmdline and not (wrapper and wrapper in cmdline)
