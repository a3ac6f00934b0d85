"""Load test on loopback: many clients join one coordinator at once and run one round.

    OPPU_HOME=.oppu-home python -m oppu.simulations.load_test --clients 4
    python -m oppu.simulations.load_test --clients 40 --max-clientapps 4 --out runs/load40.json

Everything is real except the model's size: a real ``Coordinator`` (SuperLink over TLS,
BaseStore, signed base), ``--clients`` real ``flower-supernode`` processes started at the
same moment, each with its own synthetic LaMP_2N history (6 items) and data dir, fetching
the base over TLS, training a LoRA for one step and sending its statistics back, sealed
(fewer than 3 clients) or masked by SecAgg+. The base is a *tiny* random-init Llama (2
layers, hidden 64, the embedded SmolLM2 tokenizer; ~3 M parameters, 13 MB), built once and
cached under ``$OPPU_HOME/load-test``, so the cost measured is the federation's, not the
model's.

As the coordinator requires by default, each client makes a SuperNode key that the
coordinator enrolls before it starts (``--no-node-auth``: nodes self-register); SuperNodes run
through oppu's FAB gate, as ``oppu-client join`` starts them.

Reported (rich table on stderr, ``LOAD_JSON {...}`` on stdout, the same JSON in ``--out``):
clients joined / served / failed (each failure with its log tail), time from launch to all
SuperNodes connected (each SuperNode's log saying it registered), time from submitting the
round to the first and last client result (the mtime of each client's own round record; the
audit log ``sent.jsonl`` gives each reply's time, to the second), the round's wall time
(submit to the cohort result), ClientApp CPU-seconds, and memory: the peak RSS of this whole
process tree (this process with the BaseStore, the SuperLink and its ServerApp, every
SuperNode, SuperExec and ClientApp), and per client (SuperNode + SuperExec at rest, ClientApp
peak). ``per_client`` in the JSON holds each client's own timeline.

Memory decides how many clients fit. Flower starts a fresh ``flwr-clientapp`` process for
every message, and each imports torch (~400 MB RSS, several CPU-seconds), so N clients
training at once need about N times that. The script estimates the memory of N clients from
its last measurement (``$OPPU_HOME/load-test/calibration.json``, written after every run;
built-in defaults before the first) and refuses an N that does not fit in the memory
available now, unless ``--force``.

Concurrency: Flower 1.41 has no option to limit concurrent ClientApps (``flower-supernode
--help``: only ``--isolation subprocess|process``; ``flower-superexec``'s local
``subprocess`` executor launches every task at once, only its Kubernetes executor has a
capacity). ``--max-clientapps K`` adds one here: a ``flwr-clientapp`` wrapper put first on
the SuperNodes' PATH waits for one of K machine-wide slots (file locks) and then ``exec``s
the real one, which holds the slot until it exits. Flower gives a launched ClientApp 30 s to
report in; a wrapper that finds no slot within ``SLOT_PATIENCE_S`` exits, the task's token
expires, and Flower launches it again (so waiting clients retry about every 30-35 s). This
caps memory at about N x (SuperNode + SuperExec) + K x ClientApp, at the cost of time.
"""

from __future__ import annotations

import argparse
import calendar
import json
import math
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oppu.shared.federation import (
    AGGREGATIONS,
    AUTO,
    MIN_SECAGG_CLIENTS,
    SECAGG,
    RoundKey,
    RunKey,
    choose_aggregation,
)

JSON_PREFIX = "LOAD_JSON "
VERSION = 1
CONNECTED_MARK = "SuperNode ID"
"""What a SuperNode logs once the SuperLink registered it (flwr 1.41)."""

TINY_MODEL_ID = "tiny-llama-2x64-random"
TINY_SEED = 1234
TINY_DIMS = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 4}
CATEGORIES = ("politics", "sports", "food & drink", "travel", "science & technology",
              "business")
HISTORY_ITEMS = 6

FAST_ROUND: dict[str, object] = {
    RoundKey.TASK: "LaMP_2N", RoundKey.LR: 3e-3, RoundKey.LORA_ALPHA: 16,
    RoundKey.MAX_STEPS: 1, RoundKey.EPOCHS: 1, RoundKey.BATCH_SIZE: 4, RoundKey.HOLDOUT: 2.0,
}
"""One optimizer step on 4 items, 2 held out: the round is about the federation, not the model."""

# Before any measurement on this machine (calibration.json absent): rounded-up figures
# measured on the 2-core / 24 GB development machine with this tiny base.
DEFAULT_CALIBRATION = {"coordinator_mb": 600.0, "node_idle_mb": 200.0, "clientapp_mb": 550.0,
                       "client_share_mb": 800.0}
"""``client_share_mb``: (peak of the tree - coordinator) / N in an uncapped run; above
SuperNode + ClientApp because a client's next ClientApp may start before the last one ended."""
WAITING_WRAPPER_MB = 15.0
"""A ``--max-clientapps`` wrapper waiting for its slot (a bare Python interpreter)."""
MEMORY_HEADROOM = 0.85
"""Share of the memory available now that a run may plan to use (the rest: page cache, others)."""
SLOT_PATIENCE_S = 15.0
"""How long a capped ClientApp waits for a slot before giving its task back (< Flower's 30 s)."""
SAMPLE_INTERVAL_S = 0.5


# ---- the tiny base -------------------------------------------------------------------------
def tiny_base_dir() -> Path:
    from oppu.shared.paths import oppu_home

    return oppu_home() / "load-test" / TINY_MODEL_ID


def build_tiny_base(target: Path) -> Path:
    """A random-init 2-layer Llama with the embedded tokenizer, as a BaseStore artifact."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    from oppu.shared.atomic import atomic_directory
    from oppu.shared.federation.base_artifact import verify_artifact, write_manifest
    from oppu.shared.llm.model import load_tokenizer

    tokenizer = load_tokenizer(None)
    config = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=2048,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, **TINY_DIMS)
    torch.manual_seed(TINY_SEED)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    params = sum(p.numel() for p in model.parameters())
    with atomic_directory(target) as scratch:
        model.save_pretrained(scratch, safe_serialization=True)
        tokenizer.save_pretrained(scratch)
        write_manifest(scratch, model_id=TINY_MODEL_ID, task="LaMP_2N", variant="plain",
                       training={"random_init_seed": TINY_SEED, "parameters": params,
                                 **TINY_DIMS})
    verify_artifact(target)
    return target


def ensure_tiny_base() -> Path:
    """The cached tiny base; built in a child process so torch never loads in this one
    (this process is part of the measured tree)."""
    from oppu.shared.federation.base_artifact import MANIFEST_FILE

    target = tiny_base_dir()
    if not (target / MANIFEST_FILE).is_file():
        subprocess.run([sys.executable, "-m", "oppu.simulations.load_test", "--build-base",
                        str(target)], check=True)
    return target


# ---- memory budget -------------------------------------------------------------------------
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


# ---- clients -------------------------------------------------------------------------------
def make_history(user: int, items: int = HISTORY_ITEMS) -> list[dict]:
    """A tiny synthetic LaMP_2N history (as in tests/test_federation.py)."""
    return [{"id": f"u{user}-{i}", "title": f"Headline {user}-{i} on {CATEGORIES[(user + i) % 6]}",
             "text": f"Story number {i} of user {user} about {CATEGORIES[(user + i) % 6]}.",
             "category": CATEGORIES[(user + i) % 6]} for i in range(items)]


@dataclass
class Node:
    """One SuperNode of the test and what was seen of it."""

    name: str
    data_dir: Path
    cmd: list[str]
    env: dict[str, str]
    proc: subprocess.Popen | None = None
    connected_at: float | None = None
    exited: int | None = None
    stopped: bool = False
    idle_bytes: int = 0
    peak_bytes: int = 0

    @property
    def log(self) -> Path:
        return self.data_dir / "supernode.log"

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def record(self, run_id: str) -> Path | None:
        found = list((self.data_dir / "federation").glob(f"run-{run_id}-round-*.json"))
        return found[0] if found else None

    def audit(self) -> list[dict]:
        try:
            lines = (self.data_dir / "sent.jsonl").read_text().splitlines()
        except OSError:
            return []
        return [json.loads(line) for line in lines if line.strip()]


def concurrency_wrappers(bin_dir: Path, slots: int) -> Path:
    """Scripts that cap ClientApps at ``slots`` at once, machine-wide (``--max-clientapps``).

    ``flwr-clientapp`` waits for one of ``slots`` file locks, then ``exec``s the next
    ``flwr-clientapp`` on PATH (oppu's FAB gate when the SuperNode is gated, else Flower's);
    the lock's descriptor survives ``exec``, so the slot is held until the app exits. The gate
    puts its own scripts first on the SuperNode's PATH, so ``flower-superexec`` (which the
    SuperNode starts by name and which starts the ClientApps) is wrapped too, to put this
    folder back in front.
    """
    bin_dir.mkdir(parents=True, exist_ok=True)
    slot_dir = bin_dir / "slots"
    slot_dir.mkdir(exist_ok=True)
    real_superexec = Path(sys.executable).parent / "flower-superexec"
    superexec = bin_dir / "flower-superexec"
    superexec.write_text(f'#!/bin/sh\nPATH={shlex.quote(str(bin_dir))}:"$PATH"\nexport PATH\n'
                         f'exec {shlex.quote(str(real_superexec))} "$@"\n')
    clientapp = bin_dir / "flwr-clientapp"
    clientapp.write_text(f'''#!{sys.executable}
"""oppu load test: at most {slots} ClientApps at once (see oppu.simulations.load_test)."""
import fcntl, os, shutil, sys, time
here = os.path.dirname(os.path.abspath(__file__))
rest = os.pathsep.join(d for d in os.environ.get("PATH", "").split(os.pathsep)
                       if d and os.path.abspath(d) != here)
target = shutil.which("flwr-clientapp", path=rest)
if target is None:
    sys.exit("oppu load test: no flwr-clientapp on PATH after " + here)
deadline = time.monotonic() + {SLOT_PATIENCE_S!r}
while True:
    for i in range({slots}):
        fd = os.open(os.path.join({str(slot_dir)!r}, f"slot-{{i}}"), os.O_CREAT | os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        os.set_inheritable(fd, True)
        os.execv(target, [target, *sys.argv[1:]])
    if time.monotonic() > deadline:
        sys.exit(75)  # no slot: the task's token expires and Flower launches it again
    time.sleep(0.25)
''')
    for script in (superexec, clientapp):
        script.chmod(0o755)
    return bin_dir


def prepare_nodes(root: Path, clients: int, coordinator: Any, *,
                  bin_dir: Path | None) -> list[Node]:
    """Data dir, history, node key (enrolled when the coordinator authenticates nodes) and
    ``flower-supernode`` command of every client; nothing starts here."""
    from oppu.client.cli.join import supernode_command
    from oppu.shared.federation import flower_env, free_port
    from oppu.shared.federation.signing import public_key_path

    nodes = []
    for user in range(clients):
        name = f"user{user:03d}"
        data = root / name
        data.mkdir(parents=True, exist_ok=True)
        history = data / "history.jsonl"
        history.write_text("".join(json.dumps(i) + "\n" for i in make_history(user)))
        auth: dict[str, Path] = {}
        if getattr(coordinator, "node_auth", False):
            from oppu.shared.federation.node_auth import load_or_create_node_key

            key, _ = load_or_create_node_key(data)
            coordinator.enroll(key.public, name=name)
            auth["auth_key"] = key.private
        cmd = supernode_command(
            coordinator.client_address, history=history, data_dir=data, port=free_port(),
            ca=coordinator.state.tls / "ca.pem",
            coordinator_key=public_key_path(coordinator.state.signing_key),
            base_cache=data / "base-cache", audit_log=data / "sent.jsonl", device="cpu",
            **auth)
        env = flower_env(data / "flwr", {"OPPU_HOME": str(data / "home"),
                                         "OMP_NUM_THREADS": "1"})
        if bin_dir is not None:
            env["PATH"] = str(bin_dir) + os.pathsep + env["PATH"]
        nodes.append(Node(name, data, cmd, env))
    return nodes


def stop_all(nodes: Sequence[Node]) -> None:
    """Stop every SuperNode (and its SuperExec and ClientApps), in parallel."""
    from oppu.shared.federation import stop

    running = [n for n in nodes if n.proc is not None and not n.stopped]
    for node in running:
        if node.proc.poll() is not None and node.exited is None:
            node.exited = node.proc.returncode
        node.stopped = True
    if running:
        with ThreadPoolExecutor(max_workers=min(32, len(running))) as pool:
            list(pool.map(lambda n: stop(n.proc), running))


# ---- memory sampling -----------------------------------------------------------------------
@dataclass
class TreeSampler:
    """Samples RSS of this process's whole tree, each SuperNode's tree and each ClientApp,
    every ``SAMPLE_INTERVAL_S``, in a thread (one ``/proc`` scan per sample)."""

    nodes: list[Node]
    superlink_pid: int | None = None
    wrapper: bytes | None = None
    """The ``--max-clientapps`` wrapper's path, whose waiting processes are not ClientApps."""
    peak_total: int = 0
    peak_self: int = 0
    peak_coordinator: int = 0
    peak_concurrent: int = 0
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
            node = self.nodes[index]
            node.peak_bytes = max(node.peak_bytes, total)
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


# ---- the run -------------------------------------------------------------------------------
def _mb(value: float) -> float:
    return round(value / 2**20, 1)


def _audit_time(entry: dict) -> float | None:
    try:
        return float(calendar.timegm(time.strptime(entry["time"], "%Y-%m-%dT%H:%M:%SZ")))
    except (KeyError, ValueError):
        return None


def wait_for_connections(nodes: list[Node], timeout: float) -> None:
    """Watch the SuperNodes' logs until each says it is registered (or died, or timeout)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from oppu.shared.cli_support import console

    deadline = time.monotonic() + timeout
    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("SuperNodes connected", total=len(nodes))
        pending = list(nodes)
        while pending and time.monotonic() < deadline:
            for node in list(pending):
                if node.proc.poll() is not None:
                    node.exited = node.proc.returncode
                    pending.remove(node)
                    continue
                try:
                    text = node.log.read_text(errors="replace")
                except OSError:
                    continue
                if CONNECTED_MARK in text:
                    node.connected_at = time.time()
                    pending.remove(node)
                    progress.advance(task)
            time.sleep(0.2)


def run_load_test(clients: int, *, aggregation: str = AUTO, max_clientapps: int | None = None,
                  force: bool = False, work_dir: Path | None = None, keep: bool = False,
                  connect_timeout: float | None = None, round_timeout: float = 1800.0,
                  node_auth: bool = True) -> dict[str, Any]:
    """Start a coordinator and ``clients`` SuperNodes at once, run one round, measure it.

    With ``node_auth`` (the coordinator's default) every client makes its node key and the
    coordinator enrolls it before starting; registering them is part of its start-up time.
    """
    from oppu.coordinator.federation import Coordinator
    from oppu.shared.cli_support import console
    from oppu.shared.errors import OppuError
    from oppu.shared.federation import free_port, launch

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
    nodes: list[Node] = prepare_nodes(root, clients, coordinator, bin_dir=bin_dir)
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
                node.proc = launch(node.cmd, log_path=node.log, env=node.env)
            try:
                wait_for_connections(nodes, connect_timeout or 120.0 + 2.0 * clients)
                joined = [n for n in nodes if n.connected_at is not None]
                if joined:
                    times["launch_to_first_connected_s"] = min(
                        n.connected_at for n in joined) - t_launch
                if len(joined) == len(nodes):
                    times["launch_to_all_connected_s"] = max(
                        n.connected_at for n in joined) - t_launch
                for node in nodes:
                    if node.connected_at is None:
                        why = (f"exited with code {node.exited}" if node.exited is not None
                               else "not connected in time")
                        failures.append(_failure(node, "connect", why))
                per_node = sampler.sample()
                for index, node in enumerate(nodes):
                    node.idle_bytes = per_node.get(index, 0)
                result, run_id, times_round = _run_round(coordinator, joined, aggregation,
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

    per_client = client_outcomes(nodes, run_id, times, failures, t_launch)
    times["total_s"] = t_end - started
    report = _report(clients, aggregation, used_aggregation, max_clientapps, result, nodes,
                     sampler, failures, times, budget, base,
                     sum(1 for c in per_client if c["result_s"] is not None), root)
    report["per_client"] = per_client
    if report["memory_mb"]["clientapp_peak_max"]:
        _save_calibration(report)
    if not keep and work_dir is None:
        shutil.rmtree(root, ignore_errors=True)
        report["work_dir"] = None
    return report


def client_outcomes(nodes: list[Node], run_id: str | None, times: dict[str, float | None],
                    failures: list[dict[str, Any]], t_launch: float | None) -> list[dict]:
    """Each client's timeline from its own files: when it connected, when it finished its
    local round (its record's mtime), when it sent each reply (audit log, whole seconds).
    Adds the first/last result times to ``times`` and failed clients to ``failures``."""
    finish_times, reply_times, per_client = [], [], []
    t_submit = times.get("submitted_at")
    for node in nodes:
        record = node.record(run_id) if run_id is not None else None
        if record is not None:
            finish_times.append(record.stat().st_mtime)
        entries = [e for e in node.audit() if str(e.get("run_id")) == str(run_id)]
        errors = [e["error"] for e in entries if e.get("error")]
        stamps = [t for t in map(_audit_time, entries) if t is not None]
        if stamps:
            reply_times.append(stamps[-1])
        per_client.append({
            "client": node.name,
            "connected_s": _since(node.connected_at, t_launch),
            "result_s": _since(record.stat().st_mtime if record else None, t_submit),
            "replies_s": [_since(t, t_submit) for t in stamps],
            "idle_mb": _mb(node.idle_bytes), "peak_mb": _mb(node.peak_bytes),
            "error": errors[0] if errors else None})
        if node.connected_at is not None and (errors or record is None):
            failures.append(_failure(node, "round", errors[0] if errors
                                     else "no local record of the round"))
        elif node.connected_at is not None and node.exited is not None:
            failures.append(_failure(node, "exited", f"exited with code {node.exited}"))
    if t_submit is not None:
        if finish_times:
            times["submit_to_first_result_s"] = min(finish_times) - t_submit
            times["submit_to_last_result_s"] = max(finish_times) - t_submit
        if reply_times:  # whole seconds, rounded down: known to within 1 s
            times["submit_to_last_reply_s"] = max(reply_times) - t_submit
    return per_client


def _since(stamp: float | None, origin: float | None) -> float | None:
    return None if stamp is None or origin is None else round(stamp - origin, 2)


def _failure(node: Node, stage: str, error: str) -> dict[str, Any]:
    return {"client": node.name, "stage": stage, "error": error, "log_tail": node.log_tail()}


def _run_round(coordinator: Any, joined: list[Node], aggregation: str, timeout: float,
               failures: list[dict]):
    """Submit one round for the clients that joined; wait with a progress bar."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from oppu.coordinator.federation import run_log
    from oppu.shared.cli_support import console
    from oppu.shared.errors import OppuError

    times: dict[str, float] = {}
    if not joined:
        return None, None, times
    if aggregation == SECAGG and len(joined) < MIN_SECAGG_CLIENTS:
        failures.append({"client": "coordinator", "stage": "round", "log_tail": "",
                         "error": f"only {len(joined)} clients joined: too few for SecAgg+"})
        return None, None, times
    run: dict[str, str] = {}
    config = {**FAST_ROUND, RunKey.TIMEOUT: timeout, RunKey.MIN_CLIENTS: len(joined),
              RunKey.AGGREGATION: aggregation}
    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("Clients done training", total=len(joined))

        def on_submit(run_id: str) -> None:
            run["id"] = run_id
            times["run_started_s"] = time.time() - times["submitted_at"]

        def on_poll() -> None:
            if "id" in run:
                done = sum(1 for n in joined if n.record(run["id"]) is not None)
                progress.update(task, completed=done)

        times["submitted_at"] = time.time()
        try:
            result = coordinator.run_round(config, timeout=timeout, on_submit=on_submit,
                                           on_poll=on_poll)
        except OppuError as exc:
            tail = run_log(coordinator.state, run["id"])[-3000:] if "id" in run else ""
            failures.append({"client": "coordinator", "stage": "round", "error": str(exc),
                             "log_tail": tail})
            return None, run.get("id"), times
        times["round_wall_s"] = time.time() - times["submitted_at"]
        on_poll()
    return result, run.get("id"), times


def _save_calibration(report: dict[str, Any]) -> None:
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


def _report(clients: int, aggregation: str, used: str, max_clientapps: int | None,
            result: Any, nodes: list[Node], sampler: TreeSampler, failures: list[dict],
            times: dict[str, float | None], budget: dict[str, Any], base: Path,
            finished_locally: int, root: Path) -> dict[str, Any]:
    from oppu.shared.federation.base_artifact import read_manifest

    idle = [n.idle_bytes for n in nodes if n.connected_at is not None and n.idle_bytes]
    peaks = [n.peak_bytes for n in nodes if n.peak_bytes]
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


# ---- output --------------------------------------------------------------------------------
def print_table(report: dict[str, Any]) -> None:
    from rich.table import Table

    from oppu.shared.cli_support import console

    t, m = report["times_s"], report["memory_mb"]

    def sec(key: str) -> str:
        value = t.get(key)
        return "n/a" if value is None else f"{value:.1f} s"

    def mb(value: float | None) -> str:
        return "n/a" if value is None else f"{value:,.0f} MB"

    table = Table(title=f"Load test: {report['clients']} clients, {report['aggregation']}"
                  + (f", at most {report['max_clientapps']} ClientApps at once"
                     if report["max_clientapps"] else ""))
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = [
        ("clients joined", f"{report['joined']} / {report['clients']}"),
        ("clients served (aggregated)", str(report["served"])),
        ("failures", str(report["failures"])),
        ("coordinator start (TLS, BaseStore, SuperLink, keys)", sec("coordinator_start_s")),
        ("launch -> first SuperNode connected", sec("launch_to_first_connected_s")),
        ("launch -> all SuperNodes connected", sec("launch_to_all_connected_s")),
        ("submit -> run started (flwr run)", sec("run_started_s")),
        ("submit -> first client result", sec("submit_to_first_result_s")),
        ("submit -> last client result", sec("submit_to_last_result_s")),
        ("submit -> last client reply (audit, 1 s)", sec("submit_to_last_reply_s")),
        ("round wall time (submit -> cohort result)", sec("round_wall_s")),
        ("ServerApp time", "n/a" if report["server_app_s"] is None
         else f"{report['server_app_s']:.1f} s"),
        ("stop: SuperNodes / coordinator",
         f"{sec('stop_nodes_s')} / {sec('stop_coordinator_s')}"),
        ("total", sec("total_s")),
        ("peak RSS, whole process tree", mb(m["peak_tree"])),
        ("  coordinator (this process + SuperLink)", mb(m["coordinator_peak"])),
        ("  per SuperNode at rest (+ SuperExec)", mb(m["node_idle_median"])),
        ("  per ClientApp, peak (max)", mb(m["clientapp_peak_max"])),
        ("  per client, whole run ((tree - coordinator) / N)", mb(m["client_share"])),
        ("  ClientApp processes / most at once",
         f"{m['clientapp_processes']} / {m['concurrent_clientapps_peak']}"),
        ("ClientApp CPU per client, all its messages",
         "n/a" if report["cpu_s"]["clientapps_per_client"] is None
         else f"{report['cpu_s']['clientapps_per_client']:.1f} s"),
        ("largest N for memory available now",
         str(report["budget"].get("max_clients_estimate_now",
                                  report["budget"]["max_clients_estimate"]))),
    ]
    for row in rows:
        table.add_row(*row)
    console.print(table)
    for failure in report["failure_details"]:
        console.print(f"[bold red]{failure['client']}[/] ({failure['stage']}): "
                      f"{failure['error']}", highlight=False)
        if failure.get("log_tail"):
            console.print(failure["log_tail"][-1500:], highlight=False, markup=False)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m oppu.simulations.load_test",
        description="Start a real coordinator (SuperLink + TLS + BaseStore, tiny base model) "
        "and N real SuperNodes at once on loopback; run one round; report joins, "
        "timings and the process tree's peak memory.")
    p.add_argument("--clients", type=int, default=4, help="SuperNodes to start at once.")
    p.add_argument("--aggregation", choices=AGGREGATIONS, default=AUTO,
                   help="auto: sealed below 3 clients, SecAgg+ from 3.")
    p.add_argument("--max-clientapps", type=int, default=None, metavar="K",
                   help="At most K ClientApp processes at once, machine-wide (Flower has no "
                   "such option; a slot-waiting wrapper does it, see the module docstring). "
                   "Default: no cap, as Flower runs.")
    p.add_argument("--force", action="store_true",
                   help="Run even if the memory estimate exceeds what is available.")
    p.add_argument("--out", type=Path, default=Path("runs/load_test.json"),
                   help="Where to write the JSON report.")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="Keep state, data dirs and logs here (default: a temp dir, removed).")
    p.add_argument("--keep", action="store_true", help="Keep the temp work dir.")
    p.add_argument("--connect-timeout", type=float, default=None,
                   help="Seconds to wait for all SuperNodes (default 120 + 2 per client).")
    p.add_argument("--round-timeout", type=float, default=1800.0,
                   help="Seconds the round may take.")
    p.add_argument("--no-node-auth", dest="node_auth", action="store_false",
                   help="Let SuperNodes self-register (default: each client's key is "
                   "enrolled first, as the coordinator requires by default).")
    p.add_argument("--build-base", type=Path, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the load test; print the table and ``LOAD_JSON``; write ``--out``."""
    from oppu.shared.cli_support import console
    from oppu.simulations.bench_output import publish_result

    args = parse_args(argv)
    if args.build_base is not None:
        build_tiny_base(args.build_base)
        return {}
    try:
        report = run_load_test(args.clients, aggregation=args.aggregation,
                               max_clientapps=args.max_clientapps, force=args.force,
                               work_dir=args.work_dir, keep=args.keep,
                               connect_timeout=args.connect_timeout,
                               round_timeout=args.round_timeout, node_auth=args.node_auth)
    except (Refused, ValueError) as exc:
        console.print(f"[bold red]refused:[/] {exc}", highlight=False)
        raise SystemExit(2) from None
    print_table(report)
    publish_result(report, args.out, JSON_PREFIX)
    return report


if __name__ == "__main__":
    main()
