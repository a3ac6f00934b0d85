"""PEFT-method registry: the private module each user trains (LoRA, prompt tuning, IA3).

peft (and with it torch) is imported only when a config is built, so CLIs start fast.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from peft import PeftConfig


@dataclass(frozen=True)
class PeftSettings:
    """Hyperparameters of the private module; defaults follow the OPPU reference."""

    method: str = field(default="lora", metadata={"help": "lora, prompt_tuning or ia3."})
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
        return PEFT_METHODS[self.method](self)


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


PEFT_METHODS: dict[str, Callable[[PeftSettings], PeftConfig]] = {
    "lora": _lora,
    "prompt_tuning": _prompt_tuning,
    "ia3": _ia3,
}
