"""Task adaptation: one LoRA trained on the base users' queries, merged into the base.

The paper's three variants differ only in the prompt the base learns from: plain queries,
queries with top-k items retrieved from that user's own profile ("rag"), or with a profile.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from oppu.shared.atomic import atomic_directory
from oppu.shared.data import LampDataset
from oppu.shared.federation.base_artifact import BaseManifest, write_manifest
from oppu.shared.llm.training import TrainReport, TrainSettings
from oppu.shared.personal.peft_methods import PeftSettings
from oppu.shared.personal.private_adapter import attach_fresh_adapter, train_on_examples
from oppu.shared.retrieval import HistoryIndex
from oppu.shared.tasks import Example

VARIANTS = ("plain", "rag", "profile")
ADAPTATION_PEFT = PeftSettings(r=8, alpha=8, dropout=0.05, target_modules=("q_proj", "k_proj",
                                                                            "v_proj"))


@dataclass(frozen=True)
class AdaptSettings:
    """Which prompts the base learns from and how long it trains."""

    variant: str = "plain"
    k: int = 1
    max_examples: int | None = None
    train: TrainSettings = field(default_factory=lambda: TrainSettings(epochs=3))

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"Unknown variant {self.variant!r}; choose one of {VARIANTS}.")
        if self.k < 0:
            raise ValueError(f"k must be >= 0 (got {self.k}).")


def adaptation_examples(dataset: LampDataset, users: Sequence[str],
                        settings: AdaptSettings, *,
                        profile_of: Callable[[Sequence[Mapping]], str] | None = None
                        ) -> list[Example]:
    """(query, gold) pairs of the given (base) users, in the variant's prompt format.

    The "profile" variant prepends a profile written from the query's own profile items by
    ``profile_of`` (e.g. PAG with the base model), so the base learns to read profiles.
    """
    if settings.variant == "profile" and profile_of is None:
        raise ValueError("The profile variant needs profile_of (a profile writer).")
    task = dataset.spec
    wanted = set(users)
    examples: list[Example] = []
    for query in dataset.queries:
        if query.user_id not in wanted or query.gold is None:
            continue
        retrieved = []
        if settings.variant == "rag" and settings.k > 0 and query.profile:
            index = HistoryIndex(task, query.profile)
            retrieved = index.top_k(task.retrieval_query(query.input), settings.k)
        profile = None
        if settings.variant == "profile" and query.profile:
            profile = profile_of(query.profile)
        prompt = task.build_prompt(query.input, retrieved=retrieved, profile=profile)
        examples.append(Example(prompt, query.gold))
        if settings.max_examples is not None and len(examples) >= settings.max_examples:
            break
    return examples


def adapt_base(model, tokenizer, examples: Sequence[Example], settings: AdaptSettings, *,
               out_dir: Path, model_id: str, task: str,
               show_progress: bool = True) -> tuple[BaseManifest, TrainReport]:
    """Train a LoRA on ``examples``, merge it into ``model`` and save a verified artifact."""
    if not examples:
        raise ValueError("No base-user examples with gold answers: nothing to adapt on.")
    peft_model = attach_fresh_adapter(model, ADAPTATION_PEFT, seed=settings.train.seed)
    report = train_on_examples(peft_model, tokenizer, examples, settings.train,
                               epochs=settings.train.epochs or 3, show_progress=show_progress,
                               description="task adaptation")
    merged = peft_model.merge_and_unload()
    with atomic_directory(out_dir) as scratch:
        merged.save_pretrained(scratch, safe_serialization=True)
        tokenizer.save_pretrained(scratch)
        manifest = write_manifest(scratch, model_id=model_id, task=task,
                                  variant=settings.variant, training={
                                      "examples": len(examples), "steps": report.steps,
                                      "k": settings.k, **settings.train.to_dict()})
    return manifest, report
