"""Suites: the lists of variants one user is evaluated under, and the presets of the paper.

Names are parsed by the variant-family registry (``oppu.shared.personal.variants``); this
module adds the suite-level rules (order kept, duplicates and unsuitable variants refused).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from oppu.shared.paired_stats import pair_name
from oppu.shared.personal.bases import ordered_bases
from oppu.shared.personal.variants import FAMILIES, Variant, parse_variant, variant_forms
from oppu.shared.tasks import TaskSpec

log = logging.getLogger(__name__)

TABLE1_SUITE: tuple[str, ...] = (
    "base-k0", "random-k1", "rag-k1", "rag-k2", "rag-k4", "pag-k0", "pag-k1", "oppu-k0",
    "oppu-k1", "oppu-k2", "oppu-k4", "pag-oppu-k0", "pag-oppu-k1", "pooled-k0", "majority",
    "top-bm25",
)
PEFT_SUITE: tuple[str, ...] = ("base-k0", "oppu-k0", "oppu-ia3-k0", "oppu-pt-k0")
QUICK_SUITE: tuple[str, ...] = ("base-k0", "random-k1", "rag-k1", "majority", "top-bm25",
                                "oppu-k0")
PRESETS: dict[str, tuple[str, ...]] = {"quick": QUICK_SUITE, "table1": TABLE1_SUITE,
                                       "peft": PEFT_SUITE}


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
    return FAMILIES[variant.family].unsupported(task)


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


def check_suite(task: TaskSpec, suite: Sequence[Variant], history: Sequence[Mapping],
                pooled_adapter: Path | None) -> None:
    """Every reason the suite cannot run, raised before any (slow) work starts."""
    problems = [f"{v.name}: {r}" for v in suite if (r := unsupported_reason(task, v))]
    if problems:
        raise ValueError(f"Variants {task.name} cannot have: {'; '.join(problems)} "
                         "(supported_variants(task, variants) drops them).")
    if not history and any(FAMILIES[v.family].needs_history() for v in suite):
        raise ValueError("This user's history is empty: nothing to personalize on.")
    pooled = [v.name for v in suite if v.family == "pooled"]
    if pooled and pooled_adapter is None:
        raise ValueError(f"{', '.join(pooled)} needs the pooled adapter: train one with "
                         "oppu.simulations.pooled.train_pooled_adapter and pass its path as "
                         "pooled_adapter.")
    if pooled and not (Path(pooled_adapter) / "adapter_config.json").is_file():
        raise ValueError(f"No adapter in {pooled_adapter} (adapter_config.json is missing).")


def comparison_pairs(variants: Sequence[str]) -> tuple[str, ...]:
    """The comparisons a suite reports, as pair names, in suite order.

    Every variant against non-personalized k=0 (``base-k0``); GPG against PAG and retrieval
    alone at its k (as the GPG paper reports it); each OPPU variant also against
    the same prompts without its adapter (RAG at its k, the profile alone at its k), the
    pooled-history adapter and the trivial per-user baselines (majority label, top BM25 item).
    Only pairs whose both sides are in the suite.
    """
    present = list(dict.fromkeys(variants))
    pairs: list[str] = []

    def add(variant: str, reference: str) -> None:
        name = pair_name(variant, reference)
        if reference in present and reference != variant and name not in pairs:
            pairs.append(name)

    for name in present:
        add(name, "base-k0")
        variant = parse_variant(name)
        if variant.family == "profile" and variant.profile == "gpg":
            add(name, f"pag-k{variant.k}")  # the GPG paper's comparisons
            add(name, f"rag-k{variant.k}")
        if variant.family != "oppu":
            continue
        if variant.k:
            add(name, f"rag-k{variant.k}")
        if variant.profile != "none":
            add(name, f"{variant.profile}-k{variant.k}")
        pooled = f"pooled-k{variant.k}"
        add(name, pooled if pooled in present else "pooled-k0")
        add(name, "majority")
        add(name, "top-bm25")
    return tuple(pairs)


def suite_bases(variants: str | Sequence[str | Variant]) -> tuple[str, ...]:
    """The task-adapted bases a suite's variants run on (``oppu.shared.personal.bases``),
    plain first."""
    suite = parse_suite(variants)
    return ordered_bases(b for v in suite if (b := FAMILIES[v.family].base(v)) is not None)


def suite_help() -> str:
    """For CLI help texts: the presets and every form of variant name."""
    return (f"{', '.join(PRESETS)}, or comma-separated variants of the forms "
            f"{', '.join(variant_forms())} (J: retrieved history items).")
