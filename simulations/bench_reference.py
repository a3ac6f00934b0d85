"""The benchmark's reference pipeline: one user's LoRA trained as the public OPPU code does.

HF ``transformers.Trainer`` with OPPU.py's settings (see ``bench_personalize``), counting the
tokens each batch computes a loss on, so its throughput compares with oppu's loop.
"""

from __future__ import annotations

import random
import tempfile
import time

from oppu.simulations.bench_recipe import (
    MAX_GRAD_NORM,
    PAD_TO_MULTIPLE_OF,
    WARMUP_RATIO,
    WEIGHT_DECAY,
    BenchUser,
    fingerprint,
    loss_summary,
    peak_rss_mb,
    tokenized_examples,
)


def train_reference(model, tokenizer, bench: BenchUser, args, *, use_cpu: bool) -> dict:
    """OPPU.py's per-user training with HF Trainer; ``model`` carries a fresh LoRA."""
    from tqdm.auto import tqdm
    from transformers import (
        DataCollatorForSeq2Seq,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )
    from transformers.trainer_callback import PrinterCallback

    from oppu.simulations.bench_flops import counted_flops

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
        """Keeps every step's loss and shows progress (Trainer's own bar is off)."""

        def __init__(self) -> None:
            self.losses: list[float] = []
            self.bar = None

        def on_train_begin(self, _args, state, _control, **_kwargs):
            self.bar = tqdm(total=state.max_steps, desc="reference", unit="step", leave=False)

        def on_step_end(self, _args, _state, _control, **_kwargs):
            self.bar.update(1)

        def on_log(self, _args, _state, _control, logs=None, **_kwargs):
            if logs and "loss" in logs:
                self.losses.append(float(logs["loss"]))
                self.bar.set_postfix(loss=f"{self.losses[-1]:.3f}")

        def on_train_end(self, _args, _state, _control, **_kwargs):
            self.bar.close()

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
        with counted_flops(enabled=args.count_flops) as flops:
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
        "flops": flops.get("total"),
        "tokens": trainer.tokens,
        "padding_share": 1 - trainer.tokens / trainer.cells if trainer.cells else 0.0,
        "seconds": seconds,
        "loop_seconds": float(output.metrics.get("train_runtime", seconds)),
        **loss_summary(log.losses),
        "peak_rss_before_train_mb": peak_before,
        "settings": {
            "trainer": "transformers.Trainer", "batch_size": args.reference_batch_size,
            "bf16": args.reference_bf16, "optim": "adamw_torch",
            "activation_checkpointing": True, "sampling": "group_by_length",
            "pad_to_multiple_of": PAD_TO_MULTIPLE_OF, "padding_side": "left",
        },
    }
