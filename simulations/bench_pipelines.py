"""One benchmark run in this process: load the base, attach a fresh LoRA, train one way.

``optimized`` is oppu's own ``train_private_adapter``; ``reference`` is in
``bench_reference``. Either adapter can then be scored on the user's queries (``--eval``).
"""

from __future__ import annotations

import time

from oppu.simulations.bench_flops import counted_flops, matmul_peak_gflops
from oppu.simulations.bench_recipe import (
    LORA,
    MAX_GRAD_NORM,
    WARMUP_RATIO,
    WEIGHT_DECAY,
    BenchUser,
    choose_user,
    default_data,
    fingerprint,
    peak_rss_mb,
    tokenized_examples,
)
from oppu.simulations.bench_reference import train_reference


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
    with counted_flops(enabled=args.count_flops) as flops:
        report = train_private_adapter(model, tokenizer, bench.task, bench.history, settings,
                                       labels=bench.labels, description="optimized")
    seconds = time.perf_counter() - start
    return {
        "examples": report.examples,
        "fingerprint": fingerprint(tokenized),
        "tokens_per_epoch": sum(len(t.input_ids) for t in tokenized),
        "steps": report.steps,
        "flops": flops.get("total"),
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
    result["matmul_peak"] = _matmul_peak(model, args)
    if args.eval and bench.queries:
        scored = evaluate_queries(peft_model, tokenizer, bench.task, bench.queries,
                                  labels=bench.labels)
        result["eval"] = {**scored.metrics, "queries": len(bench.queries)}
    detach_adapter(peft_model)
    result.update(pipeline=which, threads=torch.get_num_threads(), device=plan.device,
                  user=bench.name, task=bench.task.name, items=len(bench.history))
    return result


def _matmul_peak(model, args) -> dict:
    """This CPU's (or GPU's) matmul peak on the model's shapes, in oppu's training dtype."""
    from oppu.shared.llm.training import autocast_enabled

    device_type = next(model.parameters()).device.type
    dtype = ("bfloat16" if autocast_enabled(args.optimized_bf16, device_type)
             else str(next(model.parameters()).dtype).removeprefix("torch."))
    config = model.config
    return matmul_peak_gflops(config.hidden_size, config.intermediate_size, dtype=dtype,
                              device=device_type)
