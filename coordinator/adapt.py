"""Task adaptation: one LoRA trained on the base users' queries, merged into the base.

The paper's three variants differ only in the prompt the base learns from: plain queries,
queries with top-k items retrieved from that user's own profile ("rag"), or with a profile.
A share of the base users is held out to choose the epochs and check the result against the
untuned model and a trivial answer (``base_check``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from oppu.coordinator.base_check import (
    AdaptQuery,
    BaseCheck,
    BaseScorer,
    split_check_users,
    trivial_answers,
    with_profiles,
)
from oppu.coordinator.base_recipe import RecipeChoice, choose_recipe
from oppu.shared.atomic import atomic_directory
from oppu.shared.data import LampDataset
from oppu.shared.errors import OppuError
from oppu.shared.llm.base_artifact import BaseManifest, write_manifest
from oppu.shared.llm.training import TrainReport, TrainSettings
from oppu.shared.personal.peft_methods import PeftSettings
from oppu.shared.personal.private_adapter import attach_fresh_adapter, train_on_examples
from oppu.shared.personal.recipe import PersonalizeSettings
from oppu.shared.personal.selection import SelectionSettings
from oppu.shared.retrieval import HistoryIndex
from oppu.shared.tasks import Example, TaskSpec

VARIANTS = ("plain", "rag", "profile")
ADAPTATION_PEFT = PeftSettings(r=8, alpha=8, dropout=0.05, target_modules=("q_proj", "k_proj",
                                                                            "v_proj"))


@dataclass(frozen=True)
class AdaptSettings:
    """Which prompts the base learns from, how long it may train, and how it is checked."""

    variant: str = "plain"
    k: int = 1
    max_examples: int | None = None
    train: TrainSettings = field(default_factory=lambda: TrainSettings(epochs=3))
    check_share: float = 0.2
    """Share of the base users held out to check the base on (``base_check``)."""
    min_check_users: int = 5
    """Fewer base users than this: no check (the base trains on all of them)."""
    max_check_queries: int = 100
    """Cap on the check's queries (each is scored once per epoch)."""
    recipe_users: int = 8
    """Held-out base users the private-adapter recipe is chosen on (``base_recipe``; 0: no
    choice)."""

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"Unknown variant {self.variant!r}; choose one of {VARIANTS}.")
        if self.k < 0 or (self.variant == "rag" and self.k < 1):
            raise ValueError(f"k must be >= {int(self.variant == 'rag')} for the "
                             f"{self.variant} variant (got {self.k}).")
        if not 0 <= self.check_share < 1:
            raise ValueError(f"check_share must be in [0, 1) (got {self.check_share}).")


def adaptation_queries(dataset: LampDataset, users: Sequence[str], settings: AdaptSettings
                       ) -> list[AdaptQuery]:
    """The given (base) users' queries with golds, in the variant's prompt form.

    The "rag" variant retrieves the top-k items of the query's own profile; the "profile"
    variant keeps them to write a profile from (``with_profiles``: only for the queries used),
    so the base learns to read profiles, and with k > 0 retrieves items too (the prompt of
    PAG + RAG at that k).
    """
    task = dataset.spec
    wanted = set(users)
    queries: list[AdaptQuery] = []
    for query in dataset.queries:
        if query.user_id not in wanted or query.gold is None:
            continue
        retrieved = ()
        if settings.variant != "plain" and settings.k > 0 and query.profile:
            index = HistoryIndex(task, query.profile)
            retrieved = tuple(index.top_k(task.retrieval_query(query.input), settings.k))
        queries.append(AdaptQuery(query.user_id, query.input, query.gold, retrieved,
                                  history=tuple(query.profile)))
    return queries


def adaptation_examples(dataset: LampDataset, users: Sequence[str], settings: AdaptSettings, *,
                        profile_of: Callable[[Sequence[Mapping]], str] | None = None
                        ) -> list[Example]:
    """(prompt, gold) training pairs of the given users, at most ``max_examples``; the
    profile variant's profiles are written by ``profile_of`` (e.g. PAG with the base model)."""
    if settings.variant == "profile" and profile_of is None:
        raise ValueError("The profile variant needs profile_of (a profile writer).")
    queries = adaptation_queries(dataset, users, settings)[:settings.max_examples]
    return [Example(q.prompt(dataset.spec), q.gold) for q in with_profiles(queries, profile_of)]


@dataclass
class Adapted:
    """What ``adapt_base`` saved: the artifact's manifest, the training and the check."""

    manifest: BaseManifest
    report: TrainReport | None
    check: BaseCheck | None
    untuned_reason: str = ""
    """Why the base was saved untuned (no base users), or empty."""
    recipe: RecipeChoice | None = None

    def summary(self) -> str:
        """What ``adapt`` and ``simulate`` print: the training, the check, the recipe."""
        head = f"Base {self.manifest.version[:12]}: "
        if self.untuned_reason:
            lines = [head + self.untuned_reason + "."]
        else:
            report = self.report
            lines = [head + f"{report.steps} steps in {report.seconds:.0f} s (loss "
                     f"{report.first_loss:.3f} -> {report.final_loss:.3f})."]
        if self.check is not None:
            lines.append(self.check.table())
        if self.recipe is not None:
            lines.append(self.recipe.summary())
        return "\n".join(lines)

    def warning(self) -> str | None:
        """Why this base should not be built on (below a trivial answer), or None."""
        return self.check.warning() if self.check is not None else None


def adapt_base(model, tokenizer, task: TaskSpec, queries: Sequence[AdaptQuery],
               settings: AdaptSettings, *, out_dir: Path, model_id: str,
               profile_of: Callable[[Sequence[Mapping]], str] | None = None,
               personal: PersonalizeSettings | None = None,
               refuse_weak: bool = True, show_progress: bool = True) -> Adapted:
    """Train a LoRA on the base users' ``queries``, keep its best epoch on held-out base
    users (``base_check``), merge it into ``model`` and save a verified artifact.

    Without queries (a dataset with no base users) the untuned model is saved, saying why.
    With ``refuse_weak`` a base that scores below the trivial answer is not saved: an
    ``OppuError`` carries the check's table instead. Given the ``personal`` recipe, its
    learning rate and epochs are then chosen on held-out base users (``base_recipe``) and
    stored in the manifest.
    """
    if not queries:
        reason = "no base-user queries with gold answers: the base is the untuned model"
        manifest = _save(model, tokenizer, out_dir, model_id, task.name, settings,
                         {"untuned": reason, "k": settings.k})
        return Adapted(manifest, None, None, reason)
    fit, check_queries = split_check_users(queries, settings.check_share,
                                           settings.min_check_users, settings.train.seed)
    if settings.variant == "profile" and profile_of is None:
        raise ValueError("The profile variant needs profile_of (a profile writer).")
    check_queries = with_profiles(check_queries[:settings.max_check_queries], profile_of)
    fit = with_profiles(fit[:settings.max_examples], profile_of)
    examples = [Example(q.prompt(task), q.gold) for q in fit]
    scorer = BaseScorer(task, check_queries) if check_queries else None
    check = None
    if scorer is not None:
        check = BaseCheck(scorer.metric.primary, scorer.metric.higher_is_better,
                          len({q.user_id for q in check_queries}), len(check_queries),
                          scorer.score(model, tokenizer),
                          scorer.trivial(trivial_answers(task, fit)))
    peft_model = attach_fresh_adapter(model, ADAPTATION_PEFT, seed=settings.train.seed)
    best: dict[str, object] = {}

    def on_epoch_end(epoch: int) -> bool:
        if check is None:
            return False
        check.epochs.append(scorer.score(peft_model, tokenizer))
        if check.better(check.epochs[-1], check.adapted):
            check.chosen_epochs = epoch
            best["state"] = _lora_state(peft_model)
        return False

    report = train_on_examples(peft_model, tokenizer, examples, settings.train,
                               epochs=settings.train.epochs or 3, show_progress=show_progress,
                               description="task adaptation", on_epoch_end=on_epoch_end)
    if check is not None:
        _restore(peft_model, best.get("state"))
        warning = check.warning()
        if warning and refuse_weak:
            peft_model.unload()
            raise OppuError(f"{warning}\n{check.table()}\nNothing was saved. Train longer or "
                            "on more base users, or pass --accept-weak-base to keep it.")
    merged = peft_model.merge_and_unload()
    training = {"examples": len(examples), "steps": report.steps, "k": settings.k,
                **settings.train.to_dict()}
    if check is not None:
        training["check"] = check.to_dict()
    recipe = None
    if personal is not None and check_queries and settings.recipe_users:
        recipe = choose_recipe(merged, tokenizer, task, check_queries, personal,
                               SelectionSettings(), max_users=settings.recipe_users,
                               seed=settings.train.seed)
    if recipe is not None:
        training["recipe"] = recipe.to_dict()
    return Adapted(_save(merged, tokenizer, out_dir, model_id, task.name, settings, training),
                   report, check, recipe=recipe)


def _lora_state(peft_model) -> dict:
    from peft import get_peft_model_state_dict

    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(peft_model).items()}


def _restore(peft_model, state: dict | None) -> None:
    """The kept epoch's weights; none kept means the untuned model: a zero LoRA update."""
    from peft import set_peft_model_state_dict

    if state is not None:
        set_peft_model_state_dict(peft_model, state)
        return
    import torch

    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.zero_()


def _save(model, tokenizer, out_dir: Path, model_id: str, task: str, settings: AdaptSettings,
          training: dict) -> BaseManifest:
    with atomic_directory(out_dir) as scratch:
        model.save_pretrained(scratch, safe_serialization=True)
        tokenizer.save_pretrained(scratch)
        return write_manifest(scratch, model_id=model_id, task=task, variant=settings.variant,
                              training=training)
