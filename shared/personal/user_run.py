"""One user's run over a list of variants: the state they share, made once.

Profiles are written once per mode, each private adapter is trained once per (method, k,
profile) and saved, retrieval indexes the user's history once. Families call back into it
(``evaluate``, ``scored``, ``personal``, ``pooled``) to produce their ``EvalResult``.
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from oppu.shared.llm.training import TrainReport
from oppu.shared.metrics import make_metric
from oppu.shared.personal.adapter_meta import adapter_metadata, item_key
from oppu.shared.personal.evaluation import (
    EvalQuery,
    EvalResult,
    evaluate_queries,
    has_labels,
    heldout_queries,
    label_scores,
    metric_labels,
)
from oppu.shared.personal.label_prior import PRIOR_WEIGHTS, LabelPrior
from oppu.shared.personal.private_adapter import (
    attach_fresh_adapter,
    detach_adapter,
    train_private_adapter,
)
from oppu.shared.personal.profiles import ProfileCache, build_profile, model_id_of
from oppu.shared.personal.recipe import PersonalizeSettings
from oppu.shared.personal.selection import (
    Scored,
    SelectionReport,
    SelectionSettings,
    choose,
    run_grid,
    validation_split,
)
from oppu.shared.personal.variants import Variant
from oppu.shared.retrieval import HistoryIndex
from oppu.shared.tasks import TaskSpec
from oppu.shared.timing import phase


class AdapterSink(Protocol):
    """Where a user's adapters are kept (the client's ``AdapterStore``)."""

    root: Path

    def exists(self, name: str) -> bool: ...
    def metadata(self, name: str) -> dict: ...
    def load(self, base_model, name: str, *, trainable: bool = False): ...
    def save(self, peft_model, name: str, metadata: dict) -> Path: ...
    def path(self, name: str) -> Path: ...
    def record_choice(self, name: str, choice: dict) -> None: ...


def user_profile(model, tokenizer, task: TaskSpec, history: Sequence[Mapping], mode: str,
                 store: AdapterSink | None) -> str | None:
    """The user's generated profile (cached beside their adapters), or None when off.

    Built from the training items only, so held-out answers never leak into it.
    """
    if mode == "none" or not history:
        return None
    with phase("profile"):
        if store is None:
            return build_profile(model, tokenizer, task, history, mode=mode)
        return ProfileCache(store.root).get_or_build(model, tokenizer, task, history, mode=mode)


def target_text(task: TaskSpec, item: Mapping) -> str:
    """What an item "answered": its label or target text (the item's text when it has none)."""
    if task.target_field is not None:
        return str(item.get(task.target_field, "")).strip()
    return task.item_text(item).strip()


def majority_label(task: TaskSpec, history: Sequence[Mapping]) -> str:
    """The user's most frequent answer in their history ("" when none has one)."""
    counts = Counter(target_text(task, item) for item in history)
    counts.pop("", None)
    return counts.most_common(1)[0][0] if counts else ""


def label_prior(task: TaskSpec, history: Sequence[Mapping], labels: Sequence[str],
                weight: float = 0.0) -> LabelPrior:
    """The user's answer frequencies over ``labels``, from their history."""
    return LabelPrior.of((target_text(task, item) for item in history), labels, weight)


@dataclass
class TrainedAdapter:
    """A trained variant's result, kept so variants sharing the adapter reuse it."""

    result: EvalResult
    path: str | None
    report: TrainReport | None


@dataclass
class UserRun:
    """The state one user's variants share; ``model`` is the frozen base, clean after each."""

    model: object
    tokenizer: object
    task: TaskSpec
    history: list[Mapping]
    queries: list[EvalQuery]
    recipe: PersonalizeSettings
    labels: tuple[str, ...] | None
    store: AdapterSink | None = None
    pooled_adapter: Path | None = None
    primary: str | None = None
    """The variant saved as the user's own adapter for the task (the one ``ask`` uses)."""
    resume: bool = False
    base_source: str = ""
    show_progress: bool = False
    selection: SelectionSettings | None = None
    profile_model: object | None = None
    """The model that writes profiles (default ``model``): in a suite over several bases,
    the plain base writes each mode's profile once, whichever base reads it."""
    adapters: dict[str, str] = field(default_factory=dict)
    selections: dict[str, SelectionReport] = field(default_factory=dict)
    trained: dict[tuple, TrainedAdapter] = field(default_factory=dict)
    profiles: dict[str, str | None] = field(default_factory=dict)

    def target_text(self, item: Mapping) -> str:
        return target_text(self.task, item)

    def majority_label(self) -> str:
        return majority_label(self.task, self.history)

    def profile(self, mode: str) -> str | None:
        if mode not in self.profiles:  # written by a clean base, from training items only
            writer = self.model if self.profile_model is None else self.profile_model
            self.profiles[mode] = user_profile(writer, self.tokenizer, self.task, self.history,
                                               mode, self.store)
        return self.profiles[mode]

    def evaluate(self, model, k: int, mode: str = "none", retrieval: str = "bm25",
                 prior: LabelPrior | None = None) -> EvalResult:
        return evaluate_queries(model, self.tokenizer, self.task, self.queries, k=k,
                                profile=self.profile(mode), labels=self.labels,
                                retrieval=retrieval, show_progress=self.show_progress,
                                prior=prior)

    def scored(self, predictions: list[str]) -> EvalResult:
        labels = self.labels if self.labels is not None else metric_labels(self.task,
                                                                           self.queries)
        metric = make_metric(self.task.kind, labels)
        golds = [q.gold for q in self.queries]
        stats = metric.stats_for(predictions, golds)
        return EvalResult(tuple(labels), stats, metric.compute(stats), predictions, golds)

    def top_items(self, k: int) -> list[list[Mapping]]:
        """Each query's top-k BM25 items from its own history (queries often share one)."""
        out, index, indexed = [], None, None
        for query in self.queries:
            if not query.history:
                out.append([])
                continue
            if query.history is not indexed:
                index, indexed = HistoryIndex(self.task, query.history), query.history
            out.append(index.top_k(self.task.retrieval_query(query.input), k))
        return out

    def personal(self, variant: Variant) -> EvalResult:
        """The variant's private adapter, trained (or continued) once, saved, evaluated."""
        key = variant.adapter_key
        if key not in self.trained:
            self.trained[key] = self._train_and_evaluate(variant)
        trained = self.trained[key]
        if trained.path is not None:
            self.adapters[variant.name] = trained.path
        return copy.deepcopy(trained.result)  # same adapter, same prompts: same predictions

    def _train_and_evaluate(self, variant: Variant) -> TrainedAdapter:
        settings = self.recipe.with_knowledge(peft_method=str(variant.peft_method),
                                              k=variant.k, profile=variant.profile)
        profile = self.profile(variant.profile)
        name = self._adapter_name(variant)
        continuing = self.resume and self.store is not None and self.store.exists(name)
        if self.selection is not None and not continuing:
            selected = select_adapter(self, variant, settings, profile, name, self.selection)
            if selected is not None:
                return selected
        seen: set[str] = set()
        if continuing:
            seen = set(self.store.metadata(name).get("trained_item_keys", []))
            peft_model = self.store.load(self.model, name, trainable=True)
        else:
            peft_model = attach_fresh_adapter(self.model, settings.peft,
                                              seed=settings.train.seed)
        new_items = [item for item in self.history if item_key(item) not in seen]
        try:
            report = None
            if new_items:
                report = train_private_adapter(peft_model, self.tokenizer, self.task,
                                               new_items, settings, labels=self.labels,
                                               profile=profile,
                                               show_progress=self.show_progress,
                                               description=variant.name)
            result = self.evaluate(peft_model, variant.k, variant.profile)
            path = None
            if self.store is not None and report is not None:
                path = self.save(peft_model, variant, settings, profile,
                                 seen | {item_key(i) for i in new_items})
        finally:
            detach_adapter(peft_model)  # the base is clean again for the next variant or user
        return TrainedAdapter(result, path, report)

    def save(self, peft_model, variant: Variant, settings: PersonalizeSettings,
             profile: str | None, item_keys: set[str], **extra: object) -> str:
        """Save the variant's adapter with what it was trained on (``store`` must be set)."""
        meta = adapter_metadata(
            self.task, settings, base_model=self.base_source or model_id_of(self.model),
            peft=settings.peft.method, profile=profile, labels=self.labels,
            item_keys=item_keys, history_items=len(item_keys), variant=variant.name, **extra)
        return str(self.store.save(peft_model, self._adapter_name(variant), meta))

    def _adapter_name(self, variant: Variant) -> str:
        if variant.name == self.primary:
            return self.task.name
        return f"{self.task.name}.{variant.name}"

    def pooled(self, k: int) -> EvalResult:
        from peft import PeftModel

        peft_model = PeftModel.from_pretrained(self.model, self.pooled_adapter)
        try:
            return self.evaluate(peft_model, k)
        finally:
            detach_adapter(peft_model)


def select_adapter(run: UserRun, variant: Variant, settings: PersonalizeSettings,
                   profile: str | None, name: str, selection: SelectionSettings
                   ) -> TrainedAdapter | None:
    """Choose the recipe on the user's newest training items (``selection`` module) and keep
    what validates best: the new adapter, the previous one or the base. None when there are
    too few items to choose on (the recipe as given then trains on all of them)."""
    from peft import get_peft_model_state_dict

    split = validation_split(run.history, selection)
    if split is None:
        return None
    started = time.perf_counter()
    fit, val = split
    val_queries = heldout_queries(run.task, fit, val, run.labels)
    labels = run.labels if run.labels is not None else metric_labels(run.task, val_queries)
    metric = make_metric(run.task.kind, labels)

    prior = label_prior(run.task, fit, labels)
    golds = [q.gold for q in val_queries]

    def score_of(model) -> Scored:
        """The validation score with the best label-prior weight (least weight among equals)."""
        if not has_labels(run.task):
            result = evaluate_queries(model, run.tokenizer, run.task, val_queries,
                                      k=variant.k, profile=profile, labels=labels)
            return metric.selection_score(result.stats), 0.0
        scored = label_scores(model, run.tokenizer, run.task, val_queries, k=variant.k,
                              profile=profile)
        best: Scored = (float("-inf"), 0.0)
        for weight in PRIOR_WEIGHTS:
            decide = prior.with_weight(weight).choose
            predictions = [decide(query_labels, scores) for query_labels, scores in scored]
            value = metric.selection_score(metric.stats_for(predictions, golds))
            best = max(best, (value, weight), key=lambda pair: pair[0])
        return best

    previous_score, previous_weight = None, 0.0
    if run.store is not None and run.store.exists(name):
        previous = run.store.load(run.model, name)
        try:
            previous_score, previous_weight = score_of(previous)
        finally:
            detach_adapter(previous)
    current: dict[str, object] = {}

    def train(lr: float, on_epoch_end) -> None:
        grid_settings = replace(settings, train=replace(settings.train, lr=lr,
                                                        epochs=selection.max_epochs))
        current["model"] = attach_fresh_adapter(run.model, settings.peft,
                                                seed=settings.train.seed)
        try:
            current[lr] = train_private_adapter(
                current["model"], run.tokenizer, run.task, fit, grid_settings,
                labels=run.labels, profile=profile, show_progress=run.show_progress,
                description=f"{variant.name} lr {lr:g}", on_epoch_end=on_epoch_end)
        finally:
            detach_adapter(current["model"])

    def snapshot() -> dict:
        weights = get_peft_model_state_dict(current["model"])
        return {key: value.detach().clone() for key, value in weights.items()}

    base_score, base_weight = score_of(run.model)
    report = SelectionReport(metric.primary, metric.higher_is_better, len(fit), len(val),
                             base_score, previous_score, [], base_weight=base_weight,
                             previous_weight=previous_weight)
    best_state = None
    known = max(s for s in (report.base_score, previous_score) if s is not None)
    if known < metric.perfect_score:  # else nothing could beat it: train nothing
        report.grid, best_state = run_grid(selection, train,
                                           lambda: score_of(current["model"]), snapshot)
    best = report.best
    report.chosen = choose(report.base_score, previous_score,
                           best.best_score if best is not None else None)
    report.seconds = time.perf_counter() - started
    run.selections[variant.name] = report
    used_prior = label_prior(run.task, run.history, labels, report.prior_weight)
    trained = _kept(run, variant, settings, profile, name, report, best_state, fit, used_prior)
    if run.store is not None:  # after any save: a saved adapter supersedes older choices
        run.store.record_choice(name, {**report.to_dict(), "prior": used_prior.to_dict(),
                                       "labels": list(labels or ())})
    if report.chosen == "adapter":
        trained.report = current[report.best.lr]
    return trained


def _kept(run: UserRun, variant: Variant, settings: PersonalizeSettings, profile: str | None,
          name: str, report: SelectionReport, best_state: dict | None, fit: Sequence[Mapping],
          prior: LabelPrior) -> TrainedAdapter:
    """Evaluate what selection kept (with the label prior it chose); a new adapter is saved
    with the recipe it chose."""
    from peft import set_peft_model_state_dict

    if report.chosen == "previous":
        previous = run.store.load(run.model, name)
        try:
            return TrainedAdapter(run.evaluate(previous, variant.k, variant.profile,
                                               prior=prior), str(run.store.path(name)), None)
        finally:
            detach_adapter(previous)
    if report.chosen == "base":
        return TrainedAdapter(run.evaluate(run.model, variant.k, variant.profile, prior=prior),
                              None, None)
    chosen = replace(settings, train=replace(settings.train, lr=report.best.lr,
                                             epochs=report.best.best_epoch))
    peft_model = attach_fresh_adapter(run.model, settings.peft, seed=settings.train.seed)
    try:
        set_peft_model_state_dict(peft_model, best_state)
        result = run.evaluate(peft_model, variant.k, variant.profile, prior=prior)
        path = None
        if run.store is not None:
            path = run.save(peft_model, variant, chosen, profile,
                            {item_key(i) for i in fit}, selection=report.to_dict())
    finally:
        detach_adapter(peft_model)
    return TrainedAdapter(result, path, None)
