"""Real users, as a new user would run oppu: per-user JSONL histories, defaults, held-out file.

For every user folder (``<user>/history.jsonl`` and ``<user>/heldout.jsonl``, as in
``../shared/data/tweeteval_annotators``) this does what the README tells a person to do:
``train`` with the defaults (its own 20% holdout, local recipe selection), then ``evaluate``
on the held-out file; and it scores the user's own majority label as the trivial bar. Each
user's result is written as it finishes (rerun to resume); the summary pools all users and
gives exact McNemar tests (paired, two-sided) of the adapter as used against the base and
against the majority label::

    python -m oppu.simulations.real_users --users ../shared/data/tweeteval_annotators \\
        --task-file runs/tweet_hate.toml --task tweet_hate --out runs/annotators
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from oppu.shared.atomic import write_text_atomic
from oppu.simulations.bench_output import publish_result

JSON_PREFIX = "REAL_USERS_JSON"


def run_user(folder: Path, task_name: str, out: Path, model, tokenizer) -> dict:
    """Train with defaults on the user's history, score the held-out file; the record."""
    from oppu.client.adapter_store import AdapterStore
    from oppu.shared.data import read_history
    from oppu.shared.personal.evaluation import EvalQuery, evaluate_queries, metric_labels
    from oppu.shared.personal.pipeline import personalize_user
    from oppu.shared.personal.private_adapter import detach_adapter
    from oppu.shared.personal.recipe import DEFAULT_RECIPE
    from oppu.shared.personal.selection import SelectionSettings
    from oppu.shared.personal.user_run import majority_label
    from oppu.shared.tasks import get_task

    task = get_task(task_name)
    history = read_history(folder / "history.jsonl", task)
    heldout = read_history(folder / "heldout.jsonl", task)
    store = AdapterStore(out / "users" / folder.name)
    started = time.perf_counter()
    outcome = personalize_user(model, tokenizer, task, history, DEFAULT_RECIPE, store=store,
                               show_progress=False, selection=SelectionSettings())
    trained = time.perf_counter() - started
    queries = [EvalQuery(*task.query_from_item(item), history=tuple(history))
               for item in heldout]
    labels = metric_labels(task, queries)
    base = evaluate_queries(model, tokenizer, task, queries, labels=labels)
    used = base
    if not store.uses_base(task.name) and store.exists(task.name):
        peft_model = store.load(model, task.name)
        try:
            used = evaluate_queries(peft_model, tokenizer, task, queries, labels=labels)
        finally:
            detach_adapter(peft_model)
    majority = majority_label(task, history)
    golds = [q.gold for q in queries]
    selection = outcome.selection
    return {
        "user": folder.name, "history_items": len(history), "heldout_items": len(queries),
        "majority_label": majority, "golds": golds,
        "base": base.predictions, "adapter": used.predictions,
        "chosen": selection.chosen if selection else "adapter (no selection)",
        "selection": selection.to_dict() if selection else None,
        "seconds_train": round(trained, 1), "seconds_selection":
            round(selection.seconds, 1) if selection else 0.0,
        "seconds_total": round(time.perf_counter() - started, 1)}


def correct(predictions: list[str], golds: list[str]) -> list[bool]:
    return [p == g for p, g in zip(predictions, golds, strict=True)]


def mcnemar(a: list[bool], b: list[bool]) -> dict:
    """Exact two-sided McNemar test: the discordant pairs against a fair coin."""
    from scipy.stats import binomtest

    a_only = sum(x and not y for x, y in zip(a, b, strict=True))
    b_only = sum(y and not x for x, y in zip(a, b, strict=True))
    n = a_only + b_only
    p = binomtest(a_only, n, 0.5).pvalue if n else 1.0
    return {"a_only": a_only, "b_only": b_only, "p": p}


def summarize(records: list[dict]) -> dict:
    """Per-user and pooled accuracy of base, adapter as used and majority; paired tests."""
    rows, pooled = [], {"base": [], "adapter": [], "majority": []}
    for r in records:
        golds = r["golds"]
        hits = {"base": correct(r["base"], golds), "adapter": correct(r["adapter"], golds),
                "majority": correct([r["majority_label"]] * len(golds), golds)}
        for name, values in hits.items():
            pooled[name] += values
        rows.append({"user": r["user"], "chosen": r["chosen"],
                     **{name: sum(v) / len(v) for name, v in hits.items()},
                     "seconds": r["seconds_total"]})
    total = len(pooled["base"])
    return {
        "users": rows, "queries": total,
        "pooled": {name: sum(v) / total for name, v in pooled.items()} if total else {},
        "adapter_vs_base": mcnemar(pooled["adapter"], pooled["base"]) if total else None,
        "adapter_vs_majority": mcnemar(pooled["adapter"], pooled["majority"]) if total else None,
        "users_adapter_beats_base": sum(r["adapter"] > r["base"] for r in rows),
        "users_adapter_below_base": sum(r["adapter"] < r["base"] for r in rows),
        "users_adapter_beats_majority": sum(r["adapter"] > r["majority"] for r in rows),
        "users_adapter_below_majority": sum(r["adapter"] < r["majority"] for r in rows),
    }


def markdown(summary: dict) -> str:
    lines = ["| user | kept | base | adapter as used | majority label |", "|---|---|---|---|---|"]
    for r in summary["users"]:
        lines.append(f"| {r['user']} | {r['chosen']} | {r['base']:.3f} | {r['adapter']:.3f} | "
                     f"{r['majority']:.3f} |")
    p = summary["pooled"]
    if p:
        lines.append(f"| **pooled ({summary['queries']} items)** | | {p['base']:.3f} | "
                     f"{p['adapter']:.3f} | {p['majority']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=Path, required=True, help="Folder of user folders.")
    parser.add_argument("--task", required=True)
    parser.add_argument("--task-file", type=Path, help="TOML/JSON declaring a custom task.")
    parser.add_argument("--out", type=Path, default=Path("runs/real_users"))
    parser.add_argument("--limit", type=int, default=0, help="At most this many users.")
    parser.add_argument("--summary-only", action="store_true",
                        help="Summarize the users already done; train nobody.")
    args = parser.parse_args(argv)
    if args.summary_only:
        paths = sorted((args.out / "records").glob("*.json"))
        summary = summarize([json.loads(path.read_text()) for path in paths])
        print(markdown(summary))
        publish_result(summary, args.out / "summary.json", JSON_PREFIX)
        return

    from oppu.shared.cli_support import quiet_libraries
    from oppu.shared.llm.model import load_base_model
    from oppu.shared.tasks import load_task_file

    quiet_libraries()
    if args.task_file is not None:
        load_task_file(args.task_file)
    folders = sorted(p for p in args.users.iterdir() if (p / "history.jsonl").is_file())
    folders = folders[: args.limit] if args.limit else folders
    model, tokenizer, _ = load_base_model(None, device="auto")
    records = []
    for i, folder in enumerate(folders, 1):
        path = args.out / "records" / f"{folder.name}.json"
        if path.is_file():
            records.append(json.loads(path.read_text()))
            continue
        record = run_user(folder, args.task, args.out, model, tokenizer)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(record, indent=2))
        records.append(record)
        print(f"[{i}/{len(folders)}] {folder.name}: kept {record['chosen']}, "
              f"{record['seconds_total']:.0f} s", flush=True)
    summary = summarize(records)
    print(markdown(summary))
    publish_result(summary, args.out / "summary.json", JSON_PREFIX)


if __name__ == "__main__":
    main()
