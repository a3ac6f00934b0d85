"""One user's run over a list of variants: the state they share, made once.

Profiles are written once per mode, each private adapter is trained once per (method, k,
profile) and saved, retrieval indexes the user's history once. Families call back into it
(``evaluate``, ``scored``, ``personal``, ``pooled``) to produce their ``EvalResult``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from oppu.shared.llm.training import TrainReport
from oppu.shared.metrics import make_metric
from oppu.shared.personal.adapter_meta import adapter_metadata, item_key
from oppu.shared.personal.evaluation import (
    EvalQuery,
    EvalResult,
    evaluate_queries,
    metric_labels,
)
from oppu.shared.personal.private_adapter import (
    attach_fresh_adapter,
    detach_adapter,
    train_private_adapter,
)
from oppu.shared.personal.profiles import ProfileCache, build_profile, model_id_of
from oppu.shared.personal.recipe import PersonalizeSettings
from oppu.shared.personal.variants import Variant
from oppu.shared.retrieval import HistoryIndex
from oppu.shared.tasks import TaskSpec


class AdapterSink(Protocol):
    """Where a user's adapters are kept (the client's ``AdapterStore``)."""

    root: Path

    def exists(self, name: str) -> bool: ...
    def metadata(self, name: str) -> dict: ...
    def load(self, base_model, name: str, *, trainable: bool = False): ...
    def save(self, peft_model, name: str, metadata: dict) -> Path: ...


def user_profile(model, tokenizer, task: TaskSpec, history: Sequence[Mapping], mode: str,
                 store: AdapterSink | None) -> str | None:
    """The user's generated profile (cached beside their adapters), or None when off.

    Built from the training items only, so held-out answers never leak into it.
    """
    if mode == "none" or not history:
        return None
    if store is None:
        return build_profile(model, tokenizer, task, history, mode=mode)
    return ProfileCache(store.root).get_or_build(model, tokenizer, task, history, mode=mode)


def target_text(task: TaskSpec, item: Mapping) -> str:
    """What an item "answered": its label or target text (the item's text when it has none)."""
    if task.target_field is not None:
        return str(item.get(task.target_field, "")).strip()
    return task.item_text(item).strip()


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
    adapter_name: Callable[[Variant], str] | None = None
    resume: bool = False
    base_source: str = ""
    show_progress: bool = False
    adapters: dict[str, str] = field(default_factory=dict)
    trained: dict[tuple, TrainedAdapter] = field(default_factory=dict)
    _profiles: dict[str, str | None] = field(default_factory=dict)

    def target_text(self, item: Mapping) -> str:
        return target_text(self.task, item)

    def profile(self, mode: str) -> str | None:
        if mode not in self._profiles:  # written by the clean base, from training items only
            self._profiles[mode] = user_profile(self.model, self.tokenizer, self.task,
                                                self.history, mode, self.store)
        return self._profiles[mode]

    def evaluate(self, model, k: int, mode: str = "none", retrieval: str = "bm25"
                 ) -> EvalResult:
        return evaluate_queries(model, self.tokenizer, self.task, self.queries, k=k,
                                profile=self.profile(mode), labels=self.labels,
                                retrieval=retrieval, show_progress=self.show_progress)

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
        seen: set[str] = set()
        if self.resume and self.store is not None and self.store.exists(name):
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
                meta = adapter_metadata(
                    self.task, settings, base_model=self.base_source or model_id_of(self.model),
                    peft=settings.peft.method, profile=profile, labels=self.labels,
                    item_keys=seen | {item_key(i) for i in new_items},
                    history_items=len(seen) + len(new_items), variant=variant.name)
                path = str(self.store.save(peft_model, name, meta))
        finally:
            detach_adapter(peft_model)  # the base is clean again for the next variant or user
        return TrainedAdapter(result, path, report)

    def _adapter_name(self, variant: Variant) -> str:
        if self.adapter_name is not None:
            return self.adapter_name(variant)
        return f"{self.task.name}.{variant.name}"

    def pooled(self, k: int) -> EvalResult:
        from peft import PeftModel

        peft_model = PeftModel.from_pretrained(self.model, self.pooled_adapter)
        try:
            return self.evaluate(peft_model, k)
        finally:
            detach_adapter(peft_model)
