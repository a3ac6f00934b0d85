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
Wall time covers tokenization and training, not loading the model. torch's FLOP counter counts
what each pipeline executes in one more run of each, untimed (the counter sees every op in
Python: it slowed oppu's loop 1.7x); with this CPU's matmul peak (``torch.mm`` on the model's
shapes, measured in each run) that gives the share of the peak each reaches (``bench_flops``).
Progress goes to stderr while it runs. The result is a table, a ``BENCH_JSON {...}`` line on
stdout and the same JSON in ``--out``.

This module is the command line and the two-process driver; the shared recipe and user are in
``bench_recipe``, the reference pipeline in ``bench_reference``, the in-process run (and
oppu's pipeline) in ``bench_pipelines``, the result and its table in ``bench_report``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from oppu.simulations.bench_pipelines import run_pipeline
from oppu.simulations.bench_recipe import REFERENCE_BATCH, SHARED_DATA
from oppu.simulations.bench_report import print_table, summarize

PIPELINES = ("reference", "optimized")
JSON_PREFIX = "BENCH_JSON "


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
    p.add_argument("--count-flops", action="store_true",
                   help="With --only: count the run's FLOPs (its time is then not the loop's).")
    args = p.parse_args(argv)
    for name in ("items", "epochs", "batch_size", "reference_batch_size", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1 (got {getattr(args, name)}).")
    if args.max_steps is not None and args.max_steps < 1:
        p.error(f"--max-steps must be >= 1 (got {args.max_steps}).")
    if args.holdout < 0:
        p.error(f"--holdout must be >= 0 (got {args.holdout}).")
    return args


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
    for repeat in range(1, args.repeats + 1):
        for which, runs in (("reference", refs), ("optimized", opts)):
            print(f"[run {repeat}/{args.repeats}] {which}: loading, training...", file=sys.stderr,
                  flush=True)
            runs.append(_run_child(which, raw))
            print(f"[run {repeat}/{args.repeats}] {which}: {runs[-1]['seconds']:.1f} s, "
                  f"{runs[-1]['tokens_per_second']:.0f} tokens/s", file=sys.stderr, flush=True)
    flops = {}
    for which in PIPELINES:  # counted apart: the counter would slow the timed runs
        print(f"[FLOPs] {which}: one more run under torch's FLOP counter (untimed)...",
              file=sys.stderr, flush=True)
        flops[which] = _run_child(which, [*raw, "--count-flops"])["flops"]
    result = summarize(refs, opts, args, flops=flops)
    print_table(result)
    from oppu.simulations.bench_output import publish_result

    publish_result(result, args.out, JSON_PREFIX)
    return result


if __name__ == "__main__":
    main()
