"""The benchmark's result: both pipelines' median runs side by side, as JSON and as a table."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from oppu.simulations.bench_recipe import default_data

VERSION = 3
"""Of the result's JSON layout (2: FLOP counts, rates and the matmul peak; 3: the FLOPs are
counted in runs apart from the timed ones)."""


def median_run(runs: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The run with the median wall time (the slower middle one for an even count)."""
    return sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]


def summarize(refs: Sequence[Mapping[str, Any]], opts: Sequence[Mapping[str, Any]],
              args, flops: Mapping[str, int] | None = None) -> dict:
    """Both pipelines' median runs; ``flops`` (by pipeline) from runs counted apart."""

    def ratio(a: float, b: float) -> float | None:
        return a / b if b else None

    ref, opt = median_run(refs), median_run(opts)
    ref, opt = dict(ref), dict(opt)
    if flops is not None:
        ref["flops"], opt["flops"] = flops["reference"], flops["optimized"]
    peaks = [r["matmul_peak"] for r in (*refs, *opts) if r.get("matmul_peak")]
    peak = max(peaks, key=lambda p: p["gflops"]) if peaks else None
    add_flop_rates(ref, opt, peak["gflops"] if peak else 0.0)
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
        "matmul_peak": peak,
        "reference": ref,
        "optimized": opt,
        "ratio": ratio(opt["tokens_per_second"], ref["tokens_per_second"]),
        "wall_speedup": ratio(ref["seconds"], opt["seconds"]),
        "peak_rss_ratio": ratio(opt["peak_rss_mb"], ref["peak_rss_mb"]),
        "runs": {"reference_seconds": [r["seconds"] for r in refs],
                 "optimized_seconds": [r["seconds"] for r in opts],
                 "wall_speedups": [ratio(r["seconds"], o["seconds"])
                                   for r, o in zip(refs, opts, strict=True)]},
    }


def add_flop_rates(ref: dict, opt: dict, peak_gflops: float) -> None:
    """Each run's counted and useful FLOP rates, and their shares of the matmul peak.

    Counted: the FLOPs the run itself executed (the reference's include its activation
    recomputation and full-vocabulary logits). Useful: the FLOPs oppu's loop needs for the
    same tokens, over each run's own wall time, so the two rates compare like tokens/s.
    """
    from oppu.simulations.bench_flops import flop_rates

    useful = opt.get("flops")
    for run in (ref, opt):
        if run.get("flops") is None or useful is None:
            continue
        counted = flop_rates(run["flops"], run["seconds"], peak_gflops)
        wanted = flop_rates(useful, run["seconds"], peak_gflops)
        run.update(gflop=run["flops"] / 1e9,
                   counted_gflops_per_second=counted["gflops_per_second"],
                   counted_peak_fraction=counted["peak_fraction"],
                   useful_gflops_per_second=wanted["gflops_per_second"],
                   useful_peak_fraction=wanted["peak_fraction"])


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
    row("GFLOP executed (torch's counter)", "gflop", ".0f", True)
    row("GFLOPS executed", "counted_gflops_per_second", ".1f")
    row("GFLOPS useful (oppu's FLOPs / wall)", "useful_gflops_per_second", ".1f", True)
    row("useful share of matmul peak", "useful_peak_fraction", ".1%")
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
    peak = result.get("matmul_peak")
    if peak:
        print(f"matmul peak: {peak['gflops']:.1f} GFLOPS ({peak['dtype']}, {peak['threads']} "
              f"thread(s), torch.mm {peak['shape'][0]}x{peak['shape'][1]} @ "
              f"{peak['shape'][1]}x{peak['shape'][2]}, best of all runs)")
