"""``oppu-client evaluate``: score the base and your adapter on items you set aside, no training.

The adapter is used as trained (its retrieval k and profile); ``--train-history`` (your
training history) lets retrieval find items for the queries and adds the trivial bar of
always answering your most frequent label. Results are printed and written as JSON on this
machine only.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from oppu.client.cli.options import (
    BaseModelOpt,
    DataDirOpt,
    DeviceOpt,
    PassphraseEnvOpt,
    TaskOpt,
    UserOpt,
    adapter_store,
    trained_base,
)
from oppu.client.cli.report import print_results
from oppu.shared.atomic import write_text_atomic
from oppu.shared.cli_support import console, friendly_errors, quiet_libraries
from oppu.shared.data import read_history
from oppu.shared.metrics import json_safe, make_metric
from oppu.shared.personal.evaluation import (
    EvalQuery,
    EvalResult,
    evaluate_queries,
    metric_labels,
)
from oppu.shared.personal.private_adapter import detach_adapter
from oppu.shared.personal.user_run import majority_label
from oppu.shared.tasks import TaskKind, get_task


@friendly_errors
def evaluate(
    history: Annotated[Path, typer.Option(
        "--history", help="The items you set aside (JSONL, the task's fields with answers).")],
    task: TaskOpt,
    train_history: Annotated[Path | None, typer.Option(
        "--train-history", help="Your training history: retrieval source for k > 0, and the "
        "majority-label bar.")] = None,
    user: UserOpt = "default",
    data_dir: DataDirOpt = None,
    base_model: BaseModelOpt = None,
    device: DeviceOpt = "auto",
    passphrase_env: PassphraseEnvOpt = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="JSON results (default: DATA_DIR/evaluations/TASK-TIME.json).")] = None,
) -> None:
    """Score the base and your adapter on held-out items you kept aside, locally."""
    quiet_libraries()
    from oppu.shared.llm.model import load_base_model

    spec = get_task(task)
    store = adapter_store(user, data_dir, passphrase_env)
    meta = store.metadata(spec.name) if store.exists(spec.name) else {}
    labels = tuple(meta["labels"]) if meta.get("labels") else None
    train = read_history(train_history, spec) if train_history is not None else []
    queries = []
    for item in read_history(history, spec):
        pair = spec.query_from_item(item, labels=labels)
        if pair is not None:
            queries.append(EvalQuery(pair[0], pair[1], tuple(train)))
    if not queries:
        raise ValueError(f"{history} holds no item with an answer to score.")
    labels = labels or metric_labels(spec, queries)  # one label set for every row
    k = int(meta.get("k") or 0)
    if base_model is None:
        base_model = trained_base(meta)
    model, tokenizer, _ = load_base_model(base_model, device=device)
    started = time.perf_counter()
    rows: dict[str, EvalResult] = {
        "base": evaluate_queries(model, tokenizer, spec, queries, k=k, labels=labels)}
    kept = store.kept(spec.name)
    prior = kept.prior
    if meta:
        peft_model = store.load(model, spec.name)
        try:
            rows["your adapter"] = evaluate_queries(peft_model, tokenizer, spec, queries, k=k,
                                                    profile=meta.get("profile_text"),
                                                    labels=labels)
            if prior is not None and not kept.uses_base:
                rows["as ask answers"] = evaluate_queries(
                    peft_model, tokenizer, spec, queries, k=k,
                    profile=meta.get("profile_text"), labels=labels, prior=prior)
        finally:
            detach_adapter(peft_model)
    if prior is not None and kept.uses_base:
        rows["as ask answers"] = evaluate_queries(model, tokenizer, spec, queries, k=k,
                                                  labels=labels, prior=prior)
    if train and spec.kind != TaskKind.GENERATION and spec.target_field is not None:
        rows["your majority label"] = _majority(spec, train, queries, labels)
    _print(spec.name, rows, len(queries), kept.uses_base)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = out or store.root / "evaluations" / f"{spec.name}-{stamp}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(target, json.dumps(json_safe({
        "task": spec.name, "history": str(history), "queries": len(queries), "k": k,
        "seconds": round(time.perf_counter() - started, 2),
        "results": {name: {"metrics": r.metrics, "predictions": r.predictions}
                    for name, r in rows.items()}}), indent=2))
    console.print(f"Written to {target}")


def _majority(spec, train, queries, labels) -> EvalResult:
    label = majority_label(spec, train)
    golds = [q.gold for q in queries]
    metric = make_metric(spec.kind, labels)
    stats = metric.stats_for([label] * len(queries), golds)
    return EvalResult(tuple(labels), stats, metric.compute(stats), [label] * len(queries),
                      golds)


def _print(task: str, rows: dict[str, EvalResult], count: int, uses_base: bool) -> None:
    print_results(f"{task}: {count} held-out items", list(rows.items()))
    if uses_base:
        console.print("Your last training kept the base model (no adapter beat it on your "
                      "own items): `ask` answers with the base.")
    if "as ask answers" in rows:
        console.print("`ask` mixes in your answer frequencies, as your last training chose "
                      "on your own items (the \"as ask answers\" row).")
