"""Training one user's private PEFT module on that user's history, and nothing else."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from oppu.shared.llm.batching import tokenize_example
from oppu.shared.llm.inference import is_prompt_learning
from oppu.shared.llm.training import TrainReport, TrainSettings, train_loop
from oppu.shared.personal.peft_methods import PeftSettings
from oppu.shared.retrieval import HistoryIndex
from oppu.shared.tasks import Example, TaskSpec

PROFILE_MODES = ("none", "pag", "gpg")


@dataclass(frozen=True)
class PersonalizeSettings:
    """The private module, its training recipe, and the non-parametric knowledge used with it:
    top-k retrieved history items and an optional generated profile (PAG or GPG)."""

    peft: PeftSettings = field(default_factory=PeftSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    k: int = 0
    profile: str = "none"

    def __post_init__(self) -> None:
        if self.k < 0:
            raise ValueError(f"k (retrieved history items) must be >= 0 (got {self.k}).")
        if self.profile not in PROFILE_MODES:
            raise ValueError(f"profile must be one of {PROFILE_MODES} (got {self.profile!r}).")


def training_examples(
    task: TaskSpec,
    history: Sequence[Mapping],
    k: int,
    labels: Sequence[str] | None = None,
    profile: str | None = None,
) -> list[Example]:
    """One example per history item; item i may see top-k BM25 items among items[:i].

    ``labels`` is the label list the queries will carry, so training prompts match them.
    """
    index = HistoryIndex(task, history) if k > 0 else None
    examples = []
    for i, item in enumerate(history):
        retrieved: list[Mapping] = []
        if index is not None and i > 0:
            as_query = task.query_from_item(item, labels=labels)
            if as_query is not None:
                query = task.retrieval_query(as_query[0])
                retrieved = index.top_k(query, k, before=i)
        examples.append(
            task.example_from_item(item, retrieved, labels=labels, profile=profile)
        )
    return examples


def attach_fresh_adapter(base_model, peft: PeftSettings, *, seed: int = 0):
    """A new, randomly initialised private module on top of the frozen base."""
    import torch
    from peft import get_peft_model

    torch.manual_seed(seed)
    return get_peft_model(base_model, peft.to_peft_config())


def train_private_adapter(
    model,
    tokenizer,
    task: TaskSpec,
    history: Sequence[Mapping],
    settings: PersonalizeSettings,
    *,
    labels: Sequence[str] | None = None,
    profile: str | None = None,
    show_progress: bool = True,
    description: str = "personalizing",
) -> TrainReport:
    """Train the trainable (adapter) parameters of ``model`` on this user's history only."""
    if not history:
        raise ValueError("This user's history is empty: there is nothing to personalize on.")
    examples = training_examples(task, history, settings.k, labels, profile)
    return train_on_examples(model, tokenizer, task, examples, settings,
                             show_progress=show_progress, description=description)


def train_on_examples(model, tokenizer, task: TaskSpec, examples: Sequence[Example],
                      settings: PersonalizeSettings, *, show_progress: bool = True,
                      description: str = "personalizing") -> TrainReport:
    """The recipe itself: tokenize, then train for the settings' (or the task's) epochs."""
    tokenized = [tokenize_example(tokenizer, ex, settings.train.max_length) for ex in examples]
    return train_loop(
        model,
        tokenized,
        settings.train,
        epochs=settings.train.epochs or task.epochs,
        pad_id=tokenizer.pad_token_id,
        description=description,
        show_progress=show_progress,
    )


def detach_adapter(peft_model):
    """Remove the private module and hand back the untouched frozen base."""
    if is_prompt_learning(peft_model):
        return peft_model.base_model  # prompt tuning never touched the base's layers
    return peft_model.unload()
