"""The GPU path, proven: one command measures oppu on a CUDA machine and writes JSON.

    python -m oppu.simulations.gpu_check                   # one CUDA GPU, ~8 minutes at most
    python -m oppu.simulations.gpu_check --allow-cpu       # the same phases, tiny, on CPU

Three phases, each announced on stderr with its time:

1. training: one ~100-item user's private LoRA trained by oppu's own loop
   (``train_private_adapter``) on the GPU in the device plan's precision (bf16 weights and bf16
   autocast): tokens/s, steps, wall seconds, peak GPU memory. Its first step's loss is compared
   with the same first step on CPU in fp32: same user, seed, adapter init and batch (LoRA's B
   starts at zero, so that loss is the base's own on the batch: the difference is precision).
2. label scoring: the project's closed-label scoring (``label_scores``; LaMP_2N offers 25
   labels) on ~20 queries with the user's adapter on, scored together as an evaluation
   does, after a warm-up.
3. simulation: ``run_simulation`` of 20 test users, ``--num-gpus`` of the GPU per virtual client
   so several share it (``base-k0,oppu-k0``, short histories, one quickly adapted plain base):
   users per hour of the round.

The result is a ``GPU_CHECK_JSON {...}`` line on stdout and the same JSON in ``--out`` (also
rewritten after each phase, ``complete`` false until the end). Exit 0 when the first-step
losses agree and the simulation ran, 1 otherwise, 2 without CUDA (unless ``--allow-cpu``) or
on bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import NoReturn

from oppu.shared.cli_support import EXIT_USAGE, console

JSON_PREFIX = "GPU_CHECK_JSON "
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "huffpost_lamp2n"
"""``../shared/data/huffpost_lamp2n`` beside the repository (the HuffPost LaMP-2N-like data)."""
SIM_SUITE = ("base-k0", "oppu-k0")
PHASES = 3


@dataclass(frozen=True)
class CheckSizes:
    """How big each phase is: on CUDA sized for ~8 minutes in all, on CPU for a smoke run."""

    items: int
    queries: int
    users: int
    max_history: int
    adapt_examples: int
    max_length: int
    epochs: int | None  # None: the task's default
    num_cpus: int
    num_gpus: float


CUDA_SIZES = CheckSizes(items=100, queries=20, users=20, max_history=32, adapt_examples=256,
                        max_length=512, epochs=None, num_cpus=2, num_gpus=0.125)
CPU_SIZES = CheckSizes(items=8, queries=3, users=2, max_history=4, adapt_examples=8,
                       max_length=128, epochs=1, num_cpus=1, num_gpus=0.0)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m oppu.simulations.gpu_check",
        description="Measure oppu's GPU path: one user trained in bf16 (first step checked "
        "against CPU fp32), label scoring, and a simulation sharing the GPU; writes JSON.")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA,
                   help="LaMP directory with a closed label set (default: "
                   "../shared/data/huffpost_lamp2n beside the repository).")
    p.add_argument("--out", type=Path, default=Path("runs/gpu_check.json"),
                   help="Where to write the JSON result.")
    p.add_argument("--work", type=Path, default=Path("runs/gpu_check_work"),
                   help="The simulation's directory (its adapted base is cached there; its "
                   "users are cleared at each run so every user trains).")
    p.add_argument("--allow-cpu", action="store_true",
                   help="Without CUDA, run every phase on CPU at tiny sizes (a smoke test).")
    p.add_argument("--base-model", default=None, help="Base model (default: the embedded one).")
    p.add_argument("--loss-tolerance", type=float, default=0.05,
                   help="Largest relative difference of the first step's loss, device vs "
                   "CPU fp32, that passes (bf16 keeps ~3 significant digits).")
    p.add_argument("--seed", type=int, default=0, help="Adapter init and batch-order seed.")
    p.add_argument("--sim-timeout", type=float, default=600.0,
                   help="Seconds the simulated clients may take to train and answer.")
    for name, kind, text in (
            ("items", int, "history items of the trained user"),
            ("queries", int, "queries timed in label scoring"),
            ("users", int, "simulated users"),
            ("max-history", int, "newest history items each simulated user trains on"),
            ("adapt-examples", int, "base-user examples the simulation's base adapts on"),
            ("max-length", int, "tokens per training example, at most"),
            ("epochs", int, "epochs of the private adapters"),
            ("num-cpus", int, "CPUs per virtual client (Ray)"),
            ("num-gpus", float, "GPU share per virtual client (Ray; 0.125: 8 share one)")):
        p.add_argument(f"--{name}", type=kind, default=None,
                       help=f"{text[0].upper()}{text[1:]} (default: {_default_text(name)}).")
    args = p.parse_args(argv)
    for name in ("items", "queries", "users", "max_history", "adapt_examples", "epochs",
                 "num_cpus"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1 (got {value}).")
    if args.max_length is not None and args.max_length < 16:
        p.error(f"--max-length must be >= 16 (got {args.max_length}).")
    if args.num_gpus is not None and not 0 <= args.num_gpus <= 1:
        p.error(f"--num-gpus must be in [0, 1] (got {args.num_gpus}).")
    if args.loss_tolerance <= 0:
        p.error(f"--loss-tolerance must be > 0 (got {args.loss_tolerance}).")
    return args


def _default_text(option: str) -> str:
    cuda, cpu = (getattr(preset, option.replace("-", "_")) for preset in (CUDA_SIZES, CPU_SIZES))
    shown = "the task's" if cuda is None else cuda
    return f"{shown} on CUDA, {cpu} with --allow-cpu"


def sizes_for(args: argparse.Namespace, cuda: bool) -> CheckSizes:
    """The device's preset with every size given on the command line put in."""
    preset = CUDA_SIZES if cuda else CPU_SIZES
    given = {name: value for name in asdict(preset)
             if (value := getattr(args, name)) is not None}
    sizes = replace(preset, **given)
    if not cuda and sizes.num_gpus > 0:
        raise ValueError(f"--num-gpus {sizes.num_gpus} without a CUDA GPU: Ray would wait "
                         "forever for one; leave it at 0 with --allow-cpu.")
    return sizes


@contextmanager
def announced(number: int, title: str, timings: dict[str, float], key: str) -> Iterator[None]:
    """Say a phase starts, then how long it took (kept in ``timings[key]``)."""
    console.print(f"phase {number}/{PHASES}: {title}...", markup=False, highlight=False)
    start = time.perf_counter()
    yield
    timings[key] = round(time.perf_counter() - start, 2)
    console.print(f"phase {number}/{PHASES}: {title}: done in {timings[key]:.1f} s",
                  markup=False, highlight=False)


# ---- phase 1: one user trained on the device, its first step checked on CPU fp32 -------------


def personal_settings(sizes: CheckSizes, seed: int, **train_overrides):
    """The product's private-adapter recipe (``DEFAULT_RECIPE``) at the check's sizes."""
    from oppu.shared.personal.recipe import DEFAULT_RECIPE

    train = replace(DEFAULT_RECIPE.train, epochs=sizes.epochs, max_length=sizes.max_length,
                    seed=seed, **train_overrides)
    return replace(DEFAULT_RECIPE, train=train)


def train_on_device(bench, sizes: CheckSizes, *, device: str, seed: int = 0,
                    base_model: str | None = None):
    """Train the user's fresh LoRA on ``device``; returns (measurements, model, tokenizer)."""
    import torch

    from oppu.shared.llm.model import load_base_model
    from oppu.shared.llm.training import autocast_enabled
    from oppu.shared.personal.private_adapter import attach_fresh_adapter, train_private_adapter

    model, tokenizer, plan = load_base_model(base_model, device=device)
    settings = personal_settings(sizes, seed)
    peft_model = attach_fresh_adapter(model, settings.peft, seed=seed)
    cuda = plan.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    resident = torch.cuda.memory_allocated() / 2**20 if cuda else None
    start = time.perf_counter()
    report = train_private_adapter(peft_model, tokenizer, bench.task, bench.history, settings,
                                   labels=bench.labels, description="training (device)")
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    measured = {
        "user": bench.name, "items": len(bench.history), "examples": report.examples,
        "epochs": settings.train.epochs or bench.task.epochs, "steps": report.steps,
        "tokens": report.tokens, "wall_seconds": round(seconds, 3),
        "loop_seconds": round(report.seconds, 3),
        "tokens_per_second": round(report.tokens / seconds, 1),
        "first_loss": report.first_loss, "final_loss": report.final_loss,
        "dtype": plan.dtype, "autocast_bf16": autocast_enabled(settings.train.bf16, "cuda"
                                                               if cuda else "cpu"),
        "model_gpu_memory_mb": round(resident, 1) if cuda else None,
        "peak_gpu_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)
        if cuda else None,
    }
    return measured, peft_model, tokenizer


def cpu_fp32_first_loss(bench, sizes: CheckSizes, *, seed: int = 0,
                        base_model: str | None = None) -> float:
    """The same first step (user, seed, adapter init, batch) on CPU in fp32, no autocast."""
    from oppu.shared.llm.model import load_base_model
    from oppu.shared.personal.private_adapter import (
        attach_fresh_adapter,
        detach_adapter,
        train_private_adapter,
    )

    model, tokenizer, _plan = load_base_model(base_model, device="cpu")
    settings = personal_settings(sizes, seed, max_steps=1, bf16="off")
    peft_model = attach_fresh_adapter(model, settings.peft, seed=seed)
    report = train_private_adapter(peft_model, tokenizer, bench.task, bench.history, settings,
                                   labels=bench.labels, show_progress=False)
    detach_adapter(peft_model)
    return report.first_loss


def compare_first_step(device_loss: float, cpu_loss: float, tolerance: float) -> dict:
    """Both first-step losses, their relative difference, and whether it is within tolerance."""
    difference = abs(device_loss - cpu_loss) / max(abs(cpu_loss), 1e-12)
    return {"device_loss": device_loss, "cpu_fp32_loss": cpu_loss,
            "relative_difference": difference, "tolerance": tolerance,
            "passed": bool(difference <= tolerance)}


# ---- phase 2: label scoring -------------------------------------------------------------------


def time_label_scoring(model, tokenizer, dataset, count: int) -> dict:
    """Seconds per query of ``label_scores`` over ``count`` queries scored together, as an
    evaluation scores them, after one warm-up."""
    from oppu.shared.errors import OppuError
    from oppu.shared.personal.evaluation import EvalQuery, has_labels
    from oppu.simulations.bench_label_scoring import time_scored_together

    task = dataset.spec
    if not has_labels(task):
        raise OppuError(f"{task.name} answers in free text; label scoring needs a task with a "
                        "closed label set (e.g. LaMP_2N): pass such a directory with --data.")
    queries = [EvalQuery(q.input, q.gold or "") for q in dataset.queries[:count]]
    per_query, scored = time_scored_together(model, tokenizer, task, queries)
    return {"task": task.name, "queries": len(queries),
            "labels_per_query_max": max(len(offered) for offered, _ in scored),
            "seconds_total": round(per_query * len(queries), 4),
            "seconds_per_query": round(per_query, 4)}


# ---- phase 3: a simulation sharing the device ------------------------------------------------


def simulate_users(data: Path, work: Path, sizes: CheckSizes, *, seed: int = 0,
                   base_model: str | None = None, timeout: float = 600.0) -> dict:
    """``run_simulation`` of ``sizes.users`` users, each virtual client ``num_gpus`` of a GPU."""
    from oppu.coordinator.adapt import AdaptSettings
    from oppu.shared.llm.training import TrainSettings
    from oppu.simulations.simulate import SimulationSettings, run_simulation

    out = work / "simulation"
    shutil.rmtree(out / "users", ignore_errors=True)  # no resumed users: every one trains now
    adapt = AdaptSettings(  # a quick plain base: no held-out check, no recipe choice
        max_examples=sizes.adapt_examples, check_share=0.0, recipe_users=0,
        train=TrainSettings(lr=5e-4, epochs=1, batch_size=8, max_length=sizes.max_length,
                            seed=seed))
    settings = SimulationSettings(
        users=sizes.users, suite=SIM_SUITE, max_history=sizes.max_history, adapt=adapt,
        personal=personal_settings(sizes, seed), recipe_from_base=False, one_base=True,
        base_model=base_model, num_cpus=sizes.num_cpus, num_gpus=sizes.num_gpus,
        timeout=timeout)
    table = run_simulation(data, out, settings, plots=False)
    cost = table["cost"]
    round_seconds = float(cost["round_seconds"])
    return {
        "users": table["users"], "suite": list(SIM_SUITE), "max_history": sizes.max_history,
        "num_cpus": sizes.num_cpus, "num_gpus": sizes.num_gpus,
        "clients_at_once_max": clients_at_once(sizes),
        "workers": cost["workers_this_run"], "aggregation": table["aggregation"],
        "round_seconds": round_seconds, "seconds_total": table["seconds_total"],
        "users_per_hour": round(3600 * table["users"] / round_seconds, 1)
        if round_seconds else None,
        "users_per_hour_per_worker": cost["users_per_hour_per_worker"],
        "user_seconds_median": cost["user_seconds_median"],
        "accuracy": {name: table["variants"][name].get("accuracy") for name in SIM_SUITE
                     if name in table["variants"]},
    }


def clients_at_once(sizes: CheckSizes) -> int:
    """How many virtual clients Ray can run together on this machine's CPUs and GPUs."""
    slots = (os.cpu_count() or 1) // sizes.num_cpus
    if sizes.num_gpus > 0:
        import torch

        slots = min(slots, int(torch.cuda.device_count() / sizes.num_gpus + 1e-9))
    return max(slots, 1)


# ---- the command -----------------------------------------------------------------------------


def device_info(device: str) -> dict:
    import platform

    import torch

    info = {"device": device, "torch": torch.__version__, "cuda_runtime": torch.version.cuda,
            "cpu_count": os.cpu_count()}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(name=props.name, gpu_count=torch.cuda.device_count(),
                    gpu_memory_gb=round(props.total_memory / 2**30, 1),
                    bf16_supported=torch.cuda.is_bf16_supported())
    else:
        info["name"] = platform.processor() or platform.machine()
    return info


def main(argv: Sequence[str] | None = None) -> dict:
    """Check the input, then run the phases; exit 2 without CUDA unless ``--allow-cpu``."""
    import torch

    args = parse_args(argv)
    cuda = torch.cuda.is_available()
    if not cuda and not args.allow_cpu:
        _refuse(f"no CUDA GPU: torch {torch.__version__} (CUDA runtime "
                f"{torch.version.cuda or 'none'}) sees none. Run this on a CUDA machine, or "
                "pass --allow-cpu for a tiny CPU smoke run of the same phases.")
    try:
        sizes = sizes_for(args, cuda)
    except ValueError as exc:
        _refuse(str(exc))
    data = args.data.expanduser().resolve()
    if not data.is_dir():
        _refuse(f"no LaMP directory at {data}; pass one with --data.")
    return run_check(args, sizes, data, "cuda" if cuda else "cpu")


def _refuse(message: str) -> NoReturn:
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise SystemExit(EXIT_USAGE)


def run_check(args: argparse.Namespace, sizes: CheckSizes, data: Path, device: str) -> dict:
    """The three phases in order. The file at ``--out`` is rewritten after each (``complete``
    false until the end), so a run cut short by a device's time limit keeps what it measured;
    a failed simulation is reported in its section (and fails the check) for the same reason."""
    import torch

    from oppu.shared.atomic import write_text_atomic
    from oppu.shared.cli_support import quiet_libraries, stop_cleanly_on_sigterm
    from oppu.shared.data import load_lamp
    from oppu.shared.personal.private_adapter import detach_adapter
    from oppu.shared.resources import release_memory
    from oppu.simulations.bench_output import publish_result
    from oppu.simulations.bench_recipe import choose_user

    quiet_libraries()
    stop_cleanly_on_sigterm()
    started = time.perf_counter()
    timings: dict[str, float] = {}
    result: dict = {"device": device_info(device), "sizes": asdict(sizes), "data": str(data),
                    "phase_seconds": timings, "complete": False}

    def save_so_far() -> None:
        write_text_atomic(args.out, json.dumps(result, indent=2, sort_keys=True))

    console.print(f"GPU check on {device} ({'full' if device == 'cuda' else 'tiny CPU'} sizes: "
                  f"{asdict(sizes)}), data {data}", markup=False, highlight=False)
    with announced(1, f"training one {sizes.items}-item user on {device}", timings, "training"):
        bench = choose_user(data, sizes.items)
        training, model, tokenizer = train_on_device(bench, sizes, device=device, seed=args.seed,
                                                     base_model=args.base_model)
        cpu_loss = cpu_fp32_first_loss(bench, sizes, seed=args.seed, base_model=args.base_model)
        result.update(training=training, first_step=compare_first_step(
            training["first_loss"], cpu_loss, args.loss_tolerance))
    console.print(f"  {training['tokens_per_second']:.0f} tokens/s; first-step loss "
                  f"{training['first_loss']:.4f} vs CPU fp32 {cpu_loss:.4f} "
                  f"({'pass' if result['first_step']['passed'] else 'FAIL'})", markup=False)
    save_so_far()
    with announced(2, f"label scoring {sizes.queries} queries", timings, "label_scoring"):
        result["label_scoring"] = time_label_scoring(model, tokenizer, load_lamp(data),
                                                     sizes.queries)
    save_so_far()
    detach_adapter(model)
    del model, tokenizer
    release_memory()
    if device == "cuda":
        torch.cuda.empty_cache()  # the simulation's clients need the room
    with announced(3, f"simulating {sizes.users} users", timings, "simulation"):
        try:
            result["simulation"] = simulate_users(
                data, args.work.expanduser().resolve(), sizes, seed=args.seed,
                base_model=args.base_model, timeout=args.sim_timeout)
        except Exception as exc:  # keep phases 1-2's numbers; the check fails below
            result["simulation"] = {"error": f"{type(exc).__name__}: {exc}"}
            console.print(f"[bold red]simulation failed:[/] {exc}", highlight=False)
    result.update(seconds_total=round(time.perf_counter() - started, 1), complete=True,
                  passed=result["first_step"]["passed"] and "error" not in result["simulation"])
    publish_result(result, args.out, JSON_PREFIX)
    return result


if __name__ == "__main__":
    raise SystemExit(0 if main()["passed"] else 1)
