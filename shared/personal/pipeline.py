"""The one per-user pipeline: train, evaluate, save and detach for any list of variants.

``run_variants`` is the whole local job of one user, whoever asks: a simulated LaMP test
user, a deployed client's round (an ordinary round is the one-variant case: the recipe's own
personal variant) or ``oppu-client train`` (``personalize_user``: the recipe's variant and the
same prompts without the adapter, on the newest items held out). Everything here stays on the
user's machine; only the statistics of ``VariantsOutcome.vector`` may be shared.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from oppu.shared.data import split_history
from oppu.shared.llm.training import TrainReport
from oppu.shared.metrics import MetricSpec
from oppu.shared.paired_stats import PairMetric, split_pair
from oppu.shared.personal.adapter_meta import history_labels
from oppu.shared.personal.evaluation import EvalQuery, EvalResult, heldout_queries
from oppu.shared.personal.recipe import PersonalizeSettings
from oppu.shared.personal.selection import SelectionReport, SelectionSettings
from oppu.shared.personal.suite import check_suite, parse_suite
from oppu.shared.personal.user_run import AdapterSink, UserRun
from oppu.shared.personal.variants import FAMILIES, Variant, parse_variant
from oppu.shared.personal.variants.oppu import personal_variant_name
from oppu.shared.tasks import TaskSpec


@dataclass
class VariantsOutcome:
    """One user's results per variant; only ``vector`` (summed stats) is ever shared."""

    results: dict[str, EvalResult]
    seconds: dict[str, float]
    adapters: dict[str, str]
    reports: dict[str, TrainReport | None]
    train_items: int
    queries: int
    selections: dict[str, SelectionReport] = field(default_factory=dict)

    def vector(self, metric: MetricSpec, pairs: Sequence[str] = ()) -> list[float]:
        """Every variant's statistics side by side, in suite order, then each compared
        pair's (``oppu.shared.paired_stats``): the secure-sum input."""
        variants = [x for result in self.results.values() for x in metric.to_vector(result.stats)]
        return variants + [x for name in pairs for x in self.pair_vector(metric, name)]

    def pair_vector(self, metric: MetricSpec, pair: str) -> list[float]:
        """One comparison's summable statistics on this user's queries."""
        variant, reference = split_pair(pair)
        a, b = self.results[variant], self.results[reference]
        paired = PairMetric(metric)
        return paired.to_vector(paired.user_stats(a.predictions, b.predictions, a.golds))


def personal_variant(recipe: PersonalizeSettings) -> Variant:
    """The variant a recipe trains (``oppu-k1``, ``pag-oppu-k0``, ``oppu-ia3-k0``, ...)."""
    return parse_variant(personal_variant_name(recipe.peft.method, recipe.k, recipe.profile))


def baseline_variant(recipe: PersonalizeSettings) -> Variant:
    """The same prompts without the adapter: ``base-k0``, ``rag-kJ`` or ``pag-kJ``/``gpg-kJ``."""
    if recipe.profile != "none":
        return parse_variant(f"{recipe.profile}-k{recipe.k}")
    return parse_variant(f"rag-k{recipe.k}" if recipe.k else "base-k0")


def run_variants(
    model,
    tokenizer,
    task: TaskSpec,
    history: Sequence[Mapping],
    queries: Sequence[EvalQuery],
    variants: str | Sequence[str | Variant],
    recipe: PersonalizeSettings,
    *,
    labels: Sequence[str] | None = None,
    store: AdapterSink | None = None,
    pooled_adapter: Path | None = None,
    primary: str | None = None,
    resume: bool = False,
    base_source: str = "",
    show_progress: bool = False,
    selection: SelectionSettings | None = None,
    bases: Mapping[str, object] | None = None,
) -> VariantsOutcome:
    """Evaluate one user's ``queries`` under every variant, in order.

    ``bases`` maps base names (``oppu.shared.personal.bases``: plain, rag-kJ, profile-kJ) to
    loaded task-adapted bases: each variant then runs on its family's base, as the paper;
    ``model`` (the plain base) writes the profiles. None: every variant runs on ``model``.

    ``history`` holds the training items; ``recipe`` is the private-adapter recipe (each
    variant sets its PEFT method, k and profile). One adapter is trained per distinct
    (method, k, profile); ``seconds`` counts it on the first variant using it. The adapter
    of the ``primary`` variant is saved as the user's own adapter for the task (the one
    ``ask`` uses), the others as ``<task>.<variant>``; with ``resume`` an existing one is
    continued on the items it has not seen. ``model`` is the frozen base and is clean again
    after every variant, even when one fails. ``labels`` defaults to the task's plus those the
    history uses; pass the cohort's so that every user's ``vector`` has the same layout.
    With ``selection`` each trained variant's recipe is chosen on the newest training items
    and the adapter is kept only where it validates better (``selection`` module); benchmark
    suites leave it off and report the trained adapter, as the paper does.
    """
    from tqdm.auto import tqdm

    suite = parse_suite(variants)
    check_suite(task, suite, history, pooled_adapter)
    if labels is None:
        labels = history_labels(task, history)
    models = variant_models(suite, model, bases)
    shared: dict[str, dict] = {"adapters": {}, "selections": {}, "trained": {}, "profiles": {}}
    runs: dict[int, UserRun] = {}  # one per base: (method, k, profile) never spans two

    def run_of(variant: Variant) -> UserRun:
        base = models[variant.name]
        if id(base) not in runs:
            runs[id(base)] = UserRun(
                base, tokenizer, task, list(history), list(queries), recipe,
                tuple(labels) if labels is not None else None, store,
                Path(pooled_adapter) if pooled_adapter is not None else None,
                primary=primary, resume=resume, base_source=base_source,
                show_progress=show_progress, selection=selection, profile_model=model,
                **shared)
        return runs[id(base)]

    results: dict[str, EvalResult] = {}
    seconds: dict[str, float] = {}
    bar = tqdm(suite, desc="variants", unit="variant", disable=not show_progress, leave=False)
    for variant in bar:
        bar.set_postfix_str(variant.name)
        start = time.perf_counter()
        results[variant.name] = FAMILIES[variant.family].evaluate(run_of(variant), variant)
        seconds[variant.name] = time.perf_counter() - start
    trained = shared["trained"]
    reports = {v.name: trained[v.adapter_key].report for v in suite if v.trains}
    return VariantsOutcome(results, seconds, dict(shared["adapters"]), reports, len(history),
                           len(queries), dict(shared["selections"]))


def variant_models(suite: Sequence[Variant], model, bases: Mapping[str, object] | None
                   ) -> dict[str, object]:
    """Variant name -> the base it runs on; ValueError naming any base ``bases`` lacks."""
    if bases is None:
        return {v.name: model for v in suite}
    wanted = {v.name: FAMILIES[v.family].base(v) for v in suite}
    missing = sorted({b for b in wanted.values() if b is not None and b not in bases})
    if missing:
        raise ValueError(f"No {', '.join(missing)} base was given; the suite's variants run "
                         f"on {', '.join(sorted({b for b in wanted.values() if b}))}.")
    return {name: model if base is None else bases[base] for name, base in wanted.items()}


@dataclass
class Outcome:
    """What ``personalize_user`` did; ``personal.stats`` is the shareable part."""

    task: str
    train_items: int
    evaluated_queries: int
    report: TrainReport | None
    baseline: EvalResult | None
    personal: EvalResult | None
    adapter_path: str | None
    seconds: float
    selection: SelectionReport | None = None
    """What local recipe selection tried and chose (None when it was off or skipped)."""


def personalize_user(
    model,
    tokenizer,
    task: TaskSpec,
    history: Sequence[Mapping],
    settings: PersonalizeSettings,
    *,
    store: AdapterSink | None = None,
    base_source: str = "",
    holdout: float | int = 0.2,
    evaluate_baseline: bool = True,
    resume: bool = False,
    labels: Sequence[str] | None = None,
    queries: Sequence[EvalQuery] | None = None,
    show_progress: bool = True,
    selection: SelectionSettings | None = None,
) -> Outcome:
    """Train (or continue) this user's adapter on their history and evaluate it locally.

    The recipe's personal variant, and (``evaluate_baseline``) the same prompts without the
    adapter, through ``run_variants``. ``labels`` defaults to the task's labels plus those the
    history uses. Given ``queries`` (e.g. LaMP test queries) the whole history trains and
    those are evaluated instead of a held-out split.
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
    personal = personal_variant(settings)
    variants = [personal]
    if evaluate_baseline and queries:
        variants.insert(0, baseline_variant(settings))
    outcome = run_variants(model, tokenizer, task, train, queries, variants, settings,
                           labels=labels, store=store, primary=personal.name, resume=resume,
                           base_source=base_source, show_progress=show_progress,
                           selection=selection)
    baseline = outcome.results[variants[0].name] if len(variants) > 1 else None
    return Outcome(task.name, len(train), len(queries), outcome.reports[personal.name],
                   baseline, outcome.results[personal.name] if queries else None,
                   outcome.adapters.get(personal.name), time.perf_counter() - start,
                   outcome.selections.get(personal.name))
