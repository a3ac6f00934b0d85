"""A simulation worker's memory over users, without Flower: the per-user pipeline of a
``simulate`` run in one process, as a worker runs it, and what the process holds after each.

    python -m oppu.simulations.bench_worker_memory --run runs/lamp2n_100q --users 12

``--run`` is an ``oppu-coordinator simulate --out`` directory: its task-adapted bases and the
recipe chosen on base users are reused (without it, the untuned embedded model serves every
variant). Prints a line per user (seconds; resident and anonymous memory; Python objects;
bytes of live tensors) and ``WORKER_MEMORY_JSON {...}``. A leak in Python shows in the
objects or tensors; native growth (allocator, the matrix products' shape caches) only in the
anonymous memory.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

from oppu.shared.llm.threads import apply_cpu_defaults

JSON_PREFIX = "WORKER_MEMORY_JSON "


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=None,
                        help="a simulate --out directory whose bases and recipe to reuse")
    parser.add_argument("--data", default="../shared/data/huffpost_lamp2n",
                        help="the LaMP directory the run used")
    parser.add_argument("--users", type=int, default=12)
    parser.add_argument("--max-history", type=int, default=16)
    parser.add_argument("--suite", default="quick", help="a preset or comma-separated variants")
    return parser.parse_args(argv)


def held_now() -> dict:
    """What this process holds: resident and anonymous MB, Python objects, live tensor MB."""
    import torch

    from oppu.shared.resources import process_anon_bytes, process_rss_bytes

    objects = gc.get_objects()
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                for t in objects if isinstance(t, torch.Tensor) and t.device.type == "cpu"}
    return {"rss_mb": round(process_rss_bytes(os.getpid()) / 2**20, 1),
            "anon_mb": round(process_anon_bytes(os.getpid()) / 2**20, 1),
            "python_objects": len(objects),
            "tensor_mb": round(sum(storages.values()) / 2**20, 1)}


def load_bases(run: Path | None) -> tuple:
    """(plain model, tokenizer, {base name: model}) of the run, sharing equal weights as a
    worker does; the untuned embedded model alone without a run."""
    from oppu.shared.llm.model import load_base_model
    from oppu.shared.llm.weight_sharing import share_identical_weights
    from oppu.shared.personal.bases import PLAIN

    plain, tokenizer, _ = load_base_model(str(run / "base") if run else None, device="cpu")
    if run is None:
        return plain, tokenizer, None
    bases = {PLAIN: plain}
    for directory in sorted(p for p in (run / "bases").glob("*") if p.is_dir()):
        model, _, _ = load_base_model(str(directory), device="cpu")
        share_identical_weights(model, list(bases.values()))
        bases[directory.name] = model
    return plain, tokenizer, bases


def main(argv: Sequence[str] | None = None) -> dict:
    apply_cpu_defaults()  # as a worker has them (the shape caches' sizes included)
    from oppu.shared.data.cohort import LampCohort
    from oppu.shared.data.lamp import load_lamp
    from oppu.shared.personal.evaluation import EvalQuery
    from oppu.shared.personal.pipeline import run_variants
    from oppu.shared.personal.recipe import recipe_from_options
    from oppu.shared.resources import release_memory
    from oppu.simulations.commands.simulate import suite_names
    from oppu.simulations.simulate import base_summary

    args = parse_args(argv)
    dataset = load_lamp(args.data)
    cohort = LampCohort(dataset, args.users)
    plain, tokenizer, bases = load_bases(args.run)
    chosen = base_summary(args.run / "base").get("recipe") if args.run else None
    recipe = recipe_from_options(**({"lr": chosen["lr"], "epochs": chosen["epochs"]}
                                    if chosen else {}))
    suite = suite_names(args.suite)
    labels = tuple(cohort.labels()) or None
    result: dict = {"run": str(args.run or ""), "suite": list(suite),
                    "max_history": args.max_history, "loaded": held_now(), "users": []}
    print(f"bases loaded: {result['loaded']}", flush=True)
    for partition in range(len(cohort)):
        user = cohort.user(partition)
        history = user.training_history(args.max_history, 0.0)
        queries = [EvalQuery(q.input, str(q.gold), tuple(q.profile)) for q in user.answered]
        started = time.perf_counter()
        run_variants(plain, tokenizer, dataset.spec, history, queries, suite, recipe,
                     labels=labels, bases=bases)
        release_memory()  # as the worker does after each user
        row = {"user": partition, "seconds": round(time.perf_counter() - started, 1),
               **held_now()}
        result["users"].append(row)
        print(json.dumps(row), flush=True)
    print(JSON_PREFIX + json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
