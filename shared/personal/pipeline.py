"""One user's whole local job: split history, train the private adapter, evaluate, save.

Used by ``oppu-client train`` and by the Flower ClientApp alike, so both do the same thing.
Everything here stays on the user's machine; only ``EvalResult.stats`` is ever shared.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from oppu.client.adapter_store import AdapterStore
from oppu.shared.data import split_history
from oppu.shared.llm.training import TrainReport
from oppu.shared.personal.evaluation import EvalQuery, EvalResult, evaluate_queries
from oppu.shared.personal.private_adapter import (
    PersonalizeSettings,
    attach_fresh_adapter,
    detach_adapter,
    train_private_adapter,
)
from oppu.shared.personal.profiles import ProfileCache, build_profile
from oppu.shared.tasks import TaskSpec


@dataclass
class Outcome:
    """What a local personalization run did; ``personal.stats`` is the shareable part."""

    task: str
    train_items: int
    evaluated_queries: int
    report: TrainReport | None
    baseline: EvalResult | None
    personal: EvalResult | None
    adapter_path: str | None
    seconds: float


def item_key(item: Mapping) -> str:
    """A stable fingerprint of an item, to know which history an adapter has seen."""
    return hashlib.sha256(json.dumps(item, sort_keys=True, default=str).encode()).hexdigest()[:16]


def adapter_metadata(task: TaskSpec, settings: PersonalizeSettings, *, base_model: str,
                     peft: str, profile: str | None, labels: Sequence[str] | None,
                     item_keys: set[str], history_items: int, **extra: object) -> dict:
    """What a saved adapter records: enough to reload it, continue it, and explain it."""
    return {
        "task": task.name,
        **extra,
        "base_model": base_model,
        "peft": peft,
        "k": settings.k,
        "profile": settings.profile,
        "profile_text": profile,
        "labels": list(labels) if labels else None,
        "train": settings.train.to_dict(),
        "trained_item_keys": sorted(item_keys),
        "history_items": history_items,
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def history_labels(task: TaskSpec, history: Sequence[Mapping]) -> tuple[str, ...] | None:
    """The task's labels plus any the user's own history uses (their label universe)."""
    if not task.labels or task.target_field is None:
        return None
    seen = dict.fromkeys(task.labels)
    for item in history:
        seen.setdefault(str(item.get(task.target_field, "")).strip())
    seen.pop("", None)
    return tuple(seen)


def user_profile(model, tokenizer, task: TaskSpec, history: Sequence[Mapping], mode: str,
                 store: AdapterStore | None) -> str | None:
    """The user's generated profile (cached beside their adapters), or None when off.

    Built from the training items only, so held-out answers never leak into it.
    """
    if mode == "none" or not history:
        return None
    if store is None:
        return build_profile(model, tokenizer, task, history, mode=mode)
    return ProfileCache(store.root).get_or_build(model, tokenizer, task, history, mode=mode)


def heldout_queries(
    task: TaskSpec,
    train: Sequence[Mapping],
    heldout: Sequence[Mapping],
    labels: Sequence[str] | None = None,
) -> list[EvalQuery]:
    """Held-out history items as queries; each may retrieve from the training items."""
    queries = []
    for item in heldout:
        pair = task.query_from_item(item, labels=labels)
        if pair is not None:
            queries.append(EvalQuery(input=pair[0], gold=pair[1], history=tuple(train)))
    return queries


def personalize_user(
    model,
    tokenizer,
    task: TaskSpec,
    history: Sequence[Mapping],
    settings: PersonalizeSettings,
    *,
    store: AdapterStore | None = None,
    base_source: str = "",
    holdout: float | int = 0.2,
    eval_k: int = 0,
    evaluate_baseline: bool = True,
    resume: bool = False,
    labels: Sequence[str] | None = None,
    queries: Sequence[EvalQuery] | None = None,
    show_progress: bool = True,
) -> Outcome:
    """Train (or continue) this user's adapter on their history and evaluate it locally.

    ``model`` is the frozen base; it is returned to that state (adapter unloaded) at the end,
    so one loaded base serves many users in a long-lived process. ``labels`` defaults to
    the task's labels plus those the history uses. Given ``queries`` (e.g. LaMP test
    queries) the whole history trains and those are evaluated instead of a held-out split.
    """
    if not history:
        raise ValueError("This user's history is empty: there is nothing to personalize on "
                         "(add one JSON object per line with the task's fields).")
    if labels is None:
        labels = history_labels(task, history)
    start = time.perf_counter()
    if queries is not None or not holdout:
        train = list(history)
        queries = list(queries or [])
    else:
        train, heldout = split_history(history, holdout)
        queries = heldout_queries(task, train, heldout, labels)
    baseline = None
    profile = user_profile(model, tokenizer, task, train, settings.profile, store)
    if evaluate_baseline and queries:
        baseline = evaluate_queries(model, tokenizer, task, queries, k=eval_k, labels=labels,
                                    profile=profile, show_progress=show_progress)
    seen: set[str] = set()
    if resume and store is not None and store.exists(task.name):
        seen = set(store.metadata(task.name).get("trained_item_keys", []))
        peft_model = store.load(model, task.name, trainable=True)
    else:
        peft_model = attach_fresh_adapter(model, settings.peft, seed=settings.train.seed)
    new_items = [item for item in train if item_key(item) not in seen]
    try:
        report = None
        if new_items:
            report = train_private_adapter(peft_model, tokenizer, task, new_items, settings,
                                           labels=labels, profile=profile,
                                           show_progress=show_progress)
        personal = None
        if queries:
            personal = evaluate_queries(peft_model, tokenizer, task, queries, k=eval_k,
                                        labels=labels, profile=profile,
                                        show_progress=show_progress)
        adapter_path = None
        if store is not None and report is not None:
            adapter_path = str(store.save(peft_model, task.name, adapter_metadata(
                task, settings, base_model=base_source,
                peft=str(peft_model.active_peft_config.peft_type.value).lower(),
                profile=profile, labels=labels,
                item_keys=seen | {item_key(i) for i in new_items},
                history_items=len(seen) + len(new_items))))
    finally:
        detach_adapter(peft_model)  # the base is clean again for the next user or query
    return Outcome(task.name, len(train), len(queries), report, baseline, personal,
                   adapter_path, time.perf_counter() - start)
