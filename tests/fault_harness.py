"""Real faults for tests: signal whole process trees, poll files and logs with a deadline,
checksum a client's private files, and run a BaseStore in a process of its own.

Clients are the shared SuperNode harness (``oppu.simulations.load.supernode``), extended here
with what only fault tests do to them: kill, freeze, thaw, and waits on their logs.

Run as a script it serves a base artifact (``serve-base``), so a test can SIGKILL the server
mid-transfer and start another on the same port, as a crashed coordinator would.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from oppu.simulations.load.supernode import SuperNode

T = TypeVar("T")

TRAINING_LINE = "base loaded; personalizing on"
"""What a client's ClientApp logs (into its SuperNode's log) right before it trains."""


# ---- waiting -------------------------------------------------------------------------------
def wait_until(condition: Callable[[], T], *, timeout: float, what: str,
               poll: float = 0.2, diagnose: Callable[[], str] | None = None) -> T:
    """Poll ``condition`` until it returns something truthy (returned), or fail by ``timeout``.

    ``diagnose`` adds context (e.g. a log's tail) to the failure message.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f"\n{diagnose()}" if diagnose is not None else ""
            raise AssertionError(f"Timed out after {timeout:.0f} s waiting for {what}.{extra}")
        time.sleep(poll)


# ---- process trees -------------------------------------------------------------------------
def tree(proc: subprocess.Popen) -> list[int]:
    """``proc`` and every process below it (Flower's SuperExec, its ClientApps)."""
    from oppu.shared.resources import descendants

    return [proc.pid, *descendants(proc.pid)]


def signal_tree(proc: subprocess.Popen, sig: int) -> None:
    """Send ``sig`` to ``proc``'s process group and to each descendant, wherever it lives."""
    pids = tree(proc)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def kill_tree(proc: subprocess.Popen | None, *, timeout: float = 10.0) -> None:
    """SIGKILL ``proc`` and its descendants (a crash: no handler runs) and reap it."""
    if proc is None:
        return
    signal_tree(proc, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)


# ---- files ---------------------------------------------------------------------------------
def digests(paths: Iterable[Path]) -> dict[str, str]:
    """sha256 of every file under ``paths`` (files or folders), keyed by path."""
    out = {}
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def count_in(path: Path, text: str, *, after: int = 0) -> int:
    """How often ``text`` occurs in the file from byte ``after`` on (0 if it is missing)."""
    try:
        with path.open("rb") as fh:
            fh.seek(after)
            return fh.read().decode(errors="replace").count(text)
    except FileNotFoundError:
        return 0


def size_of(path: Path) -> int:
    return path.stat().st_size if path.is_file() else 0


def tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.is_file() else f"({path} missing)"


# ---- federation clients --------------------------------------------------------------------
@dataclass
class FaultClient(SuperNode):
    """A user's SuperNode (the shared harness) that a test can also kill, freeze and thaw,
    and whose log it can wait on round by round.

    ``round_mark`` is the log's size when the test last marked a round, so waits see only
    lines about that round.
    """

    round_mark: int = 0

    def wait_registered(self, timeout: float = 90.0) -> None:
        """Until the SuperLink gave this SuperNode a node id (it is then in the cohort)."""
        def registered() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"{self.name}'s SuperNode exited ({self.proc.returncode})"
                                     f" before it registered:\n{tail(self.log)}")
            return self.registered()

        wait_until(registered, timeout=timeout, what=f"{self.name}'s SuperNode to register",
                   diagnose=lambda: tail(self.log))

    def mark_round(self) -> None:
        self.round_mark = size_of(self.log)

    def lines_since_round(self, text: str) -> int:
        return count_in(self.log, text, after=self.round_mark)

    def wait_busy(self, timeout: float = 240.0) -> None:
        """Until this client's ClientApp has loaded the base and is training on the marked
        round (the line ``client_app.personalize_round`` logs right before training)."""
        wait_until(lambda: self.lines_since_round(TRAINING_LINE), timeout=timeout,
                   what=f"{self.name} to start training", diagnose=lambda: tail(self.log))

    def wait_sent(self, replies: int = 1, timeout: float = 300.0) -> None:
        """Until the SuperNode delivered ``replies`` replies since the marked round."""
        wait_until(lambda: self.lines_since_round("Sent successfully") >= replies,
                   timeout=timeout, what=f"{self.name} to send {replies} replies",
                   diagnose=lambda: tail(self.log))

    def record(self, run_id: str) -> dict | None:
        """The client's own record of a run (what it computed), if it finished that run."""
        found = self.records(run_id)
        assert len(found) <= 1, found
        return json.loads(found[0].read_text()) if found else None

    def private_digests(self) -> dict[str, str]:
        """Checksums of what must survive any fault: the history and the saved adapters."""
        return digests([self.history_path, self.data_dir / "adapters"])

    def kill(self) -> None:
        kill_tree(self.proc)

    def freeze(self) -> None:
        """SIGSTOP the whole tree: the client hangs without closing a single connection."""
        signal_tree(self.proc, signal.SIGSTOP)

    def thaw(self) -> None:
        signal_tree(self.proc, signal.SIGCONT)

    def freeze_apps(self) -> None:
        """SIGSTOP what runs below the SuperNode (Flower's SuperExec and its ClientApps) but
        not the SuperNode: it keeps heartbeating, so Flower still counts the node online,
        while no reply comes. A reply lost on its way, as the SuperLink sees it."""
        for pid in tree(self.proc)[1:]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGSTOP)


def make_client(root: Path, name: str, history: list[dict], base_dir: Path) -> FaultClient:
    """A user's data dir with a history, and a base cache pre-seeded by hard links.

    Every client gets a cache of its own (a shared one would let a frozen client hold the
    cache lock); the fetch in each round still checks every file's sha256 against the
    coordinator's signed manifest.
    """
    cache = root / f"{name}-base-cache"
    version = json.loads((base_dir / "oppu_manifest.json").read_text())["version"]
    (cache / version).mkdir(parents=True)
    for path in base_dir.iterdir():
        if path.is_file():
            try:
                os.link(path, cache / version / path.name)
            except OSError:
                shutil.copy2(path, cache / version / path.name)
    return FaultClient.create(root, name, history, base_cache=cache)


# ---- a BaseStore in its own process ---------------------------------------------------------
def start_base_server(artifact: Path, key: Path, tls_dir: Path, port: int, *, log: Path,
                      requests: Path, chunk_delay: float = 0.0) -> subprocess.Popen:
    """``serve-base`` below, as a child process; returns once it listens on ``port``."""
    from oppu.shared.federation.processes import wait_for_port

    cmd = [sys.executable, __file__, "serve-base", "--artifact", str(artifact), "--key",
           str(key), "--tls-dir", str(tls_dir), "--port", str(port), "--requests",
           str(requests), "--chunk-delay", str(chunk_delay)]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_port("127.0.0.1", port, 60, proc=proc, what="BaseStore", log_path=log)
    except BaseException:
        kill_tree(proc)
        raise
    return proc


def _serve_base(args: argparse.Namespace) -> None:
    import grpc

    from oppu.coordinator.base_server import BaseStoreServer
    from oppu.shared.federation.signing import load_signing_key
    from oppu.shared.federation.tls import ensure_tls_material

    class Record(grpc.ServerInterceptor):
        """Logs each FetchFile request (path, offset) and paces its chunks."""

        def intercept_service(self, continuation, details):
            handler = continuation(details)
            if handler is None or not details.method.endswith("/FetchFile"):
                return handler

            def paced(request, context):
                with open(args.requests, "a") as fh:
                    fh.write(json.dumps({"path": request.path, "offset": request.offset,
                                         "pid": os.getpid()}) + "\n")
                for chunk in handler.unary_stream(request, context):
                    yield chunk
                    time.sleep(args.chunk_delay)  # pacing, so a test can cut mid-file

            return grpc.unary_stream_rpc_method_handler(
                paced, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)

    server = BaseStoreServer(args.artifact, load_signing_key(args.key), port=args.port,
                             tls=ensure_tls_material(args.tls_dir), interceptors=[Record()])
    server.start()
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    server.stop(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve-base")
    serve.add_argument("--artifact", type=Path, required=True)
    serve.add_argument("--key", type=Path, required=True)
    serve.add_argument("--tls-dir", type=Path, required=True)
    serve.add_argument("--port", type=int, required=True)
    serve.add_argument("--requests", type=Path, required=True)
    serve.add_argument("--chunk-delay", type=float, default=0.0)
    args = parser.parse_args(argv)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    _serve_base(args)


if __name__ == "__main__":
    main()
