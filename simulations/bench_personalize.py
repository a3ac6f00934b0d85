"""Speed on CPU: one user's private LoRA trained the OPPU reference way and oppu's way.

    OPPU_HOME=.oppu-home python -m oppu.simulations.bench_personalize            # ~100 items
    python -m oppu.simulations.bench_personalize --items 8 --epochs 1            # < 1 minute

Both pipelines train the same fresh LoRA (same init) on the same user's items, tokenized to
identical sequences, for the same epochs:

* reference: HF ``transformers.Trainer`` set up as the public OPPU code (OPPU.py) does it:
  batch 16, AdamW (torch), lr 1e-4, weight decay 0.01, 10% warm-up, linear decay, grad clip
  0.3, bf16 autocast, length-grouped sampling, activation (gradient) checkpointing,
  ``DataCollatorForSeq2Seq`` padding to a multiple of 8 on the left, loss from the model's own
  head over the whole sequence (labels -100 on the prompt);
* optimized: oppu's ``train_private_adapter`` (``oppu.shared.llm.training.train_loop``).

By default oppu uses the reference's batch size too, so both take the same optimizer steps.
Each pipeline runs in its own subprocess (``--only reference|optimized``), so each reports
its own peak RSS; ``--repeats N`` alternates them N times and reports each one's median run.
Wall time covers tokenization and training, not loading the model. The result is a table, a
``BENCH_JSON {...}`` line on stdout and the same JSON in ``--out``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oppu.shared.llm.batching import Tokenized
from oppu.shared.personal.evaluation import EvalQuery
from oppu.shared.personal.peft_methods import PeftSettings

SHARED_DATA = Path("/work/shared/data/huffpost_lamp2n")
PIPELINES = ("reference", "optimized")
JSON_PREFIX = "BENCH_JSON "
VERSION = 1

# The OPPU reference's per-user recipe (OPPU.py); used for both pipelines where they share it.
LORA = PeftSettings(method="lora", r=8, alpha=8, dropout=0.05, target_modules=("q_proj", "v_proj"))
WEIGHT_DECAY = 0.01
WARMUP_RATIO = 0.1
MAX_GRAD_NORM = 0.3
REFERENCE_BATCH = 16
PAD_TO_MULTIPLE_OF = 8


def default_data() -> Path:
    """The real HuffPost LaMP-2N-like data when present, else the bundled sample."""
    if SHARED_DATA.is_dir():
        return SHARED_DATA
    from oppu.simulations.quickstart import sample_dir

    return sample_dir()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from oppu.shared.llm.training import TrainSettings

    defaults = TrainSettings()
    p = argparse.ArgumentParser(
        prog="python -m oppu.simulations.bench_personalize",
        description="Train one user's private LoRA with the OPPU reference pipeline (HF "
        "Trainer) and with oppu's loop; compare tokens/s, wall time, peak RSS and loss.",
    )
    p.add_argument("--data", type=Path, default=None,
                   help=f"LaMP directory (default {SHARED_DATA} if present, else the sample).")
    p.add_argument("--user", default=None, help="User to train (default: the one whose "
                   "history is closest to --items).")
    p.add_argument("--items", type=int, default=100,
                   help="History items to train on (the newest ones if the user has more).")
    p.add_argument("--epochs", type=int, default=2, help="Epochs, the same for both.")
    p.add_argument("--max-steps", type=int, default=None,
                   help="Cap on optimizer steps for each pipeline (token counts then differ).")
    p.add_argument("--lr", type=float, default=1e-4, help="Learning rate, the same for both.")
    p.add_argument("--batch-size", type=int, default=REFERENCE_BATCH,
                   help="oppu's batch size (default: the reference's, so both take the same "
                   f"optimizer steps; oppu's own default is {defaults.batch_size}).")
    p.add_argument("--reference-batch-size", type=int, default=REFERENCE_BATCH,
                   help="The reference's per-device batch size (OPPU.py: 16).")
    p.add_argument("--reference-bf16", action=argparse.BooleanOptionalAction, default=True,
                   help="bf16 autocast in the reference, as OPPU.py (bf16=True). On a CPU "
                   "without native bf16 (AVX512 only) autocast is ~2.6x slower.")
    p.add_argument("--optimized-bf16", choices=("auto", "on", "off"), default=defaults.bf16,
                   help="oppu's bf16 autocast setting.")
    p.add_argument("--max-length", type=int, default=defaults.max_length,
                   help="Tokens per example, at most (both pipelines).")
    p.add_argument("--seed", type=int, default=0, help="Adapter init and batch-order seed.")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's).")
    p.add_argument("--repeats", type=int, default=1,
                   help="Run both pipelines this many times, alternating, and report each "
                   "one's median run: a shared or drifting machine then biases neither side.")
    p.add_argument("--eval", action="store_true",
                   help="Also score both adapters on the user's queries (+ --holdout items).")
    p.add_argument("--holdout", type=int, default=0,
                   help="Newest history items held out of training and evaluated with --eval.")
    p.add_argument("--base-model", default=None, help="Base model (default: the embedded one).")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda.")
    p.add_argument("--out", type=Path, default=Path("runs/bench_personalize.json"),
                   help="Where to write the JSON result.")
    p.add_argument("--only", choices=PIPELINES, default=None,
                   help="Run one pipeline in this process and print its JSON (used internally).")
    p.add_argument("--child-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name in ("items", "epochs", "batch_size", "reference_batch_size", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1 (got {getattr(args, name)}).")
    if args.max_steps is not None and args.max_steps < 1:
        p.error(f"--max-steps must be >= 1 (got {args.max_steps}).")
    if args.holdout < 0:
        p.error(f"--holdout must be >= 0 (got {args.holdout}).")
    return args


# ---- the user and the data both pipelines train on ------------------------------------------


@dataclass(frozen=True)
class BenchUser:
    name: str
    task: Any  # TaskSpec
    history: list[dict]  # what both pipelines train on
    labels: tuple[str, ...]
    queries: list[EvalQuery]  # the user's queries with golds, then held-out items


def choose_user(data: Path, items: int, user: str | None = None, holdout: int = 0) -> BenchUser:
    """The named user, or the one whose history is closest to ``items + holdout`` items."""
    from oppu.shared.data import load_lamp, split_history, user_history

    dataset = load_lamp(data)
    task = dataset.spec
    by_user = dataset.users()
    if user is None:
        sizes = {u: len(user_history(qs)) for u, qs in by_user.items()}
        target = items + holdout
        user = min(sizes, key=lambda u: (abs(sizes[u] - target), -sizes[u], u))
    elif user not in by_user:
        raise ValueError(f"No user {user!r} in {data}; pass one of its user ids with --user.")
    queries = by_user[user]
    history = user_history(queries)
    if not history:
        raise ValueError(f"User {user!r} has no history before their first query.")
    labels = task.label_set(queries[0].input)
    train, held = split_history(history, holdout) if holdout else (history, [])
    evals = [EvalQuery(q.input, q.gold, tuple(q.profile)) for q in queries if q.gold is not None]
    for item in held:
        pair = task.query_from_item(item, labels=labels)
        if pair is not None:
            evals.append(EvalQuery(*pair))
    return BenchUser(user, task, list(train[-items:]), labels, evals)


def tokenized_examples(tokenizer, bench: BenchUser, max_length: int) -> list[Tokenized]:
    """The exact sequences ``train_private_adapter`` trains on (k=0, no profile)."""
    from oppu.shared.llm.batching import tokenize_example
    from oppu.shared.personal.private_adapter import training_examples

    examples = training_examples(bench.task, bench.history, 0, bench.labels)
    return [tokenize_example(tokenizer, ex, max_length) for ex in examples]


def fingerprint(tokenized: Sequence[Tokenized]) -> str:
    blob = json.dumps([[t.input_ids, t.labels] for t in tokenized]).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def peak_rss_mb() -> float:
    """This process's peak resident set size so far (monotonic)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB else


def _loss_summary(losses: Sequence[float]) -> dict[str, float]:
    """First step's loss and the mean of the last three (as oppu's TrainReport does)."""
    if not losses:
        return {"first_loss": float("nan"), "final_loss": float("nan")}
    return {"first_loss": losses[0], "final_loss": sum(losses[-3:]) / len(losses[-3:])}


# ---- the two pipelines ---------------------------------------------------------------------


def train_reference(model, tokenizer, bench: BenchUser, args, *, use_cpu: bool) -> dict:
    """OPPU.py's per-user training with HF Trainer; ``model`` carries a fresh LoRA."""
    from transformers import (
        DataCollatorForSeq2Seq,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )
    from transformers.trainer_callback import PrinterCallback

    class CountingTrainer(Trainer):
        """Counts the non-pad and padded tokens of every batch the loss is computed on."""

        tokens = 0
        cells = 0

        def compute_loss(self, model, inputs, *rest, **kwargs):
            mask = inputs["attention_mask"]
            self.tokens += int(mask.sum())
            self.cells += mask.numel()
            return super().compute_loss(model, inputs, *rest, **kwargs)

    class LossLog(TrainerCallback):
        def __init__(self) -> None:
            self.losses: list[float] = []

        def on_log(self, _args, _state, _control, logs=None, **_kwargs):
            if logs and "loss" in logs:
                self.losses.append(float(logs["loss"]))

    tokenizer.padding_side = "left"  # OPPU.py: padding_side="left", pad = eos
    tokenizer.pad_token = tokenizer.eos_token
    model.config.use_cache = False
    peak_before = peak_rss_mb()
    with tempfile.TemporaryDirectory(prefix="bench-ref-") as scratch:
        start = time.perf_counter()
        tokenized = tokenized_examples(tokenizer, bench, args.max_length)
        features = [{"input_ids": t.input_ids, "attention_mask": [1] * len(t.input_ids),
                     "labels": t.labels} for t in tokenized]
        random.Random(args.seed).shuffle(features)  # OPPU.py: Dataset.map(...).shuffle()
        training_args = TrainingArguments(
            output_dir=scratch,
            per_device_train_batch_size=args.reference_batch_size,
            gradient_accumulation_steps=1,
            optim="adamw_torch",
            num_train_epochs=args.epochs,
            max_steps=args.max_steps or -1,
            learning_rate=args.lr,
            weight_decay=WEIGHT_DECAY,
            bf16=args.reference_bf16,
            max_grad_norm=MAX_GRAD_NORM,
            warmup_steps=WARMUP_RATIO,  # a float < 1 is a ratio (was warmup_ratio)
            lr_scheduler_type="linear",
            train_sampling_strategy="group_by_length",  # was group_by_length=True
            activation_checkpointing=True,  # was gradient_checkpointing=True
            logging_steps=1,  # OPPU.py: 50; every step here to report the final loss
            save_strategy="no",
            eval_strategy="no",
            report_to="none",
            disable_tqdm=True,
            use_cpu=use_cpu,
            seed=args.seed,
        )
        log = LossLog()
        trainer = CountingTrainer(
            model=model,
            args=training_args,
            train_dataset=features,
            data_collator=DataCollatorForSeq2Seq(
                tokenizer, pad_to_multiple_of=PAD_TO_MULTIPLE_OF, return_tensors="pt",
                padding=True,
            ),
            callbacks=[log],
        )
        trainer.remove_callback(PrinterCallback)  # disable_tqdm prints every log otherwise
        output = trainer.train()
        seconds = time.perf_counter() - start
    # Undo what training set up, so evaluation runs like oppu's: fp32, KV cache on.
    trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    model.config.use_cache = True
    model.eval()
    return {
        "examples": len(tokenized),
        "fingerprint": fingerprint(tokenized),
        "tokens_per_epoch": sum(len(t.input_ids) for t in tokenized),
        "steps": int(output.global_step),
        "tokens": trainer.tokens,
        "padding_share": 1 - trainer.tokens / trainer.cells if trainer.cells else 0.0,
        "seconds": seconds,
        "loop_seconds": float(output.metrics.get("train_runtime", seconds)),
        **_loss_summary(log.losses),
        "peak_rss_before_train_mb": peak_before,
        "settings": {
            "trainer": "transformers.Trainer", "batch_size": args.reference_batch_size,
            "bf16": args.reference_bf16, "optim": "adamw_torch",
            "activation_checkpointing": True, "sampling": "group_by_length",
            "pad_to_multiple_of": PAD_TO_MULTIPLE_OF, "padding_side": "left",
        },
    }


def train_optimized(model, tokenizer, bench: BenchUser, args) -> dict:
    """oppu's own path: ``train_private_adapter`` on a model carrying a fresh LoRA."""
    from oppu.shared.llm.training import TrainSettings
    from oppu.shared.personal.private_adapter import PersonalizeSettings, train_private_adapter

    train = TrainSettings(lr=args.lr, epochs=args.epochs, batch_size=args.batch_size,
                          weight_decay=WEIGHT_DECAY, warmup_ratio=WARMUP_RATIO,
                          grad_clip=MAX_GRAD_NORM, max_length=args.max_length,
                          max_steps=args.max_steps, seed=args.seed, bf16=args.optimized_bf16)
    settings = PersonalizeSettings(peft=LORA, train=train)
    tokenized = tokenized_examples(tokenizer, bench, args.max_length)  # for the fingerprint
    peak_before = peak_rss_mb()
    start = time.perf_counter()
    report = train_private_adapter(model, tokenizer, bench.task, bench.history, settings,
                                   labels=bench.labels, show_progress=False)
    seconds = time.perf_counter() - start
    return {
        "examples": report.examples,
        "fingerprint": fingerprint(tokenized),
        "tokens_per_epoch": sum(len(t.input_ids) for t in tokenized),
        "steps": report.steps,
        "tokens": report.tokens,
        "seconds": seconds,
        "loop_seconds": report.seconds,
        "first_loss": report.first_loss,
        "final_loss": report.final_loss,
        "peak_rss_before_train_mb": peak_before,
        "settings": {"loop": "oppu.shared.llm.training.train_loop", **train.to_dict()},
    }


def run_pipeline(which: str, args) -> dict:
    """Load the base, attach a fresh LoRA, train one way, optionally evaluate; in-process."""
    import torch

    from oppu.shared.cli_support import quiet_libraries
    from oppu.shared.llm.model import load_base_model
    from oppu.shared.personal.evaluation import evaluate_queries
    from oppu.shared.personal.private_adapter import attach_fresh_adapter, detach_adapter

    quiet_libraries()
    if args.threads:
        torch.set_num_threads(args.threads)
    bench = choose_user(args.data or default_data(), args.items, args.user, args.holdout)
    model, tokenizer, plan = load_base_model(args.base_model, device=args.device)
    peft_model = attach_fresh_adapter(model, LORA, seed=args.seed)
    if which == "reference":
        result = train_reference(peft_model, tokenizer, bench, args,
                                 use_cpu=plan.device == "cpu")
    else:
        result = train_optimized(peft_model, tokenizer, bench, args)
    result["peak_rss_mb"] = peak_rss_mb()
    result["tokens_per_second"] = result["tokens"] / result["seconds"]
    if args.eval and bench.queries:
        scored = evaluate_queries(peft_model, tokenizer, bench.task, bench.queries,
                                  labels=bench.labels)
        result["eval"] = {**scored.metrics, "queries": len(bench.queries)}
    detach_adapter(peft_model)
    result.update(pipeline=which, threads=torch.get_num_threads(), device=plan.device,
                  user=bench.name, task=bench.task.name, items=len(bench.history))
    return result


# ---- both, each in its own process ---------------------------------------------------------


def _run_child(which: str, argv: Sequence[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        out = Path(scratch) / f"{which}.json"
        command = [sys.executable, "-m", "oppu.simulations.bench_personalize", *argv,
                   "--only", which, "--child-out", str(out)]
        done = subprocess.run(command, check=False)
        if done.returncode != 0 or not out.is_file():
            raise RuntimeError(f"The {which} pipeline failed (exit code {done.returncode}); "
                               f"rerun it alone with: {' '.join(command[1:-2])}")
        return json.loads(out.read_text())


def median_run(runs: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The run with the median wall time (the slower middle one for an even count)."""
    return sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]


def summarize(refs: Sequence[Mapping[str, Any]], opts: Sequence[Mapping[str, Any]],
              args) -> dict:
    def ratio(a: float, b: float) -> float | None:
        return a / b if b else None

    ref, opt = median_run(refs), median_run(opts)
    return {
        "benchmark": "bench_personalize",
        "version": VERSION,
        "data": str(args.data or default_data()),
        "task": ref["task"],
        "user": ref["user"],
        "items": ref["items"],
        "epochs": args.epochs,
        "max_steps": args.max_steps,
        "tokens_expected": ref["tokens_per_epoch"] * args.epochs,
        "threads": ref["threads"],
        "device": ref["device"],
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "identical_examples": ref["fingerprint"] == opt["fingerprint"]
        and ref["user"] == opt["user"],
        "reference": dict(ref),
        "optimized": dict(opt),
        "ratio": ratio(opt["tokens_per_second"], ref["tokens_per_second"]),
        "wall_speedup": ratio(ref["seconds"], opt["seconds"]),
        "peak_rss_ratio": ratio(opt["peak_rss_mb"], ref["peak_rss_mb"]),
        "runs": {"reference_seconds": [r["seconds"] for r in refs],
                 "optimized_seconds": [r["seconds"] for r in opts],
                 "wall_speedups": [ratio(r["seconds"], o["seconds"])
                                   for r, o in zip(refs, opts, strict=True)]},
    }


def print_table(result: Mapping[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    ref, opt = result["reference"], result["optimized"]
    title = (f"{result['task']} user {result['user']!r}: {result['items']} items, "
             f"{result['epochs']} epoch(s), {result['threads']} thread(s), {result['device']}")
    repeats = len(result["runs"]["reference_seconds"])
    if repeats > 1:
        title += f"; median of {repeats} alternating runs each"
    table = Table(title=title)
    for name, justify in (("", "left"), ("reference (HF Trainer)", "right"),
                          ("optimized (oppu)", "right"), ("opt / ref", "right")):
        table.add_column(name, justify=justify)

    def row(label: str, key: str, fmt: str, with_ratio: bool = False) -> None:
        a, b = ref.get(key), opt.get(key)
        cells = [format(v, fmt) if isinstance(v, (int, float)) else "-" for v in (a, b)]
        r = f"{b / a:.2f}x" if with_ratio and a and b is not None else ""
        table.add_row(label, *cells, r)

    table.add_row("batch size", str(ref["settings"]["batch_size"]),
                  str(opt["settings"]["batch_size"]), "")
    row("optimizer steps", "steps", "d")
    row("tokens (non-pad)", "tokens", "d")
    row("padding share", "padding_share", ".1%")
    row("wall time, s", "seconds", ".1f", True)
    row("tokens/s", "tokens_per_second", ".1f", True)
    row("peak RSS, MB", "peak_rss_mb", ".0f", True)
    row("peak RSS before training, MB", "peak_rss_before_train_mb", ".0f")
    row("first loss", "first_loss", ".3f")
    row("final loss (last 3 steps)", "final_loss", ".3f")
    for metric in sorted(set(ref.get("eval", {})) | set(opt.get("eval", {}))):
        fmt = ".0f" if metric in ("count", "queries") else ".3f"
        cells = (ref.get("eval", {}).get(metric), opt.get("eval", {}).get(metric))
        table.add_row(f"eval {metric}", *(format(v, fmt) if v is not None else "-"
                                          for v in cells), "")
    Console().print(table)


def main(argv: Sequence[str] | None = None) -> dict:
    """Run one pipeline (``--only``) or both in separate processes; return the result."""
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw)
    if args.only is not None:
        result = run_pipeline(args.only, args)
        text = json.dumps(result, sort_keys=True)
        if args.child_out is not None:
            args.child_out.write_text(text)
        else:
            print(JSON_PREFIX + text)
        return result
    refs, opts = [], []
    for _ in range(args.repeats):
        refs.append(_run_child("reference", raw))
        opts.append(_run_child("optimized", raw))
    result = summarize(refs, opts, args)
    print_table(result)
    from oppu.simulations.bench_output import publish_result

    publish_result(result, args.out, JSON_PREFIX)
    return result


if __name__ == "__main__":
    main()
