"""Memory of a whole process tree (SuperLink, Ray workers, app processes), sampled over a run.

A simulation's cost is spread over processes Flower and Ray start (the SuperLink, the
simulation runtime, one Ray worker per concurrent virtual client). Their summed resident
memory, sampled while the run goes, is the number a user sizing a machine needs.
Linux ``/proc`` only; elsewhere the sampler reports nothing rather than guessing.
"""

from __future__ import annotations

import os
from pathlib import Path

_PROC = Path("/proc")


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # the process ended while we looked
        # Field 4 (ppid) follows the command name, which may itself hold spaces: ") S ppid".
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def _status_bytes(pid: int, field: str) -> int:
    """A memory field of ``/proc/<pid>/status`` (given there in kB), in bytes; 0 if absent."""
    try:
        for line in (_PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def descendants(root_pid: int) -> list[int]:
    """Every process below ``root_pid`` now, whatever session or group it moved to."""
    if not _PROC.is_dir():
        return []
    children = _children_map()
    found, stack = [], list(children.get(root_pid, ()))
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, ()))
    return found


def tree_rss_bytes(root_pid: int) -> int:
    """Resident memory of ``root_pid`` and all its descendants, now."""
    return sum(process_rss_bytes(pid) for pid in [root_pid, *descendants(root_pid)])


class PeakMemory:
    """The highest summed RSS seen over a process tree, across ``sample()`` calls."""

    def __init__(self, root_pid: int | None = None):
        self.root_pid = root_pid if root_pid is not None else os.getpid()
        self.peak_bytes = 0
        self.available = _PROC.is_dir()

    def sample(self) -> int:
        if not self.available:
            return 0
        now = tree_rss_bytes(self.root_pid)
        self.peak_bytes = max(self.peak_bytes, now)
        return now

    @property
    def peak_mb(self) -> float | None:
        return round(self.peak_bytes / 2**20, 1) if self.available else None


def process_peak_rss_mb() -> float:
    """This process's own peak RSS so far (a simulation worker's, per user record)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def release_memory() -> None:
    """Give freed memory back to the OS (glibc keeps it otherwise), e.g. after a model is
    dropped, so it does not count against the processes that run next."""
    import contextlib
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def process_trees(root_pids: list[int] | tuple[int, ...]) -> dict[int, list[int]]:
    """Each root with all its descendants (root first), from one scan of ``/proc``.

    ``descendants`` scans ``/proc`` per call; a load test watching a hundred SuperNodes
    several times a second needs one scan for all of them.
    """
    if not _PROC.is_dir():
        return {root: [] for root in root_pids}
    children = _children_map()
    trees: dict[int, list[int]] = {}
    for root in root_pids:
        found, stack = [root], list(children.get(root, ()))
        while stack:
            pid = stack.pop()
            found.append(pid)
            stack.extend(children.get(pid, ()))
        trees[root] = found
    return trees


def process_rss_bytes(pid: int) -> int:
    """One process's resident memory now (0 once it is gone)."""
    return _status_bytes(pid, "VmRSS")


def process_anon_bytes(pid: int) -> int:
    """One process's anonymous resident memory now (heap, not mapped files): where native
    growth shows."""
    return _status_bytes(pid, "RssAnon")
