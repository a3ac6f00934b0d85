"""Table 1 for one user: every compared method ("variant") on the same task-adapted base.

Each variant yields summable statistics only, so a coordinator can add them up across users
(securely) and rebuild the paper's comparison without seeing anyone's predictions.
"""

from __future__ import annotations

import copy
import logging
import re
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from oppu.client.adapter_store import AdapterStore
from oppu.shared.metrics import MetricSpec, make_metric
from oppu.shared.personal.evaluation import EvalQuery, EvalResult, evaluate_queries, metric_labels
from oppu.shared.personal.pipeline import adapter_metadata, history_labels, item_key, user_profile
from oppu.shared.personal.private_adapter import (
    PersonalizeSettings,
    attach_fresh_adapter,
    detach_adapter,
    train_private_adapter,
)
from oppu.shared.personal.profiles import model_id_of
from oppu.shared.retrieval import HistoryIndex
from oppu.shared.tasks import TaskKind, TaskSpec

log = logging.getLogger(__name__)

VARIANT_FORMS = (
    "base-k0", "random-kJ (J>=1)", "rag-kJ (J>=1)", "pag-kJ", "gpg-kJ", "oppu-kJ",
    "oppu-lora-kJ", "oppu-ia3-kJ", "oppu-pt-kJ", "pag-oppu-kJ", "gpg-oppu-kJ", "pooled-kJ",
    "majority", "top-bm25",
)
"""Every valid variant name; J is the number of BM25-retrieved history items (J>=0)."""

TABLE1_SUITE: tuple[str, ...] = (
    "base-k0", "random-k1", "rag-k1", "rag-k2", "rag-k4", "pag-k0", "pag-k1", "oppu-k0",
    "oppu-k1", "oppu-k2", "oppu-k4", "pag-oppu-k0", "pag-oppu-k1", "pooled-k0", "majority",
    "top-bm25",
)
PEFT_SUITE: tuple[str, ...] = ("base-k0", "oppu-k0", "oppu-ia3-k0", "oppu-pt-k0")

PEFT_ALIASES = {"lora": "lora", "ia3": "ia3", "pt": "prompt_tuning"}
"""Short names in variant names -> PEFT-method registry names (client/peft_methods.py)."""

_J = r"-k(?P<k>0|[1-9]\d*)"
_J1 = r"-k(?P<k>[1-9]\d*)"
_FORMS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), family) for pattern, family in (
        (r"base-k(?P<k>0)", "base"),
        (r"random" + _J1, "random"),
        (r"rag" + _J1, "rag"),
        (r"(?P<profile>pag|gpg)" + _J, "profile"),
        (r"(?:(?P<profile>pag|gpg)-)?oppu" + _J, "oppu"),
        (r"oppu-(?P<peft>lora|ia3|pt)" + _J, "oppu"),
        (r"pooled" + _J, "pooled"),
        (r"majority", "majority"),
        (r"top-bm25", "top-bm25"),
    )
)


@dataclass(frozen=True)
class Variant:
    """One compared method. ``family``: base, random, rag, profile, oppu, pooled, majority
    or top-bm25; ``peft_method`` is a registry name, set for the families that train."""

    name: str
    family: str
    k: int = 0
    profile: str = "none"
    peft_method: str | None = None

    @property
    def trains(self) -> bool:
        """Whether this variant trains a private adapter for the user."""
        return self.family == "oppu"

    @property
    def adapter_key(self) -> tuple[str, int, str] | None:
        """Variants with the same key share one trained adapter (oppu-k0 and oppu-lora-k0)."""
        return (str(self.peft_method), self.k, self.profile) if self.trains else None


def parse_variant(name: str) -> Variant:
    """The variant a name stands for; ValueError naming it and the valid forms otherwise."""
    for pattern, family in _FORMS:
        match = pattern.fullmatch(name)
        if match is None:
            continue
        groups = match.groupdict()
        peft = PEFT_ALIASES[groups.get("peft") or "lora"] if family == "oppu" else None
        return Variant(name, family, int(groups.get("k") or 0),
                       groups.get("profile") or "none", peft)
    hint = ""
    if re.fullmatch(r"(random|rag)-k0", name):
        hint = " Retrieval variants need J >= 1 (with no items they are base-k0)."
    raise ValueError(f"Unknown suite variant {name!r}.{hint} Valid forms: "
                     f"{', '.join(VARIANT_FORMS)}; e.g. rag-k1, oppu-ia3-k0.")


def parse_suite(text_or_names: str | Sequence[str | Variant]) -> tuple[Variant, ...]:
    """Variants from "a,b,c" or a sequence, in order; duplicates and unknown names rejected."""
    items = text_or_names.split(",") if isinstance(text_or_names, str) else text_or_names
    suite = [v if isinstance(v, Variant) else parse_variant(str(v).strip())
             for v in items if isinstance(v, Variant) or str(v).strip()]
    if not suite:
        raise ValueError(f"The suite is empty; name variants such as {', '.join(PEFT_SUITE)}.")
    names = [v.name for v in suite]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"Duplicate suite variants {duplicates}: name each variant once.")
    return tuple(suite)


def unsupported_reason(task: TaskSpec, variant: Variant) -> str | None:
    """Why ``task`` cannot have ``variant`` (None when it can)."""
    if variant.family == "majority" and task.kind == TaskKind.GENERATION:
        return f"{task.name} is a generation task: there is no label to take the majority of"
    if variant.family in ("majority", "top-bm25") and task.kind != TaskKind.GENERATION \
            and task.target_field is None:
        return f"{task.name} history items carry no label"
    return None


def supported_variants(task: TaskSpec, variants: str | Sequence[str | Variant]
                       ) -> tuple[Variant, ...]:
    """The variants ``task`` can have, in order; the dropped ones are logged with a reason."""
    kept = []
    for variant in parse_suite(variants):
        reason = unsupported_reason(task, variant)
        if reason is None:
            kept.append(variant)
        else:
            log.info("dropping suite variant %s: %s", variant.name, reason)
    return tuple(kept)


@dataclass
class SuiteOutcome:
    """One user's results per variant; only ``vector`` (summed stats) is ever shared."""

    results: dict[str, EvalResult]
    seconds: dict[str, float]
    adapters: dict[str, str]
    train_items: int
    queries: int

    def vector(self, metric: MetricSpec) -> list[float]:
        """Every variant's statistics side by side, in suite order (the secure-sum input)."""
        return [x for result in self.results.values() for x in metric.to_vector(result.stats)]


def target_text(task: TaskSpec, item: Mapping) -> str:
    """What an item "answered": its label or target text (the item's text when it has none)."""
    if task.target_field is not None:
        return str(item.get(task.target_field, "")).strip()
    return task.item_text(item).strip()


@dataclass
class _SuiteRun:
    """The state shared by one user's variants: profiles and adapters are made once."""

    model: object
    tokenizer: object
    task: TaskSpec
    history: list[Mapping]
    queries: list[EvalQuery]
    settings: PersonalizeSettings
    labels: tuple[str, ...] | None
    store: AdapterStore | None
    pooled_adapter: Path | None
    adapters: dict[str, str] = field(default_factory=dict)
    _profiles: dict[str, str | None] = field(default_factory=dict)
    _trained: dict[tuple, tuple[EvalResult, str | None]] = field(default_factory=dict)

    def run(self, variant: Variant) -> EvalResult:
        if variant.trains:
            return self._personal(variant)
        if variant.family == "pooled":
            return self._pooled(variant)
        if variant.family in ("majority", "top-bm25"):
            return self._scored(self._trivial_predictions(variant))
        return self._evaluate(self.model, variant.k, variant.profile,
                              "random" if variant.family == "random" else "bm25")

    def profile(self, mode: str) -> str | None:
        if mode not in self._profiles:  # written by the clean base, from training items only
            self._profiles[mode] = user_profile(self.model, self.tokenizer, self.task,
                                                self.history, mode, self.store)
        return self._profiles[mode]

    def _evaluate(self, model, k: int, mode: str = "none", retrieval: str = "bm25"
                  ) -> EvalResult:
        return evaluate_queries(model, self.tokenizer, self.task, self.queries, k=k,
                                profile=self.profile(mode), labels=self.labels,
                                retrieval=retrieval)

    def _scored(self, predictions: list[str]) -> EvalResult:
        labels = self.labels if self.labels is not None else metric_labels(self.task,
                                                                           self.queries)
        metric = make_metric(self.task.kind, labels)
        golds = [q.gold for q in self.queries]
        stats = metric.stats_for(predictions, golds)
        return EvalResult(tuple(labels), stats, metric.compute(stats), predictions, golds)

    def _trivial_predictions(self, variant: Variant) -> list[str]:
        if variant.family == "majority":
            counts = Counter(target_text(self.task, item) for item in self.history)
            counts.pop("", None)
            label = counts.most_common(1)[0][0] if counts else ""
            return [label] * len(self.queries)
        predictions, index, indexed = [], None, None
        for query in self.queries:
            if not query.history:
                predictions.append("")
                continue
            if query.history is not indexed:
                index, indexed = HistoryIndex(self.task, query.history), query.history
            top = index.top_k(self.task.retrieval_query(query.input), 1)
            predictions.append(target_text(self.task, top[0]))
        return predictions

    def _personal(self, variant: Variant) -> EvalResult:
        key = variant.adapter_key
        if key not in self._trained:
            self._trained[key] = self._train_and_evaluate(variant)
        result, path = self._trained[key]
        if path is not None:
            self.adapters[variant.name] = path
        return copy.deepcopy(result)  # same adapter, same prompts: the same predictions

    def _train_and_evaluate(self, variant: Variant) -> tuple[EvalResult, str | None]:
        settings = replace(self.settings, peft=replace(self.settings.peft,
                                                       method=variant.peft_method),
                           k=variant.k, profile=variant.profile)
        profile = self.profile(variant.profile)
        peft_model = attach_fresh_adapter(self.model, settings.peft, seed=settings.train.seed)
        try:
            train_private_adapter(peft_model, self.tokenizer, self.task, self.history,
                                  settings, labels=self.labels, profile=profile,
                                  show_progress=False, description=variant.name)
            result = self._evaluate(peft_model, variant.k, variant.profile)
            path = None
            if self.store is not None:
                meta = self._metadata(variant, settings, profile)
                path = str(self.store.save(peft_model, f"{self.task.name}.{variant.name}", meta))
        finally:
            detach_adapter(peft_model)
        return result, path

    def _metadata(self, variant: Variant, settings: PersonalizeSettings,
                  profile: str | None) -> dict:
        """``personalize_user``'s metadata plus the variant, so either loads alike."""
        return adapter_metadata(
            self.task, settings, base_model=model_id_of(self.model),
            peft=str(variant.peft_method), profile=profile, labels=self.labels,
            item_keys={item_key(i) for i in self.history}, history_items=len(self.history),
            variant=variant.name)

    def _pooled(self, variant: Variant) -> EvalResult:
        from peft import PeftModel

        peft_model = PeftModel.from_pretrained(self.model, self.pooled_adapter)
        try:
            return self._evaluate(peft_model, variant.k)
        finally:
            detach_adapter(peft_model)


def _check_suite(task: TaskSpec, suite: Sequence[Variant], history: Sequence[Mapping],
                 pooled_adapter: Path | None) -> None:
    """Every reason the suite cannot run, raised before any (slow) work starts."""
    problems = [f"{v.name}: {r}" for v in suite if (r := unsupported_reason(task, v))]
    if problems:
        raise ValueError(f"Variants {task.name} cannot have: {'; '.join(problems)} "
                         "(supported_variants(task, variants) drops them).")
    if not history and any(v.trains or v.family == "majority" for v in suite):
        raise ValueError("This user's history is empty: nothing to personalize on.")
    pooled = [v.name for v in suite if v.family == "pooled"]
    if pooled and pooled_adapter is None:
        raise ValueError(f"{', '.join(pooled)} needs the pooled adapter: train one with "
                         "oppu.simulations.pooled.train_pooled_adapter and pass its path as "
                         "pooled_adapter.")
    if pooled and not (Path(pooled_adapter) / "adapter_config.json").is_file():
        raise ValueError(f"No adapter in {pooled_adapter} (adapter_config.json is missing).")


def run_suite(
    model,
    tokenizer,
    task: TaskSpec,
    history: Sequence[Mapping],
    queries: Sequence[EvalQuery],
    variants: str | Sequence[str | Variant],
    settings: PersonalizeSettings,
    *,
    labels: Sequence[str] | None = None,
    store: AdapterStore | None = None,
    pooled_adapter: Path | None = None,
    show_progress: bool = False,
) -> SuiteOutcome:
    """Evaluate one user's ``queries`` under every variant, in order.

    ``history`` holds the training items; ``settings`` is the private-adapter recipe (the
    variant sets its PEFT method, k and profile). One adapter is trained per distinct
    (method, k, profile); ``seconds`` counts it on the first variant using it. ``model`` is
    the frozen base and is clean again after every variant, even when one fails. ``labels``
    defaults to the task's plus those the history uses; pass the cohort's so that every
    user's ``vector`` has the same layout.
    """
    from tqdm.auto import tqdm

    suite = parse_suite(variants)
    _check_suite(task, suite, history, pooled_adapter)
    if labels is None:
        labels = history_labels(task, history)
    run = _SuiteRun(model, tokenizer, task, list(history), list(queries), settings,
                    tuple(labels) if labels is not None else None, store,
                    Path(pooled_adapter) if pooled_adapter is not None else None)
    results: dict[str, EvalResult] = {}
    seconds: dict[str, float] = {}
    bar = tqdm(suite, desc="suite", unit="variant", disable=not show_progress, leave=False)
    for variant in bar:
        bar.set_postfix_str(variant.name)
        start = time.perf_counter()
        results[variant.name] = run.run(variant)
        seconds[variant.name] = time.perf_counter() - start
    return SuiteOutcome(results, seconds, dict(run.adapters), len(history), len(queries))
