"""What coordinator and clients agree on over Flower: keys, the round's config, stat encoding.

Both Flower apps import their message, config and node-config keys from here, never as inline
strings. A round's instructions travel as one ``ConfigRecord`` of scalars (the legacy FitIns
path that SecAgg+ needs accepts nothing else), built from and read back into ``RoundConfig``.

Under SecAgg+ a client's statistics vector is the (masked) array it uploads. SecAgg+ clips
every value into ``[-clip, clip]`` and quantizes it, so each statistic is divided by a bound
``B`` the coordinator announces (``v / B * clip`` lies in ``[0, clip]``); a value over ``B`` is
refused rather than silently clipped. The server gets the mean of the encodings (each client
weighs 1) and multiplies back: ``sum = mean * n * B / clip``. Stochastic rounding adds at most
one quantization step per client, ``2 * B / quantization_range`` in value units, so counts are
exact after rounding while ``n * 2 * B / quantization_range < 0.5``.

The last section starts and stops the Flower processes both sides run locally (SuperLink,
SuperNode): each in its own process group, so stopping it also stops the helpers Flower
spawns (``flower-superexec``, ``flwr-serverapp``, ``flwr-clientapp``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from oppu.shared.errors import OppuError
from oppu.shared.metrics import MetricSpec, Stats

FORMAT_VERSION = 1

# ---- message layout ------------------------------------------------------------------------
ROUND_RECORD = "oppu.round"
"""ConfigRecord name of the round's instructions in a sealed-path message."""
SEALED_RECORD = "oppu.sealed"
"""ConfigRecord name of a sealed reply."""
SEALED_METRICS = "sealed-metrics"
"""Key of the serialized ``SealedMetrics`` (bytes) in ``SEALED_RECORD``."""
SEALED_ACTION = "sealed"
"""Message type ``train.sealed``: personalize, reply with sealed stats (no SecAgg+)."""

# ---- aggregation modes ---------------------------------------------------------------------
SECAGG = "secagg"
SEALED = "sealed"
AUTO = "auto"
AGGREGATIONS = (AUTO, SECAGG, SEALED)
MIN_SECAGG_CLIENTS = 3
"""With two clients a sum reveals the other client's vector: SecAgg+ needs three or more."""


class RunKey:
    """``[tool.flwr.app.config]`` keys only the ServerApp reads (run config)."""

    STATE_DIR = "state-dir"
    MIN_CLIENTS = "min-clients"
    AGGREGATION = "aggregation"
    TIMEOUT = "timeout"


class SimKey:
    """Run-config keys of simulation mode (LaMP test users as virtual clients).

    Only a simulation sets ``sim-data``: each virtual client then reads the test user its
    ``partition-id`` names from that LaMP directory, instead of a ``history-path``.
    """

    DATA = "sim-data"
    OUT = "sim-out"
    MAX_HISTORY = "max-history"
    BASE_PATH = "base-path"
    POOLED_ADAPTER = "pooled-adapter"
    BASE_MODEL = "base-model"
    SHIFT = "history-shift"
    """Share of each user's history, most query-relevant first, removed (0: none)."""
    CA = "sim-ca"
    """The coordinator's CA certificate for fetching a served base (empty: plaintext)."""


PERSONAL_BLOCK = "personal"
"""The one stats block of an ordinary round (no suite): the user's personal adapter."""


class NodeKey:
    """``--node-config`` keys of a SuperNode: the client's private settings."""

    HISTORY_PATH = "history-path"
    DATA_DIR = "data-dir"
    CA_PATH = "ca-path"
    INSECURE = "insecure"
    BASE_ADDRESS = "base-address"
    COORDINATOR_KEY = "coordinator-key"
    BASE_CACHE = "base-cache"
    AUDIT_LOG = "audit-log"
    DEVICE = "device"


class RoundKey:
    """Keys of the round's ``ConfigRecord``; the same names serve as run-config keys."""

    FORMAT = "oppu-round-format"
    ROUND = "round"
    TASK = "task"
    PEFT_METHOD = "peft-method"
    LORA_R = "lora-r"
    LORA_ALPHA = "lora-alpha"
    K = "k"
    PROFILE_MODE = "profile-mode"
    EPOCHS = "epochs"
    LR = "lr"
    BATCH_SIZE = "batch-size"
    MAX_STEPS = "max-steps"
    HOLDOUT = "holdout"
    SEED = "seed"
    LABELS = "labels"
    BASE_VERSION = "base-version"
    BASE_ADDRESS = "base-address"
    BASE_KEY = "base-key"
    AGGREGATION = "aggregation"
    SEALING_KEY = "sealing-key"
    STAT_BOUND = "stat-bound"
    CLIP = "clip"
    SUITE = "suite"


@dataclass(frozen=True)
class RoundConfig:
    """Everything a client needs for one round; nothing here is about any user."""

    task: str = field(metadata={"key": RoundKey.TASK})
    round: int = field(default=1, metadata={"key": RoundKey.ROUND})
    peft_method: str = field(default="lora", metadata={"key": RoundKey.PEFT_METHOD})
    lora_r: int = field(default=8, metadata={"key": RoundKey.LORA_R})
    lora_alpha: int = field(default=8, metadata={"key": RoundKey.LORA_ALPHA})
    k: int = field(default=0, metadata={"key": RoundKey.K})
    profile_mode: str = field(default="none", metadata={"key": RoundKey.PROFILE_MODE})
    epochs: int = field(default=0, metadata={"key": RoundKey.EPOCHS, "help": "0: task's."})
    lr: float = field(default=1e-4, metadata={"key": RoundKey.LR})
    batch_size: int = field(default=8, metadata={"key": RoundKey.BATCH_SIZE})
    max_steps: int = field(default=0, metadata={"key": RoundKey.MAX_STEPS, "help": "0: none."})
    holdout: float = field(default=0.2, metadata={"key": RoundKey.HOLDOUT,
                                                  "help": "< 1: share; >= 1: item count."})
    seed: int = field(default=0, metadata={"key": RoundKey.SEED})
    labels: tuple[str, ...] = field(default=(), metadata={"key": RoundKey.LABELS,
                                                          "help": "Empty: the task's."})
    base_version: str = field(default="", metadata={"key": RoundKey.BASE_VERSION})
    base_address: str = field(default="", metadata={"key": RoundKey.BASE_ADDRESS})
    base_key: str = field(default="", metadata={"key": RoundKey.BASE_KEY,
                                                "help": "Ed25519 public key (PEM)."})
    aggregation: str = field(default=SECAGG, metadata={"key": RoundKey.AGGREGATION})
    sealing_key: bytes = field(default=b"", metadata={"key": RoundKey.SEALING_KEY,
                                                      "help": "X25519 public key (raw)."})
    stat_bound: float = field(default=4096.0, metadata={"key": RoundKey.STAT_BOUND})
    clip: float = field(default=8.0, metadata={"key": RoundKey.CLIP})
    suite: str = field(default="", metadata={
        "key": RoundKey.SUITE,
        "help": "Comma-separated variants (oppu.client.suite) to evaluate and sum, one stats "
                "block each; empty: the one personal adapter."})

    def __post_init__(self) -> None:
        if not self.task:
            raise ValueError("a round needs a task name (run config key 'task').")
        if self.aggregation not in (SECAGG, SEALED):
            raise ValueError(f"aggregation must be {SECAGG!r} or {SEALED!r}, "
                             f"got {self.aggregation!r}.")
        if self.aggregation == SEALED and len(self.sealing_key) not in (0, 32):
            raise ValueError("the sealing key must be a raw 32-byte X25519 public key.")
        if self.stat_bound <= 0 or self.clip <= 0:
            raise ValueError("stat-bound and clip must be > 0.")
        if self.holdout < 0:
            raise ValueError(f"holdout must be >= 0 (got {self.holdout}).")

    @property
    def blocks(self) -> tuple[str, ...]:
        """Names of the stats blocks a client's vector holds, in order (``BlockMetric``)."""
        names = tuple(v.strip() for v in self.suite.split(",") if v.strip())
        return names or (PERSONAL_BLOCK,)

    @property
    def holdout_value(self) -> float | int:
        """A share of the history (< 1) or a count of items (>= 1), as ``split_history`` takes."""
        return self.holdout if self.holdout < 1 else int(self.holdout)

    def to_config(self) -> dict[str, bool | bytes | float | int | str]:
        """Scalars only (labels as a JSON list), keyed by ``RoundKey``."""
        out: dict[str, bool | bytes | float | int | str] = {RoundKey.FORMAT: FORMAT_VERSION}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.metadata["key"]] = json.dumps(list(value)) if f.name == "labels" else value
        return out

    def to_config_record(self):
        from flwr.app import ConfigRecord

        return ConfigRecord(self.to_config())

    @classmethod
    def from_config(cls, config: Mapping[str, object]) -> RoundConfig:
        """Read a round back; unknown keys are ignored, a newer format is refused."""
        version = int(config.get(RoundKey.FORMAT, FORMAT_VERSION))  # type: ignore[arg-type]
        if version > FORMAT_VERSION:
            raise ValueError(f"this client understands round format {FORMAT_VERSION}, the "
                             f"coordinator sent {version}: update oppu.")
        kwargs: dict[str, object] = {}
        for f in fields(cls):
            key = f.metadata["key"]
            if key not in config:
                continue
            value = config[key]
            if f.name == "labels":
                value = tuple(json.loads(value)) if value else ()  # type: ignore[arg-type]
            kwargs[f.name] = _coerce(f.type, value)
        return cls(**kwargs)  # type: ignore[arg-type]

    def to_proto(self, run_id: int | str):
        """The fields ``oppu.v1.RoundConfig`` has (max-steps, holdout, ... are not in it yet)."""
        from oppu.shared.proto.v1 import round_pb2

        return round_pb2.RoundConfig(
            run_id=str(run_id), round=self.round, task=self.task, peft_method=self.peft_method,
            k=self.k, profile_mode=self.profile_mode, epochs=self.epochs, lr=self.lr,
            base_version=self.base_version, labels=list(self.labels))

    def public_summary(self) -> dict:
        """For logs and results files: the fields, minus the PEM key, the sealing key in hex."""
        data = asdict(self)
        data["sealing_key"] = self.sealing_key.hex()
        data.pop("base_key")
        return data


def _coerce(annotation: object, value: object) -> object:
    """TOML and ConfigRecords may carry 2 for 2.0 (or the reverse): follow the field's type."""
    if annotation in ("int", int):
        return int(value)  # type: ignore[arg-type]
    if annotation in ("float", float):
        return float(value)  # type: ignore[arg-type]
    return value


def run_config_overrides(run_config: Mapping[str, object]) -> dict[str, object]:
    """The round fields present in a Flower run config, as ``RoundConfig`` keyword args."""
    by_key = {f.metadata["key"]: f for f in fields(RoundConfig)}
    out: dict[str, object] = {}
    for key, value in run_config.items():
        f = by_key.get(key)
        if f is None or f.name in ("base_key", "sealing_key", "aggregation"):
            continue
        if f.name == "labels":
            text = str(value).strip()
            value = tuple(json.loads(text)) if text.startswith("[") else tuple(
                lab.strip() for lab in text.split(",") if lab.strip())
        out[f.name] = _coerce(f.type, value)
    return out


# ---- SecAgg+ parameters and encoding -------------------------------------------------------
QUANTIZATION_RANGE = 1 << 22
MODULUS_RANGE = 1 << 32
MAX_SECAGG_CLIENTS = MODULUS_RANGE // QUANTIZATION_RANGE - 1
"""Each client adds up to ``QUANTIZATION_RANGE`` (its weight too) modulo ``MODULUS_RANGE``."""
SECAGG_MAX_WEIGHT = 1.0
"""Every client weighs 1 (num_examples=1): the server's weighted mean is the plain mean."""
SENTINEL = -1.0
"""Initial array value; no mean of encodings (all >= 0) can be negative."""


def choose_aggregation(requested: str, clients: int) -> str:
    """``auto`` means SecAgg+ from three clients on, sealed metrics below."""
    if requested not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {requested!r}.")
    if requested == AUTO:
        return SECAGG if clients >= MIN_SECAGG_CLIENTS else SEALED
    if requested == SECAGG and clients < MIN_SECAGG_CLIENTS:
        raise ValueError(f"SecAgg+ needs at least {MIN_SECAGG_CLIENTS} clients (min-clients "
                         f"is {clients}); use aggregation='auto' or 'sealed'.")
    return requested


def secagg_shares(clients: int) -> tuple[int, int]:
    """(num_shares, reconstruction_threshold) Flower's SecAgg+ accepts for ``clients``.

    Flower bumps an even share count that differs from the cohort size by one *after*
    sending it to clients (a client then fails with an IndexError and the server silently
    keeps its initial arrays), so the count is the cohort itself or an odd number.
    """
    if not MIN_SECAGG_CLIENTS <= clients <= MAX_SECAGG_CLIENTS:
        raise ValueError(f"SecAgg+ here takes {MIN_SECAGG_CLIENTS}..{MAX_SECAGG_CLIENTS} "
                         f"clients, got {clients}.")
    shares = clients if clients <= 11 else 11
    return shares, shares // 2 + 1


def secagg_max_error(clients: int, stat_bound: float) -> float:
    """Worst-case absolute error of a summed statistic after SecAgg+ quantization."""
    return clients * 2.0 * stat_bound / QUANTIZATION_RANGE


def encode_stats(vector: Sequence[float], stat_bound: float, clip: float) -> list[float]:
    """Map statistics in ``[0, stat_bound]`` into ``[0, clip]`` for SecAgg+."""
    over = [v for v in vector if not (0.0 <= v <= stat_bound)]
    if over:
        raise ValueError(f"a statistic ({over[0]}) lies outside [0, stat-bound={stat_bound}]; "
                         "the coordinator must raise stat-bound for this cohort.")
    return [v / stat_bound * clip for v in vector]


def decode_mean(mean: Sequence[float], clients: int, stat_bound: float,
                clip: float) -> list[float]:
    """Sums of statistics from the mean of ``clients`` encodings."""
    return [m * clients * stat_bound / clip for m in mean]


def snap_whole(metric: MetricSpec, stats: Stats, max_error: float) -> Stats:
    """Round the statistics that must be whole numbers, if within ``max_error`` of one."""
    out = dict(stats)
    for name in metric.whole_stat_names():
        nearest = round(out[name])
        if abs(out[name] - nearest) <= max(max_error, 1e-6):
            out[name] = float(nearest)
    for name, value in out.items():  # quantization noise may dip a zero slightly below 0
        if -max(max_error, 1e-9) <= value < 0:
            out[name] = 0.0
    return out


# ---- node config ---------------------------------------------------------------------------
def node_config_arg(values: Mapping[str, str | bool | int | float]) -> str:
    """A ``--node-config`` string; strings become TOML literal strings (no escapes)."""
    parts = []
    for key, value in values.items():
        if isinstance(value, bool):
            parts.append(f"{key}={'true' if value else 'false'}")
        elif isinstance(value, (int, float)):
            parts.append(f"{key}={value}")
        else:
            text = str(value)
            if "'" in text or "\n" in text:
                raise ValueError(f"{key} may not contain a single quote or newline: {text!r}")
            parts.append(f"{key}='{text}'")
    return " ".join(parts)


# ---- local processes (SuperLink, SuperNode) --------------------------------------------------
def flower_env(flwr_home: str | Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for a Flower process: its own FLWR_HOME, this venv's scripts on PATH.

    Flower starts ``flower-superexec``, ``flwr-serverapp`` and ``flwr-clientapp`` by name, so
    the directory of this interpreter's scripts must come first on PATH.
    """
    env = dict(os.environ)
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
