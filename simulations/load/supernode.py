"""One user's real SuperNode on loopback, started as ``oppu-client join`` starts it.

The one harness for SuperNodes: the load benchmark, the federation tests and the fault tests
all use it, so they exercise the same command line, environment and key handling. Each node
lives in a data dir of its own (history, node key, Flower home, base cache, audit log, round
records, ``supernode.log``): what a caller reads afterwards is what a user would find.

Starting is three steps, so a caller can enroll every key before the coordinator starts and
launch many nodes at the same moment: ``enroll`` (the node key, when the coordinator
authenticates nodes), ``prepare`` (the command and environment) and ``launch``. ``start``
does all three, as a (re)joining user does.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from oppu.client.rejoin import CONNECTED_MARK, Rejoin
from oppu.shared.federation.processes import log_since

_Node = TypeVar("_Node", bound="SuperNode")


@dataclass
class SuperNode:
    """One user's SuperNode and what was seen of it.

    ``log_mark`` is the log's size when the SuperNode last launched, so checks of the log
    see only what this run of it wrote (a restarted node appends to the same log).
    """

    name: str
    data_dir: Path
    history: list[dict] = field(default_factory=list)
    base_cache: Path | None = None
    """Where it keeps fetched bases; ``None``: ``data_dir/base-cache``."""
    path_prefix: Path | None = None
    """A folder put first on the node's PATH (the load test's ClientApp cap)."""
    auth_key: Path | None = None
    """The node's private key once enrolled with a coordinator that authenticates nodes."""
    cmd: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    log_mark: int = 0
    starts: int = 0
    connected_at: float | None = None
    exited: int | None = None
    stopped: bool = False
    rejoin: Rejoin | None = None
    """Set by ``keep_in``: the node is started again when it exits, as ``join`` does."""
    relaunch_at: float | None = None

    @classmethod
    def create(cls: type[_Node], root: Path, name: str, history: Sequence[dict],
               **fields: Any) -> _Node:
        """A node in ``root/name`` with ``history`` written to its history file."""
        data_dir = root / name
        data_dir.mkdir(parents=True, exist_ok=True)
        node = cls(name, data_dir, list(history), **fields)
        node.history_path.write_text("".join(json.dumps(item) + "\n" for item in history))
        return node

    # ---- its files ---------------------------------------------------------------------------
    @property
    def log(self) -> Path:
        return self.data_dir / "supernode.log"

    @property
    def history_path(self) -> Path:
        return self.data_dir / "history.jsonl"

    @property
    def audit_path(self) -> Path:
        return self.data_dir / "sent.jsonl"

    def log_text(self, *, after: int = 0) -> str:
        """The log from byte ``after`` on ("" while there is none)."""
        return log_since(self.log, after)

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_text()[-chars:]

    def records(self, run_id: str) -> list[Path]:
        """The node's own record files of a run (what it computed); one once it finished."""
        return sorted((self.data_dir / "federation").glob(f"run-{run_id}-round-*.json"))

    def sent(self) -> list[dict]:
        """The audit log: one entry per reply the node sent, with its content."""
        try:
            lines = self.audit_path.read_text().splitlines()
        except OSError:
            return []
        return [json.loads(line) for line in lines if line.strip()]

    # ---- its process -------------------------------------------------------------------------
    def enroll(self, coordinator: Any) -> None:
        """Have ``coordinator`` enroll this node's key, as an operator would; nothing when it
        admits any node. The key is kept in the data dir, so a restarted node is the same."""
        if not getattr(coordinator, "node_auth", False):
            self.auth_key = None
            return
        from oppu.shared.federation.node_auth import load_or_create_node_key

        key, _ = load_or_create_node_key(self.data_dir)
        coordinator.enroll(key.public, name=self.name)
        self.auth_key = key.private

    def prepare(self, coordinator: Any, *, insecure: bool = False) -> None:
        """The ``flower-supernode`` command (through oppu's FAB gate) and its environment:
        TLS with the coordinator's CA unless ``insecure``, CPU, one OpenMP thread."""
        from oppu.client.cli.join import supernode_command
        from oppu.shared.federation.processes import flower_env, free_port
        from oppu.shared.federation.signing import public_key_path

        self.cmd = supernode_command(
            coordinator.client_address, history=self.history_path, data_dir=self.data_dir,
            port=free_port(), ca=None if insecure else coordinator.state.tls / "ca.pem",
            insecure=insecure, coordinator_key=public_key_path(coordinator.state.signing_key),
            base_cache=self.base_cache or self.data_dir / "base-cache",
            audit_log=self.audit_path, device="cpu", auth_key=self.auth_key)
        self.env = flower_env(self.data_dir / "flwr", {"OPPU_HOME": str(self.data_dir / "home"),
                                                       "OMP_NUM_THREADS": "1"})
        if self.path_prefix is not None:
            self.env["PATH"] = str(self.path_prefix) + os.pathsep + self.env["PATH"]

    def launch(self) -> subprocess.Popen:
        """Start the prepared command, its output appended to ``log``."""
        from oppu.shared.federation.processes import launch

        self.log_mark = self.log.stat().st_size if self.log.is_file() else 0
        self.proc = launch(self.cmd, log_path=self.log, env=self.env)
        self.starts += 1
        self.connected_at = self.exited = None
        self.stopped = False
        return self.proc

    def start(self, coordinator: Any, *, insecure: bool = False,
              enroll: bool = True) -> subprocess.Popen:
        """Enroll (unless done already: ``enroll=False``), prepare and launch."""
        if enroll:
            self.enroll(coordinator)
        self.prepare(coordinator, insecure=insecure)
        return self.launch()

    def registered(self) -> bool:
        """Whether the SuperLink registered this run of the node (it is then in the cohort)."""
        return CONNECTED_MARK in self.log_text(after=self.log_mark)

    def poll_exit(self) -> int | None:
        """The exit code once the process has ended (kept in ``exited``), else ``None``."""
        if self.proc is not None and self.proc.poll() is not None and self.exited is None:
            self.exited = self.proc.returncode
        return self.exited

    def keep_in(self) -> bool:
        """Called while waiting for the node: start it again once it exited by itself, when
        ``join``'s rule (``oppu.client.rejoin``) says so. Whether it is running or will be
        again; ``False`` once the rule gave up (``exited`` says how it ended)."""
        if self.proc is None or self.stopped:
            return False
        if self.rejoin is None:
            self.rejoin = Rejoin()
        if self.relaunch_at is not None:
            if time.monotonic() >= self.relaunch_at:
                self.relaunch_at = None
                self.launch()
            return True
        if self.poll_exit() is None:
            return True
        wait = self.rejoin.after_exit(self.log_text(after=self.log_mark))
        if wait is None:
            return False
        self.relaunch_at = time.monotonic() + wait
        self.connected_at = None
        return True

    def stop(self) -> None:
        """Stop the node, its SuperExec and its ClientApps, gracefully; once."""
        from oppu.shared.federation.processes import stop

        if self.proc is None or self.stopped:
            return
        self.poll_exit()
        self.stopped = True
        stop(self.proc)


def stop_all(nodes: Sequence[SuperNode]) -> None:
    """Stop every node, in parallel (each may take its grace period)."""
    running = [n for n in nodes if n.proc is not None and not n.stopped]
    if running:
        with ThreadPoolExecutor(max_workers=min(32, len(running))) as pool:
            list(pool.map(lambda node: node.stop(), running))


def wait_online(coordinator: Any, count: int, timeout: float = 240.0,
                keep: Sequence[SuperNode] = ()) -> float:
    """Until exactly ``count`` nodes are online at ``coordinator`` (after a node left, too);
    the seconds it took. The nodes in ``keep`` are started again when they exit, as ``join``
    does (after a coordinator restart they must: its SuperLink forgot their sessions)."""
    started = time.monotonic()
    while coordinator.online_nodes() != count:
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{coordinator.online_nodes()} nodes online, not {count}")
        for node in keep:
            node.keep_in()
        time.sleep(1.0)
    return time.monotonic() - started
