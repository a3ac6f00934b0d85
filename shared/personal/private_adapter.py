"""Training one user's private PEFT module on that user's history, and nothing else."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence

from oppu.shared.llm.batching import tokenize_example
from oppu.shared.llm.inference import is_prompt_learning
from oppu.shared.llm.training import TrainReport, TrainSettings, train_loop
from oppu.shared.personal.peft_methods import PeftSettings
from oppu.shared.personal.recipe import PersonalizeSettings
from oppu.shared.retrieval import HistoryIndex
from oppu.shared.tasks import Example, TaskSpec
from oppu.shared.timing import phase


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


@contextlib.contextmanager
def fresh_adapter(base_model, peft: PeftSettings, *, seed: int = 0) -> Iterator:
    """A fresh private module for the ``with`` block; the base is clean again after it,
    even when training fails (one loaded base serves many users in a long-lived process)."""
    peft_model = attach_fresh_adapter(base_model, peft, seed=seed)
    try:
        yield peft_model
    finally:
        detach_adapter(peft_model)


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
    on_epoch_end: Callable[[int], bool] | None = None,
) -> TrainReport:
    """Train the trainable (adapter) parameters of ``model`` on this user's history only."""
    if not history:
        raise ValueError("This user's history is empty: there is nothing to personalize on.")
    with phase("training"):  # retrieving each example's items included
        examples = training_examples(task, history, settings.k, labels, profile)
    return train_on_examples(model, tokenizer, examples, settings.train,
                             epochs=settings.train.epochs or task.epochs,
                             show_progress=show_progress, description=description,
                             on_epoch_end=on_epoch_end)


def train_on_examples(model, tokenizer, examples: Sequence[Example], train: TrainSettings, *,
                      epochs: int, show_progress: bool = True,
                      description: str = "personalizing",
                      on_epoch_end: Callable[[int], bool] | None = None) -> TrainReport:
    """The one way any adapter trains (private, pooled, task adaptation): tokenize, loop."""
    with phase("training"):
        tokenized = [tokenize_example(tokenizer, ex, train.max_length) for ex in examples]
        return train_loop(model, tokenized, train, epochs=epochs, pad_id=tokenizer.pad_token_id,
                          description=description, show_progress=show_progress,
                          on_epoch_end=on_epoch_end)


def detach_adapter(peft_model):
    """Remove the private module and hand back the untouched frozen base."""
    if is_prompt_learning(peft_model):
        return peft_model.base_model  # prompt tuning never touched the base's layers
    return peft_model.unload()
