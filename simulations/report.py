"""The paper's Table 1 (Markdown and JSON) and figures from a federated simulation's results.

Two inputs, both plain JSON-compatible data:

``table`` — what the simulation runner writes as ``table1.json``; each variant's metrics are
pooled over all users' queries (the coordinator only ever sees summed statistics)::

    {"task": "LaMP_2N", "kind": "classification", "labels": ["business", ...],
     "users": 10, "aggregation": "secagg",
     "variants": {"base-k0": {"accuracy": 0.41, "f1": 0.05, "count": 30.0}, ...},
     "seconds_total": 812.3, "settings": {...free-form...}, "base_version": "abc..."}

``kind`` is "classification" (metrics ``accuracy``, ``f1``), "rating" (``mae``, ``rmse``) or
"generation" (``rouge-1``, ``rouge-l``), each with ``count`` (queries). A metric value may be
NaN or None (no queries); other keys are carried through to the JSON untouched.

``records`` — one dict per user, written locally by each simulated client::

    {"user": "u123", "history_items": 87, "train_items": 87, "queries": 3,
     "labels": [...], "kind": "classification",
     "stat_names": [...],                      # make_metric(kind, labels).stat_names()
     "vectors": {"base-k0": [...], "oppu-k0": [...]},   # summable statistics per variant
     "seconds": {"oppu-k0": 41.2, ...},
     "adapters": {"oppu-k0": "/path/to/adapter/dir", ...}}

Variant names: an optional profile prefix ``pag-``/``gpg-``, a family ``base``, ``random``,
``rag``, ``oppu`` or ``pooled`` (the family may be left out after a profile prefix: ``pag-k1``
is the base model with a PAG profile and one retrieved item), an optional PEFT method
``lora``/``ia3``/``pt`` after ``oppu`` (none means LoRA), then ``-kJ`` (J retrieved history
items in the prompt); plus the literals ``majority`` (the user's most frequent label) and
``top-bm25`` (the label/text of the top BM25 history item). Unknown names are kept and shown
last, never dropped.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oppu.shared.atomic import write_text_atomic
from oppu.shared.metrics import MetricSpec, make_metric

Record = Mapping[str, Any]

# --- metrics ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricColumn:
    """One reported metric: its key in ``compute()``'s dict, display name and direction."""

    key: str
    name: str
    higher_is_better: bool

    @property
    def header(self) -> str:
        return f"{self.name} {'↑' if self.higher_is_better else '↓'}"


METRICS: dict[str, tuple[MetricColumn, MetricColumn]] = {
    "classification": (
        MetricColumn("accuracy", "accuracy", True),
        MetricColumn("f1", "macro-F1", True),
    ),
    "rating": (MetricColumn("mae", "MAE", False), MetricColumn("rmse", "RMSE", False)),
    "generation": (
        MetricColumn("rouge-1", "ROUGE-1", True),
        MetricColumn("rouge-l", "ROUGE-L", True),
    ),
}


def metric_columns(kind: str) -> tuple[MetricColumn, MetricColumn]:
    """The task kind's metric pair, primary first (accuracy / MAE / ROUGE-1)."""
    try:
        return METRICS[str(kind).lower()]
    except KeyError:
        raise ValueError(
            f"unknown task kind {kind!r}; use one of {sorted(METRICS)}"
        ) from None


def primary_metric(kind: str) -> MetricColumn:
    """The metric the paper's comparisons and figures use."""
    return metric_columns(kind)[0]


def metric_value(metrics: Mapping[str, Any] | None, key: str) -> float | None:
    """A finite metric value, or None for missing/None/NaN (keys matched case-insensitively)."""
    if not metrics:
        return None
    value = metrics.get(key)
    if value is None:
        lowered = {str(k).lower(): v for k, v in metrics.items()}
        value = lowered.get(key.lower())
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def format_value(value: float | None) -> str:
    """Three decimals, or "n/a" where there is no number (e.g. no queries)."""
    return "n/a" if value is None else f"{value:.3f}"


# --- per-user records ------------------------------------------------------------------------


def records_metric(records: Sequence[Record]) -> MetricSpec:
    """The metric all records share; mixing tasks or label sets would sum nonsense."""
    if not records:
        raise ValueError("no user records given; pass at least one per-user record")
    first = records[0]
    for record in records[1:]:
        if (record.get("kind"), list(record.get("labels") or [])) != (
            first.get("kind"),
            list(first.get("labels") or []),
        ):
            raise ValueError(
                f"user {record.get('user')!r} has kind/labels {record.get('kind')!r}/"
                f"{record.get('labels')!r}, unlike user {first.get('user')!r}; "
                "report one task at a time"
            )
    return make_metric(first.get("kind", ""), first.get("labels") or ())


def _user_stats(metric: MetricSpec, record: Record, variant: str) -> dict[str, float] | None:
    vector = (record.get("vectors") or {}).get(variant)
    if vector is None:
        return None
    names = record.get("stat_names")
    if names is not None and list(names) != metric.stat_names():
        raise ValueError(
            f"user {record.get('user')!r} has statistics {list(names)}, expected "
            f"{metric.stat_names()}; the label order must match the task's"
        )
    return metric.from_vector(vector)


def pooled_metrics(records: Sequence[Record], variant: str) -> dict[str, float]:
    """The variant's metrics pooled over the users that ran it (sum of stats, then compute).

    Summing statistics before computing is what the coordinator does, so this equals the
    table's number for the same users; users without the variant are skipped (count 0 -> NaN).
    """
    metric = records_metric(records)
    stats = (_user_stats(metric, record, variant) for record in records)
    return metric.compute(metric.sum(s for s in stats if s is not None))


# --- variant names ---------------------------------------------------------------------------

_VARIANT = re.compile(
    r"^(?:(?P<profile>pag|gpg)-)?"
    r"(?:(?P<family>base|random|rag|oppu|pooled)(?:-(?P<method>lora|ia3|pt))?-)?"
    r"k(?P<k>\d+)$"
)
PROFILES = ("pag", "gpg")
METHODS = ("lora", "ia3", "pt")
METHOD_NAMES = {"lora": "LoRA", "ia3": "IA3", "pt": "prompt tuning"}
FAMILY_NAMES = {
    "base": "Non-personalized",
    "random": "Random history",
    "rag": "RAG",
    "pooled": "Pooled adapter",
}
BASELINE_NOTES = {  # family or literal -> (how the table names it, what it is)
    "pooled": ("pooled-kJ", "one adapter trained on all users' pooled histories"),
    "majority": ("majority", "the user's most frequent label in their history"),
    "top-bm25": ("top-bm25", "the label/text of the history item BM25 ranks first"),
}

GROUPS = (
    "Non-personalized",
    "RAG",
    "Profile",
    "OPPU",
    "Profile + OPPU",
    "Baselines",
    "Other",
)


@dataclass(frozen=True)
class Variant:
    """A parsed variant name (see the module docstring for the grammar)."""

    name: str
    profile: str | None = None
    family: str | None = None
    method: str | None = None
    k: int = 0

    @property
    def group(self) -> str:
        if self.name in ("majority", "top-bm25") or self.family == "pooled":
            return "Baselines"
        if self.family == "oppu":
            return "Profile + OPPU" if self.profile else "OPPU"
        if self.profile:
            return "Profile"
        if self.family == "rag":
            return "RAG"
        if self.family in ("base", "random"):
            return "Non-personalized"
        return "Other"

    @property
    def label(self) -> str:
        """Human-readable name, e.g. "RAG (k=2)", "OPPU LoRA (k=0)", "PAG + OPPU (k=1)"."""
        if self.name == "majority":
            return "Majority label"
        if self.name == "top-bm25":
            return "Top BM25 item"
        if self.group == "Other":
            return self.name
        parts = [self.profile.upper()] if self.profile else []
        if self.family == "oppu":
            # Plain OPPU rows sit side by side per method, so always name it; after a profile
            # the default (LoRA) stays implicit, as in the paper's "PAG + OPPU".
            method = self.method or (None if self.profile else "lora")
            parts.append(f"OPPU {METHOD_NAMES[method]}" if method else "OPPU")
        elif self.family and not (self.profile and self.family == "base"):
            name = FAMILY_NAMES[self.family]
            parts.append(name.lower() if self.profile and self.family != "rag" else name)
        return f"{' + '.join(parts)} (k={self.k})"

    def sort_key(self) -> tuple[Any, ...]:
        """Order inside a group: the paper's (by k, then method; profiles PAG before GPG)."""
        profile = PROFILES.index(self.profile) if self.profile else -1
        method = METHODS.index(self.method or "lora") + (0.5 if self.method else 0)
        family = ("base", "random", "rag", "oppu", "pooled", None).index(self.family)
        literal = ("majority", "top-bm25").index(self.name) if self.family is None else -1
        if self.group in ("Profile", "Profile + OPPU"):
            return (profile, self.k, family, method)
        return (family, literal, self.k, method)


def parse_variant(name: str) -> Variant:
    """Parse a variant name; names outside the grammar become group "Other" (kept, last)."""
    if name in ("majority", "top-bm25"):
        return Variant(name)
    match = _VARIANT.match(name)
    if not match or not (match["profile"] or match["family"]):
        return Variant(name, family=None, k=-1)
    if match["method"] and match["family"] != "oppu":
        return Variant(name, family=None, k=-1)
    return Variant(
        name,
        profile=match["profile"],
        family=match["family"] or ("base" if match["profile"] else None),
        method=match["method"],
        k=int(match["k"]),
    )


def variant_label(name: str) -> str:
    """Human-readable name of a variant (its own name when outside the grammar)."""
    return parse_variant(name).label


def order_variants(names: Iterable[str]) -> list[tuple[str, list[str]]]:
    """Variants grouped in the paper's order; unknown names last, in their given order."""
    parsed = [parse_variant(n) for n in names]
    grouped: list[tuple[str, list[str]]] = []
    for group in GROUPS:
        members = [v for v in parsed if v.group == group]
        if group != "Other":
            members.sort(key=Variant.sort_key)
        if members:
            grouped.append((group, [v.name for v in members]))
    return grouped


def ordered_names(names: Iterable[str]) -> list[str]:
    """Flat list of ``order_variants``."""
    return [name for _, members in order_variants(names) for name in members]


# --- Table 1 ---------------------------------------------------------------------------------


def table_header(table: Mapping[str, Any]) -> str:
    """One line saying what the table is about: task, users, aggregation."""
    return (
        f"**{table.get('task', '?')}** ({table.get('kind', '?')}): "
        f"{table.get('users', '?')} users, aggregation: {table.get('aggregation', '?')}"
    )


def _best(values: list[float | None], higher_is_better: bool) -> str | None:
    """The best value as displayed, so rows that look tied are all bold."""
    finite = [v for v in values if v is not None]
    if not finite:
        return None
    return format_value(max(finite) if higher_is_better else min(finite))


def _count(metrics: Mapping[str, Any] | None) -> str:
    count = metric_value(metrics, "count")
    if count is None:
        return "n/a"
    return str(int(count)) if count == int(count) else f"{count:.1f}"


def table1_markdown(table: Mapping[str, Any]) -> str:
    """Table 1 as Markdown: header line, then rows grouped in the paper's order.

    The group label appears on each group's first row (as in the paper); the best value of
    each metric column is bold (lowest for ↓ metrics, all rows equal at display precision).
    """
    columns = metric_columns(table.get("kind", ""))
    variants: Mapping[str, Any] = table.get("variants") or {}
    grouped = order_variants(variants)
    best = {
        c.key: _best([metric_value(variants[n], c.key) for n in variants], c.higher_is_better)
        for c in columns
    }
    lines = [
        table_header(table),
        "",
        "| group | method | variant | " + " | ".join(c.header for c in columns) + " | queries |",
        "|---|---|---|" + "---:|" * (len(columns) + 1),
    ]
    for group, names in grouped:
        for i, name in enumerate(names):
            cells = [group if i == 0 else "", variant_label(name), f"`{name}`"]
            for column in columns:
                shown = format_value(metric_value(variants[name], column.key))
                cells.append(f"**{shown}**" if shown == best[column.key] else shown)
            cells.append(_count(variants[name]))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --- comparisons -----------------------------------------------------------------------------


def _references(variant: Variant, present: Mapping[str, Any]) -> list[str]:
    """What an OPPU variant is compared with: same-k base first, then the baselines."""
    same_k = "base-k0" if variant.k == 0 else f"rag-k{variant.k}"
    refs = [same_k]
    if variant.profile:
        refs.append(f"{variant.profile}-k{variant.k}")
    pooled = f"pooled-k{variant.k}" if f"pooled-k{variant.k}" in present else "pooled-k0"
    refs += [r for r in ("majority", "top-bm25", pooled) if r in present]
    return refs


def _sentence(name: str, ref: str, variants: Mapping[str, Any], column: MetricColumn) -> str:
    ours = metric_value(variants[name], column.key)
    theirs = metric_value(variants[ref], column.key)
    head = (
        f"{variant_label(name)} {column.name} {format_value(ours)} vs "
        f"{variant_label(ref)} {format_value(theirs)}"
    )
    if ours is None or theirs is None:
        return f"{head}: not comparable (a value is missing)"
    diff = ours - theirs
    if round(diff, 3) == 0:  # ties at the precision the table shows
        return f"{head}: ±0.000 (ties)"
    better = diff > 0 if column.higher_is_better else diff < 0
    return f"{head}: {diff:+.3f} ({'wins' if better else 'does not win'})"


def compare_oppu(table: Mapping[str, Any]) -> list[str]:
    """Plain sentences: each OPPU variant vs the base at its k and the trivial baselines.

    The base at the same k is ``base-k0`` for k=0 and ``rag-kJ`` for k>0 (the paper's
    non-personalized row); profile variants are also compared with the profile alone. Uses the
    task's primary metric; "wins" means strictly better at the table's three decimals.
    """
    column = primary_metric(table.get("kind", ""))
    variants: Mapping[str, Any] = table.get("variants") or {}
    sentences = []
    for name in ordered_names(variants):
        variant = parse_variant(name)
        if variant.family != "oppu":
            continue
        if metric_value(variants[name], column.key) is None:
            sentences.append(f"{variant.label}: no {column.name} (no queries), nothing to compare")
            continue
        for ref in _references(variant, variants):
            if ref in variants:
                sentences.append(_sentence(name, ref, variants, column))
            elif ref.startswith(("base-", "rag-")):
                sentences.append(
                    f"{variant.label}: no {variant_label(ref)} (`{ref}`) in the table to "
                    "compare with"
                )
    return sentences


# --- writing ---------------------------------------------------------------------------------


def _json_safe(value: Any) -> Any:
    """NaN/inf become None (JSON has no NaN); containers are copied, the input untouched."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def table_json(table: Mapping[str, Any]) -> str:
    """The table as strict JSON (NaN -> null; anything else non-JSON as its string)."""
    return json.dumps(_json_safe(table), indent=2, ensure_ascii=False, allow_nan=False,
                      default=str) + "\n"


def _notes(table: Mapping[str, Any]) -> list[str]:
    variants: Mapping[str, Any] = table.get("variants") or {}
    columns = metric_columns(table.get("kind", ""))
    notes = [
        "Every number is pooled over all users' queries: each user's summable statistics are "
        "added up (under the stated aggregation the coordinator sees only those sums) and the "
        "metric is computed once, so users with more queries weigh more.",
        "Directions: " + ", ".join(c.header for c in columns) + "; bold is the best per column.",
        "OPPU without a named method is LoRA; k is the number of retrieved history items in "
        "each prompt.",
    ]
    counts = {metric_value(m, "count") for m in variants.values()} - {None}
    if len(counts) == 1 and table.get("kind") == "classification" and min(counts) > 0:
        queries = min(counts)
        notes.append(f"{int(queries)} queries: one query moves accuracy by {1 / queries:.3f}.")
    families = {parse_variant(n).family or n for n in variants}
    notes += [f"`{shown}`: {text}." for key, (shown, text) in BASELINE_NOTES.items()
              if key in families]
    seconds = metric_value(table, "seconds_total")
    if seconds is not None:
        notes.append(f"Wall time of the whole simulation: {seconds:.0f} s.")
    return notes


def report_markdown(
    table: Mapping[str, Any],
    figures: Mapping[str, Path] | None = None,
    skipped: Sequence[str] = (),
) -> str:
    """The whole ``table1.md``: table, comparison sentences, notes, figure list."""
    figures = figures or {}
    parts = [f"# Table 1: {table.get('task', '?')}", "", table1_markdown(table)]
    sentences = compare_oppu(table)
    if sentences:
        parts += ["## OPPU vs the baselines", "", *(f"- {s}" for s in sentences), ""]
    parts += ["## Notes", "", *(f"- {n}" for n in _notes(table)), ""]
    if figures or skipped:
        parts += ["## Figures", ""]
        parts += [f"- {name}: `{Path(path).name}`" for name, path in figures.items()]
        parts += [f"- {reason}" for reason in skipped]
        parts.append("")
    return "\n".join(parts)


def write_report(
    out_dir: str | Path,
    table: Mapping[str, Any],
    records: Sequence[Record] = (),
    *,
    plots: bool = True,
) -> dict[str, Path]:
    """Write ``table1.md``, ``table1.json`` and the figures there is data for; name -> path.

    Names: ``markdown``, ``json``, and when drawn ``activity``, ``k``, ``peft``,
    ``similarity``. A figure that cannot be drawn is listed in ``table1.md`` with the reason
    instead of failing the report. Every file is written atomically.
    """
    from oppu.simulations import figures  # lazily: figures imports this module

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    drawn: dict[str, Path] = {}
    skipped: list[str] = []
    if plots:
        drawn, skipped = figures.draw_all(out, table, list(records))
    paths = {"markdown": out / "table1.md", "json": out / "table1.json"}
    write_text_atomic(paths["json"], table_json(table))
    write_text_atomic(paths["markdown"], report_markdown(table, drawn, skipped))
    return {**paths, **drawn}
