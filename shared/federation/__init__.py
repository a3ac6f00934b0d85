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
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from oppu.shared.errors import ConfigError, OppuError, brief
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
        "help": "Comma-separated variants (oppu.shared.personal.suite) to evaluate and sum, "
                "one stats "
                "block each; empty: the one personal adapter."})

    def __post_init__(self) -> None:
        """Check every field's type and range; ``ConfigError`` (a ValueError) names each key.

        A round arrives from the network (the client) or a hand-written run config (the
        coordinator): a bad value must stop here, not crash training or the proto encoder.
        """
        if isinstance(self.labels, list):
            object.__setattr__(self, "labels", tuple(self.labels))
        if not self.task:
            raise ConfigError("a round needs a task name (run config key 'task').")
        problems = [p for f in fields(self)
                    if (p := _field_problem(f.name, f.type, getattr(self, f.name)))]
        if problems:
            raise ConfigError("invalid round config: " + "; ".join(problems))
        if self.aggregation not in (SECAGG, SEALED):
            raise ConfigError(f"round config key '{RoundKey.AGGREGATION}' must be {SECAGG!r} "
                              f"or {SEALED!r}, got {brief(self.aggregation)}.")
        if self.aggregation == SEALED and len(self.sealing_key) not in (0, 32):
            raise ConfigError(f"round config key '{RoundKey.SEALING_KEY}': the sealing key "
                              "must be a raw 32-byte X25519 public key.")
        if len(set(self.blocks)) != len(self.blocks) or any("/" in b for b in self.blocks):
            raise ConfigError(f"round config key '{RoundKey.SUITE}' must list distinct variant "
                              f"names without '/', got {brief(self.suite)}.")
        if self.holdout >= 1 and not float(self.holdout).is_integer():
            raise ConfigError(f"round config key '{RoundKey.HOLDOUT}': a holdout of 1 or more "
                              f"is a count of items and must be whole, got {self.holdout}.")

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
        """Read a round back; unknown keys are ignored, a newer format is refused, and any
        wrong value is a ``ConfigError`` naming its key."""
        version = _as_int(RoundKey.FORMAT, config.get(RoundKey.FORMAT, FORMAT_VERSION))
        if version > FORMAT_VERSION:
            raise ConfigError(f"this client understands round format {FORMAT_VERSION}, the "
                              f"coordinator sent {version}: update oppu.")
        if RoundKey.TASK not in config:
            raise ConfigError(f"round config key '{RoundKey.TASK}' is missing: the coordinator "
                              "must name the round's task.")
        kwargs: dict[str, object] = {}
        for f in fields(cls):
            key = f.metadata["key"]
            if key not in config:
                continue
            value = config[key]
            if f.name == "labels":
                kwargs[f.name] = _json_labels(key, value)
            else:
                kwargs[f.name] = _coerce(f.type, value, key)
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


_INT_RANGES: dict[str, tuple[int, int]] = {
    "round": (0, 2**32 - 1),  # uint32 in oppu.v1 messages
    "lora_r": (1, 65_536),
    "lora_alpha": (1, 65_536),
    "k": (0, 10_000),
    "epochs": (0, 10_000),
    "batch_size": (1, 65_536),
    "max_steps": (0, 10**9),
    "seed": (0, 2**32 - 1),  # NumPy's seeds are 32-bit
}
"""Whole-number fields: (lowest, highest). The highest are far past any real round; a value
beyond is a typo or a hostile message, and would fail later and less clearly."""
_FLOAT_RANGES: dict[str, tuple[float, float, bool]] = {
    "lr": (0.0, 10.0, False),
    "holdout": (0.0, 1e9, True),
    "stat_bound": (0.0, 1e12, False),
    "clip": (0.0, 1e9, False),
}
"""Real-number fields: (low, high, whether low itself is allowed); NaN and infinity never."""


_SURROGATE = re.compile("[\ud800-\udfff]")
"""A lone surrogate: Flower, protobuf and tokenizers cannot encode it as UTF-8."""


def _key_of(name: str) -> str:
    return next(f.metadata["key"] for f in fields(RoundConfig) if f.name == name)


def _field_problem(name: str, annotation: object, value: object) -> str | None:
    """What is wrong with one field's value, naming its key; None when it is fine."""
    key = _key_of(name)
    if name in _INT_RANGES:
        low, high = _INT_RANGES[name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            return (f"key '{key}' must be a whole number from {low:,} to {high:,}, "
                    f"got {brief(value)}")
    elif name in _FLOAT_RANGES:
        low, high, closed = _FLOAT_RANGES[name]
        number = not isinstance(value, bool) and isinstance(value, (int, float))
        finite = number and (isinstance(value, int) or math.isfinite(value))  # type: ignore
        if not (finite and value <= high  # type: ignore[operator]
                and (low <= value if closed else low < value)):  # type: ignore[operator]
            bound = ">=" if closed else ">"
            return (f"key '{key}' must be a finite number {bound} {low:g} and <= {high:g}, "
                    f"got {brief(value)}")
    elif name == "labels":
        if not isinstance(value, tuple) or not all(isinstance(v, str) and v.strip()
                                                   for v in value):
            return f"key '{key}' must list non-empty strings, got {brief(value)}"
        if len(set(value)) != len(value):  # type: ignore[arg-type]
            return f"key '{key}' lists a label twice: {brief(value)}"
        if any(_SURROGATE.search(v) for v in value):
            return f"key '{key}' holds a label that is not valid Unicode text"
    elif annotation in ("bytes", bytes):
        if not isinstance(value, bytes):
            return f"key '{key}' must be bytes, got {brief(value)}"
    elif not isinstance(value, str):
        return f"key '{key}' must be a string, got {brief(value)}"
    elif _SURROGATE.search(value):
        return f"key '{key}' is not valid Unicode text (it holds a lone surrogate)"
    return None


def _as_int(key: str, value: object) -> int:
    """An int from a whole int, float or numeric string; ConfigError names the key otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    number: object = value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            number = _as_float(key, value)
    if isinstance(number, float) and number.is_integer():
        return int(number)
    raise ConfigError(f"round config key '{key}' must be a whole number, got {brief(value)}")


def _as_float(key: str, value: object) -> float:
    """A float from an int, float or numeric string; ConfigError names the key otherwise."""
    try:
        if isinstance(value, str):
            return float(value.strip())
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    except (ValueError, OverflowError):
        pass
    raise ConfigError(f"round config key '{key}' must be a number, got {brief(value)}")


def _coerce(annotation: object, value: object, key: str) -> object:
    """TOML and ConfigRecords may carry 2 for 2.0 (or the reverse): follow the field's type.

    Ranges are checked by ``RoundConfig`` itself; here a value that is not even of the
    field's kind (a list for a number, a number for a string) is refused, naming ``key``.
    """
    if annotation in ("int", int):
        return _as_int(key, value)
    if annotation in ("float", float):
        return _as_float(key, value)
    if annotation in ("bytes", bytes):
        if isinstance(value, (bytes, bytearray)):
            return bytes(value)
        raise ConfigError(f"round config key '{key}' must be bytes, got {brief(value)}")
    if not isinstance(value, str):
        raise ConfigError(f"round config key '{key}' must be a string, got {brief(value)}")
    return value


def _json_labels(key: str, value: object) -> tuple[str, ...]:
    """The label list of a round record: a JSON list of strings ("" for none)."""
    if isinstance(value, (str, bytes)) and not value:
        return ()
    try:
        labels = json.loads(value) if isinstance(value, (str, bytes)) else None
    except (ValueError, RecursionError):
        labels = None
    if not isinstance(labels, list) or not all(isinstance(v, str) for v in labels):
        raise ConfigError(f"round config key '{key}' must be a JSON list of strings, got "
                          f"{brief(value)}")
    return tuple(labels)


def _run_config_labels(key: str, value: object) -> tuple[str, ...]:
    """Labels as a run config writes them: a JSON list of strings, or "a, b, c".

    Text that is not a JSON list of strings is read as a comma list, so LaMP-1's bracketed
    labels (``[1], [2]``) work either way.
    """
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    if not isinstance(value, str):
        raise ConfigError(f"run config key '{key}' must be a comma-separated list of labels "
                          f"or a JSON list of strings, got {brief(value)}")
    text = value.strip()
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except (ValueError, RecursionError):
            parsed = None
        if isinstance(parsed, list) and all(isinstance(v, str) for v in parsed):
            return tuple(parsed)
    return tuple(lab.strip() for lab in text.split(",") if lab.strip())


def run_config_overrides(run_config: Mapping[str, object]) -> dict[str, object]:
    """The round fields present in a Flower run config, as ``RoundConfig`` keyword args."""
    by_key = {f.metadata["key"]: f for f in fields(RoundConfig)}
    out: dict[str, object] = {}
    for key, value in run_config.items():
        f = by_key.get(key)
        if f is None or f.name in ("base_key", "sealing_key", "aggregation"):
            continue
        if f.name == "labels":
            out[f.name] = _run_config_labels(key, value)
        else:
            out[f.name] = _coerce(f.type, value, key)
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
TELEMETRY_ENV = ("FLWR_TELEMETRY_ENABLED", "RAY_USAGE_STATS_ENABLED")
"""Usage reporting that Flower and Ray switch on by default; "0" turns each off."""


def flower_env(flwr_home: str | Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for a Flower process: its own FLWR_HOME, this venv's scripts on PATH.

    Flower starts ``flower-superexec``, ``flwr-serverapp`` and ``flwr-clientapp`` by name, so
    the directory of this interpreter's scripts must come first on PATH. Flower's usage
    telemetry (on by default: every SuperLink, SuperNode and ClientApp posts events to
    telemetry.flower.ai), and Ray's usage stats in simulation, are off unless the user turned
    them on: a client promises to send nothing but its encrypted metrics.
    """
    env = dict(os.environ)
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
