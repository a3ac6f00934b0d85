"""PEFT-method registry: the private module each user trains (LoRA, prompt tuning, IA3).

Every list of methods (variant names such as ``oppu-ia3-k0``, report labels, figures, CLI
help) reads this registry, so a new method is one ``register_peft_method`` call. peft (and
with it torch) is imported only when a config is built, so CLIs start fast.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from peft import PeftConfig


@dataclass(frozen=True)
class PeftMethod:
    """One kind of private module: its registry name, its short name in variant names
    (``oppu-<short>-kJ``), how reports label it, and how its peft config is built."""

    name: str
    short: str
    label: str
    build: Callable[[PeftSettings], PeftConfig]


PEFT_METHODS: dict[str, PeftMethod] = {}
"""Registry name -> method, in registration order (the default, LoRA, first)."""
DEFAULT_PEFT_METHOD = "lora"
"""The paper's method: variant names leave it implicit (``oppu-k0`` is LoRA)."""


def register_peft_method(method: PeftMethod) -> PeftMethod:
    """Add a method; names and short names must be new (a clash would make names ambiguous)."""
    if method.name in PEFT_METHODS or method.short in short_names():
        raise ValueError(f"PEFT method {method.name!r} (short {method.short!r}) is already "
                         "registered.")
    PEFT_METHODS[method.name] = method
    return method


def short_names() -> dict[str, str]:
    """Short name (as in variant names) -> registry name."""
    return {m.short: m.name for m in PEFT_METHODS.values()}


@dataclass(frozen=True)
class PeftSettings:
    """Hyperparameters of the private module; defaults follow the OPPU reference."""

    method: str = field(default=DEFAULT_PEFT_METHOD,
                        metadata={"help": "A registered PEFT method."})
    r: int = field(default=8, metadata={"help": "LoRA rank."})
    alpha: int = field(default=8, metadata={"help": "LoRA alpha."})
    dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    target_modules: tuple[str, ...] = field(
        default=("q_proj", "v_proj"), metadata={"help": "Modules LoRA/IA3 adapt."}
    )
    num_virtual_tokens: int = field(default=20, metadata={"help": "Prompt-tuning length."})

    def __post_init__(self) -> None:
        if self.method not in PEFT_METHODS:
            raise ValueError(
                f"Unknown PEFT method {self.method!r}; choose one of {sorted(PEFT_METHODS)}."
            )
        if self.r < 1 or self.alpha < 1:
            raise ValueError(f"LoRA r and alpha must be >= 1 (got r={self.r}, alpha={self.alpha}).")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1) (got {self.dropout}).")
        if self.num_virtual_tokens < 1:
            raise ValueError("num_virtual_tokens must be >= 1.")

    def to_peft_config(self) -> PeftConfig:
        return PEFT_METHODS[self.method].build(self)


def _lora(s: PeftSettings) -> PeftConfig:
    from peft import LoraConfig, TaskType

    return LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=s.r,
        lora_alpha=s.alpha,
        lora_dropout=s.dropout,
        target_modules=list(s.target_modules),
        bias="none",
    )


def _prompt_tuning(s: PeftSettings) -> PeftConfig:
    from peft import PromptTuningConfig, TaskType

    return PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=s.num_virtual_tokens)


def _ia3(s: PeftSettings) -> PeftConfig:
    # IA3 scales keys/values and the MLP's down projection (feed-forward) by default.
    from peft import IA3Config, TaskType

    targets = [*s.target_modules, "down_proj"]
    return IA3Config(
        task_type=TaskType.CAUSAL_LM, target_modules=targets, feedforward_modules=["down_proj"]
    )


register_peft_method(PeftMethod("lora", "lora", "LoRA", _lora))
register_peft_method(PeftMethod("ia3", "ia3", "IA3", _ia3))
register_peft_method(PeftMethod("prompt_tuning", "pt", "prompt tuning", _prompt_tuning))
