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

``--lamp DIR`` runs a LaMP directory's test users (most active first) the same way: each
user's history (the items before their first query) is written as their own JSONL file and
read back as a user's would be, and their LaMP queries are the held-out items::

    python -m oppu.simulations.real_users --lamp ../shared/data/huffpost_lamp2n \\
        --task LaMP_2N --sample 20 --out runs/huffpost_users
"""

from __future__ import annotations

import argparse
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

from oppu.shared.atomic import write_text_atomic
from oppu.shared.personal.label_prior import MAJORITY
from oppu.simulations.bench_output import publish_result

JSON_PREFIX = "REAL_USERS_JSON"


@dataclass(frozen=True)
class RealUser:
    """A user's own history file, and the held-out (input, gold) pairs to score."""

    name: str
    history: Path
    heldout: list[tuple[str, str]]


def folder_users(root: Path, task_name: str) -> list[RealUser]:
    """``<user>/history.jsonl`` and ``<user>/heldout.jsonl`` folders under ``root``."""
    from oppu.shared.data import read_history
    from oppu.shared.tasks import get_task

    task = get_task(task_name)
    users = []
    for folder in sorted(p for p in root.iterdir() if (p / "history.jsonl").is_file()):
        heldout = [task.query_from_item(item)
                   for item in read_history(folder / "heldout.jsonl", task)]
        users.append(RealUser(folder.name, folder / "history.jsonl", heldout))
    return users


def lamp_users(directory: Path, task_name: str, out: Path, *, sample: int = 0, seed: int = 0
               ) -> list[RealUser]:
    """A LaMP directory's test users, a seeded random ``sample`` of them when > 0, each
    history written as the user's own JSONL file. (Its base users hold 1-6 items each: too
    few to set any aside for choosing a recipe.)"""
    import random

    from oppu.shared.data.lamp import load_lamp
    from oppu.shared.data.split import select_test_users, user_history

    dataset = load_lamp(directory, task_name)
    by_user = dataset.users()
    ids = select_test_users(dataset)
    positions = range(len(ids))
    if 0 < sample < len(ids):
        positions = sorted(random.Random(seed).sample(positions, sample))
    users = []
    for position in positions:
        queries = by_user[ids[position]]
        name = f"{position:03d}_" + re.sub(r"[^A-Za-z0-9]+", "_", ids[position]).strip("_")
        path = out / "histories" / name / "history.jsonl"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, "".join(json.dumps(item) + "\n"
                                            for item in user_history(queries)))
        users.append(RealUser(name, path, [(q.input, q.gold) for q in queries
                                           if q.gold is not None]))
    return users


def run_user(user: RealUser, task_name: str, out: Path, model, tokenizer) -> dict:
    """Train with defaults on the user's history, score the held-out items; the record."""
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
    history = read_history(user.history, task)
    store = AdapterStore(out / "users" / user.name)
    started = time.perf_counter()
    outcome = personalize_user(model, tokenizer, task, history, DEFAULT_RECIPE, store=store,
                               show_progress=False, selection=SelectionSettings())
    trained = time.perf_counter() - started
    queries = [EvalQuery(query, gold, history=tuple(history)) for query, gold in user.heldout]
    labels = metric_labels(task, queries)
    base = evaluate_queries(model, tokenizer, task, queries, labels=labels)
    kept = store.kept(task.name)
    prior = kept.prior  # as `ask` answers: the kept model and prior
    used = base if prior is None else evaluate_queries(model, tokenizer, task, queries,
                                                       labels=labels, prior=prior)
    if not kept.uses_base and store.exists(task.name):
        peft_model = store.load(model, task.name)
        try:
            used = evaluate_queries(peft_model, tokenizer, task, queries, labels=labels,
                                    prior=prior)
        finally:
            detach_adapter(peft_model)
    majority = majority_label(task, history)
    golds = [q.gold for q in queries]
    selection = outcome.selection
    return {
        "user": user.name, "history_items": len(history), "heldout_items": len(queries),
        "majority_label": majority, "golds": golds,
        "base": base.predictions, "adapter": used.predictions,
        "chosen": _kept_name(selection),
        "selection": selection.to_dict() if selection else None,
        "seconds_train": round(trained, 1), "seconds_selection":
            round(selection.seconds, 1) if selection else 0.0,
        "seconds_total": round(time.perf_counter() - started, 1)}


def _kept_name(selection) -> str:
    """What the user ends up with, e.g. "adapter" or "base + prior 1" or "majority"."""
    if selection is None:
        return "adapter (no selection)"
    weight = selection.prior_weight
    if weight == MAJORITY:
        return "majority label"
    return selection.chosen if weight == 0 else f"{selection.chosen} + prior {weight:g}"


def correct(predictions: list[str], golds: list[str]) -> list[bool]:
    return [p == g for p, g in zip(predictions, golds, strict=True)]


def mcnemar(a: list[bool], b: list[bool]) -> dict:
    """Exact two-sided McNemar test: the discordant pairs against a fair coin."""
    from oppu.shared.stat_tests import mcnemar as exact_mcnemar

    a_only = sum(x and not y for x, y in zip(a, b, strict=True))
    b_only = sum(y and not x for x, y in zip(a, b, strict=True))
    return {"a_only": a_only, "b_only": b_only,
            "p": exact_mcnemar(a_only, b_only, len(a))["p"]}


def over_users(rows: list[dict], a: str, b: str) -> dict:
    """Paired t-test over users of their accuracy difference (each user weighs 1)."""
    from oppu.shared.stat_tests import paired_t

    diffs = [r[a] - r[b] for r in rows]
    return paired_t(len(diffs), sum(diffs), sum(d * d for d in diffs))


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
        "users_adapter_vs_base": over_users(rows, "adapter", "base"),
        "users_adapter_vs_majority": over_users(rows, "adapter", "majority"),
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
        lines.append("")
        for other, label in (("base", "the base"), ("majority", "the majority label")):
            items, users = summary[f"adapter_vs_{other}"], summary.get(f"users_adapter_vs_{other}")
            line = (f"As used vs {label}: {items['a_only']} items gained, {items['b_only']} "
                    f"lost (exact McNemar p = {items['p']:.2g})")
            if users and users["p"] == users["p"]:  # NaN with fewer than two users
                line += (f"; per user {users['mean']:+.3f} (95% CI {users['low']:+.3f} to "
                         f"{users['high']:+.3f}, paired t p = {users['p']:.2g})")
            lines.append(line + ".")
    return "\n".join(lines)


def plot(summary: dict, path: Path) -> Path:
    """Per-user accuracy of the base, the model as used and the majority label (a PNG)."""
    from oppu.simulations.plotting import new_figure, save_png

    rows = summary["users"]
    fig = new_figure(width=max(7.0, 0.45 * len(rows) + 2), height=4.0)
    ax = fig.add_subplot()
    width = 0.27
    for offset, (key, label) in enumerate((("base", "base"), ("adapter", "as used"),
                                           ("majority", "your majority label"))):
        ax.bar([i + (offset - 1) * width for i in range(len(rows))],
               [r[key] for r in rows], width, label=label)
    ax.set_xticks(range(len(rows)), [r["user"].removeprefix("annotator_") for r in rows],
                  rotation=60, fontsize=7)
    ax.set_ylabel("accuracy on the user's held-out items")
    ax.set_ylim(0, 1.15)  # room above the bars for the legend
    ax.legend(fontsize=8, ncols=3, loc="upper center")
    fig.tight_layout()
    return save_png(fig, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--users", type=Path, help="Folder of user folders.")
    source.add_argument("--lamp", type=Path, help="LaMP directory: its test users.")
    parser.add_argument("--task", required=True)
    parser.add_argument("--task-file", type=Path, help="TOML/JSON declaring a custom task.")
    parser.add_argument("--out", type=Path, default=Path("runs/real_users"))
    parser.add_argument("--limit", type=int, default=0, help="At most this many users.")
    parser.add_argument("--sample", type=int, default=0,
                        help="With --lamp: this many test users at random (0: all).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of --sample.")
    parser.add_argument("--shard", default="0/1", help="K/N: run every Nth user from the Kth "
                        "(N processes share the users; each writes its own records).")
    parser.add_argument("--summary-only", action="store_true",
                        help="Summarize the users already done; train nobody.")
    args = parser.parse_args(argv)
    if args.summary_only:
        paths = sorted((args.out / "records").glob("*.json"))
        summary = summarize([json.loads(path.read_text()) for path in paths])
        print(markdown(summary))
        print(f"plot: {plot(summary, args.out / 'real_users.png')}")
        publish_result(summary, args.out / "summary.json", JSON_PREFIX)
        return

    from oppu.shared.cli_support import quiet_libraries
    from oppu.shared.llm.model import load_base_model
    from oppu.shared.tasks import load_task_file

    quiet_libraries()
    if args.task_file is not None:
        load_task_file(args.task_file)
    if args.lamp is not None:
        users = lamp_users(args.lamp, args.task, args.out, sample=args.sample,
                           seed=args.seed)
    else:
        users = folder_users(args.users, args.task)
    users = users[: args.limit] if args.limit else users
    shard, shards = (int(part) for part in args.shard.split("/"))
    users = users[shard::shards]
    model, tokenizer, _ = load_base_model(None, device="auto")
    records = []
    for i, user in enumerate(users, 1):
        path = args.out / "records" / f"{user.name}.json"
        if path.is_file():
            records.append(json.loads(path.read_text()))
            continue
        record = run_user(user, args.task, args.out, model, tokenizer)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(record, indent=2))
        records.append(record)
        print(f"[{i}/{len(users)}] {user.name}: kept {record['chosen']}, "
              f"{record['seconds_total']:.0f} s", flush=True)
    summary = summarize(records)
    print(markdown(summary))
    print(f"plot: {plot(summary, args.out / 'real_users.png')}")
    publish_result(summary, args.out / "summary.json", JSON_PREFIX)


if __name__ == "__main__":
    main()
