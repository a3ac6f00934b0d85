"""A round's instructions: one ``RoundConfig``, sent as a ``ConfigRecord`` of scalars.

The legacy FitIns path that SecAgg+ needs accepts nothing but scalars, so the round travels
as ``to_config()`` and is read back with ``from_config()``. A round arrives from the network
(the client) or a hand-written run config (the coordinator), so every field is checked for
type and range here, and each refusal is a ``ConfigError`` naming the offending key.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING

from oppu.shared.errors import ConfigError, brief
from oppu.shared.federation.aggregation_modes import AGGREGATIONS, AUTO, SEALED, SECAGG
from oppu.shared.federation.keys import PERSONAL_BLOCK, RoundKey
from oppu.shared.personal.bases import parse_base_name
from oppu.shared.personal.peft_methods import PEFT_METHODS
from oppu.shared.personal.recipe import (
    DEFAULT_LORA_ALPHA,
    DEFAULT_LR,
    PROFILE_MODES,
    PersonalizeSettings,
    recipe_from_options,
    recipe_options,
)

if TYPE_CHECKING:
    from oppu.shared.metrics import MetricSpec

FORMAT_VERSION = 1
"""Version of the round record; a client refuses a newer one rather than misread it."""


@dataclass(frozen=True)
class RoundConfig:
    """Everything a client needs for one round; nothing here is about any user."""

    task: str = field(metadata={"key": RoundKey.TASK})
    round: int = field(default=1, metadata={"key": RoundKey.ROUND})
    peft_method: str = field(default="lora", metadata={"key": RoundKey.PEFT_METHOD})
    lora_r: int = field(default=8, metadata={"key": RoundKey.LORA_R})
    lora_alpha: int = field(default=DEFAULT_LORA_ALPHA, metadata={"key": RoundKey.LORA_ALPHA})
    k: int = field(default=0, metadata={"key": RoundKey.K})
    profile_mode: str = field(default="none", metadata={"key": RoundKey.PROFILE_MODE})
    epochs: int = field(default=0, metadata={"key": RoundKey.EPOCHS, "help": "0: task's."})
    lr: float = field(default=DEFAULT_LR, metadata={"key": RoundKey.LR})
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
    bases: str = field(default="", metadata={
        "key": RoundKey.BASES,
        "help": "JSON {base name: version} of every served base (plain, rag-kJ, profile-kJ); "
                "each suite variant runs on its family's. Empty: all on base-version."})
    aggregation: str = field(default=SECAGG, metadata={"key": RoundKey.AGGREGATION})
    sealing_key: bytes = field(default=b"", metadata={"key": RoundKey.SEALING_KEY,
                                                      "help": "X25519 public key (raw)."})
    stat_bound: float = field(default=4096.0, metadata={"key": RoundKey.STAT_BOUND})
    clip: float = field(default=8.0, metadata={"key": RoundKey.CLIP})
    suite: str = field(default="", metadata={
        "key": RoundKey.SUITE,
        "help": "Comma-separated variants (oppu.shared.personal.suite) to evaluate and sum, "
                "one stats block each; empty: the one personal adapter."})
    dp_max_queries: int = field(default=0, metadata={
        "key": RoundKey.DP_MAX_QUERIES,
        "help": "With DP: held-out queries one user counts per round (oppu.shared.dp_bounds)."})
    dp_variance: float = field(default=0.0, metadata={
        "key": RoundKey.DP_VARIANCE,
        "help": "Skellam noise variance per statistic of what the coordinator sees, in "
                "SecAgg+ grid steps (oppu.shared.federation.dp_mechanism); 0: DP off."})
    dp_share: int = field(default=1, metadata={
        "key": RoundKey.DP_SHARE,
        "help": "Fewest clients a SecAgg+ sum holds: each adds dp-variance / dp-share."})

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
        modes = [mode for mode in AGGREGATIONS if mode != AUTO]  # a round runs a chosen one
        if self.aggregation not in modes:
            raise ConfigError(f"round config key '{RoundKey.AGGREGATION}' must be one of "
                              f"{', '.join(map(repr, modes))}, got {brief(self.aggregation)}.")
        if self.aggregation == SEALED and len(self.sealing_key) not in (0, 32):
            raise ConfigError(f"round config key '{RoundKey.SEALING_KEY}': the sealing key "
                              "must be a raw 32-byte X25519 public key.")
        if len(set(self.blocks)) != len(self.blocks) or any("/" in b for b in self.blocks):
            raise ConfigError(f"round config key '{RoundKey.SUITE}' must list distinct variant "
                              f"names without '/', got {brief(self.suite)}.")
        if self.holdout >= 1 and not float(self.holdout).is_integer():
            raise ConfigError(f"round config key '{RoundKey.HOLDOUT}': a holdout of 1 or more "
                              f"is a count of items and must be whole, got {self.holdout}.")
        self._check_names()
        if self.dp_variance > 0:
            self._check_dp()

    def _check_dp(self) -> None:
        """A DP round needs a query cap, and room within stat-bound for a client's noise
        (SecAgg+ clips beyond it, which would bias the sum)."""
        from oppu.shared.dp_bounds import contribution_bounds
        from oppu.shared.federation.dp_mechanism import needed_stat_bound

        if self.dp_max_queries < 1:
            raise ConfigError(f"round config key '{RoundKey.DP_MAX_QUERIES}' must be at "
                              "least 1 when DP is on (dp-variance > 0).")
        share = 1 if self.aggregation == SEALED else self.dp_share
        needed = needed_stat_bound(contribution_bounds(self.metric(), self.dp_max_queries),
                                   self.dp_variance, share, self.stat_bound)
        if needed > self.stat_bound:
            raise ConfigError(f"round config key '{RoundKey.STAT_BOUND}' ({self.stat_bound:g}) "
                              f"leaves no room for a client's DP noise: raise it to at least "
                              f"{needed:.0f}.")

    def _check_names(self) -> None:
        """PEFT method, profile mode and suite names against their registries, so a
        coordinator refuses a bad round before any client is asked to train."""
        from oppu.shared.personal.suite import parse_suite

        if self.peft_method not in PEFT_METHODS:
            raise ConfigError(f"round config key '{RoundKey.PEFT_METHOD}' must be one of "
                              f"{', '.join(PEFT_METHODS)}, got {brief(self.peft_method)}.")
        if self.profile_mode not in PROFILE_MODES:
            raise ConfigError(f"round config key '{RoundKey.PROFILE_MODE}' must be one of "
                              f"{', '.join(PROFILE_MODES)}, got {brief(self.profile_mode)}.")
        if self.suite.strip():
            try:
                parse_suite(self.suite)
            except ValueError as exc:
                raise ConfigError(f"round config key '{RoundKey.SUITE}': {exc}") from None
        versions = self.base_versions()
        missing = [name for name in self.needed_bases() if name not in versions]
        if versions and missing:
            raise ConfigError(f"round config key '{RoundKey.BASES}' serves "
                              f"{', '.join(versions)} but the round's variants also run on "
                              f"{', '.join(missing)}: adapt and serve those bases too.")

    def base_versions(self) -> dict[str, str]:
        """Base name -> version of each served base (``bases``); empty: one base for all."""
        if not self.bases:
            return {}
        try:
            versions = json.loads(self.bases)
        except (ValueError, RecursionError):
            versions = None
        if not isinstance(versions, dict) or not all(
                isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v)
                for v in versions.values()):
            raise ConfigError(f"round config key '{RoundKey.BASES}' must be a JSON object of "
                              f"base names to sha256 versions, got {brief(self.bases)}.")
        for name in versions:
            try:
                parse_base_name(name)
            except ValueError as exc:
                raise ConfigError(f"round config key '{RoundKey.BASES}': {exc}") from None
        return versions

    def base_version_for(self, name: str) -> str:
        """The version of the base named ``name`` (``base_version`` when one serves all)."""
        return self.base_versions().get(name, self.base_version)

    def needed_bases(self) -> tuple[str, ...]:
        """The bases this round's variants run on, plain first."""
        from oppu.shared.personal.suite import suite_bases
        from oppu.shared.personal.variants.oppu import personal_variant_name

        if self.suite.strip():
            return suite_bases(self.suite)
        return suite_bases([personal_variant_name(self.peft_method, self.k, self.profile_mode)])

    def recipe(self) -> PersonalizeSettings:
        """The round's private-adapter recipe (the client side of ``recipe_entries``)."""
        return recipe_from_options(
            peft=self.peft_method, lora_r=self.lora_r, lora_alpha=self.lora_alpha, lr=self.lr,
            epochs=self.epochs, batch_size=self.batch_size, max_steps=self.max_steps,
            seed=self.seed, k=self.k, profile=self.profile_mode)

    @property
    def blocks(self) -> tuple[str, ...]:
        """Names of the stats blocks a client's vector holds, in order (``BlockMetric``)."""
        names = tuple(v.strip() for v in self.suite.split(",") if v.strip())
        return names or (PERSONAL_BLOCK,)

    @property
    def pairs(self) -> tuple[str, ...]:
        """The suite's paired comparisons, one stats block each after the variants'."""
        from oppu.shared.personal.suite import comparison_pairs

        return comparison_pairs(self.blocks) if self.suite.strip() else ()

    def metric(self) -> MetricSpec:
        """What a client's vector holds: the task's metric, or with a suite one block of it
        per variant and one ``PairMetric`` block per comparison."""
        from oppu.shared.block_metric import BlockMetric
        from oppu.shared.metrics import make_metric
        from oppu.shared.tasks import get_task

        inner = make_metric(get_task(self.task).kind, self.labels)
        return BlockMetric(inner, self.blocks, self.pairs) if self.suite.strip() else inner

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
    "dp_max_queries": (0, 10**6),
    "dp_share": (1, 1023),  # MAX_SECAGG_CLIENTS
}
"""Whole-number fields: (lowest, highest). The highest are far past any real round; a value
beyond is a typo or a hostile message, and would fail later and less clearly."""
_FLOAT_RANGES: dict[str, tuple[float, float, bool]] = {
    "lr": (0.0, 10.0, False),
    "holdout": (0.0, 1e9, True),
    "stat_bound": (0.0, 1e12, False),
    "clip": (0.0, 1e9, False),
    "dp_variance": (0.0, 1e30, True),
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


RECIPE_KEYS: dict[str, str] = {
    "peft": RoundKey.PEFT_METHOD, "lora_r": RoundKey.LORA_R, "lora_alpha": RoundKey.LORA_ALPHA,
    "lr": RoundKey.LR, "epochs": RoundKey.EPOCHS, "batch_size": RoundKey.BATCH_SIZE,
    "max_steps": RoundKey.MAX_STEPS, "seed": RoundKey.SEED, "k": RoundKey.K,
    "profile": RoundKey.PROFILE_MODE,
}
"""``recipe_from_options`` keyword -> the round's (and run config's) key carrying it."""


def recipe_entries(recipe: PersonalizeSettings) -> dict[str, object]:
    """A recipe as run-config entries: what ``start`` and ``simulate`` send, and what
    ``RoundConfig.recipe`` reads back on the client."""
    return {RECIPE_KEYS[name]: value for name, value in recipe_options(recipe).items()}


def run_config_overrides(run_config: Mapping[str, object]) -> dict[str, object]:
    """The round fields present in a Flower run config, as ``RoundConfig`` keyword args."""
    by_key = {f.metadata["key"]: f for f in fields(RoundConfig)}
    out: dict[str, object] = {}
    for key, value in run_config.items():
        f = by_key.get(key)
        if f is None or f.name in ("base_key", "bases", "sealing_key", "aggregation",
                                   "dp_variance", "dp_share"):  # the coordinator's to set
            continue
        if f.name == "labels":
            out[f.name] = _run_config_labels(key, value)
        else:
            out[f.name] = _coerce(f.type, value, key)
    return out
