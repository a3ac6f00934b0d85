"""The names both Flower apps agree on: message records, run/node/round config keys, apps.

The coordinator and every client import these keys rather than writing them inline, so a
renamed key breaks at import time on both sides instead of silently reading a default.
"""

from __future__ import annotations

# ---- message layout ------------------------------------------------------------------------
ROUND_RECORD = "oppu.round"
"""ConfigRecord name of the round's instructions in a sealed-path message."""
SEALED_RECORD = "oppu.sealed"
"""ConfigRecord name of a sealed reply."""
SEALED_METRICS = "sealed-metrics"
"""Key of the serialized ``SealedMetrics`` (bytes) in ``SEALED_RECORD``."""
SEALED_ACTION = "sealed"
"""Message type ``train.sealed``: personalize, reply with sealed stats (no SecAgg+)."""
PERSONAL_BLOCK = "personal"
"""The one stats block of an ordinary round (no suite): the user's personal adapter."""

# ---- the Flower app --------------------------------------------------------------------------
SERVERAPP = "oppu.coordinator.server_app:app"
"""``[tool.flwr.app.components] serverapp``: what a FAB names and the FAB gate admits."""
CLIENTAPP = "oppu.client.client_app:app"
"""``[tool.flwr.app.components] clientapp``: what a FAB names and the FAB gate admits."""
DEFAULT_ROUND_TIMEOUT = 3600.0
"""Seconds a round waits for clients when the run config names no ``timeout``; the one
default for the ServerApp, ``oppu-coordinator start`` and ``Coordinator.run_round``."""
DEFAULT_STAGE_TIMEOUT = 120.0
"""Seconds a round waits for replies in a stage where clients do not train (SecAgg+'s key
setup, sharing and unmasking: seconds of work), when the run config names no
``stage-timeout``."""


class RunKey:
    """``[tool.flwr.app.config]`` keys only the ServerApp reads (run config)."""

    STATE_DIR = "state-dir"
    MIN_CLIENTS = "min-clients"
    AGGREGATION = "aggregation"
    TIMEOUT = "timeout"
    """Seconds to wait for clients to join, and for their replies in the training stage."""
    STAGE_TIMEOUT = "stage-timeout"
    """Seconds to wait for replies in every other stage (``DEFAULT_STAGE_TIMEOUT``)."""
    DP_EPSILON = "dp-epsilon"
    """Epsilon one round may cost (0: DP off unless a noise multiplier is given)."""
    DP_DELTA = "dp-delta"
    DP_NOISE_MULTIPLIER = "dp-noise-multiplier"
    """Noise std in L2 sensitivities, instead of a per-round epsilon."""
    DP_BUDGET_EPSILON = "dp-budget-epsilon"
    """Epsilon all DP rounds of this state dir may cost together (0: no limit)."""
    DP_BUDGET_DELTA = "dp-budget-delta"
    """Delta the deployment's total is stated at (0: dp-delta)."""


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


class NodeConfigKey:
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
    BASES = "bases"
    AGGREGATION = "aggregation"
    SEALING_KEY = "sealing-key"
    STAT_BOUND = "stat-bound"
    CLIP = "clip"
    SUITE = "suite"
    DP_MAX_QUERIES = "dp-max-queries"
    DP_VARIANCE = "dp-variance"
    DP_SHARE = "dp-share"


def key_names(keys: type) -> frozenset[str]:
    """The key strings one of the classes above defines (its upper-case attributes)."""
    return frozenset(v for k, v in vars(keys).items() if k.isupper() and isinstance(v, str))
