"""One lean training loop for every PEFT module oppu trains (task adaptation and private).

Same recipe as the OPPU reference (AdamW, linear warm-up/decay, grad clipping, loss on answer
tokens only) with less waste: length-grouped batches, left padding with logits only at answer
positions, a prompt prefix shared by a batch computed once, dropout that draws only the dropped
positions, key/value heads shared rather than copied in attention, bf16 autocast where the
hardware runs it fast, and batches of long sequences run in chunks so memory stays bounded.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

from oppu.shared.llm.batching import (
    IGNORE,
    MIN_SHARED_PREFIX,
    Tokenized,
    collate_after_prefix,
    collate_left_padded,
    length_grouped_batches,
    shared_prompt_prefix,
)
from oppu.shared.llm.gqa_attention import gqa_sdpa
from oppu.shared.llm.inference import is_prompt_learning

MAX_POSITIONS = 1024
"""Token positions one forward pass may keep for backward: ~1.6 GB of activations for the
embedded model in fp32, so a client stays under ~3 GB; every k=0 LaMP batch fits."""


@dataclass(frozen=True)
class TrainSettings:
    """Optimizer and schedule; defaults are the OPPU reference's per-user recipe."""

    lr: float = field(default=1e-4, metadata={"help": "AdamW learning rate."})
    epochs: int | None = field(default=None, metadata={"help": "None: the task's default."})
    batch_size: int = field(default=8, metadata={"help": "Examples per optimizer step."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    warmup_ratio: float = field(default=0.1, metadata={"help": "Share of steps warming up."})
    grad_clip: float = field(default=0.3, metadata={"help": "Max gradient norm."})
    max_length: int = field(default=512, metadata={"help": "Tokens per example, at most."})
    max_steps: int | None = field(default=None, metadata={"help": "Cap on optimizer steps."})
    seed: int = field(default=0, metadata={"help": "Seed for init and batch order."})
    bf16: str = field(default="auto", metadata={"help": "bf16 autocast: auto, on or off."})
    share_prefix: bool = field(
        default=True, metadata={"help": "Compute the prompt prefix a batch shares only once."}
    )

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0 (got {self.lr}).")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"epochs must be >= 1 (got {self.epochs}).")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 (got {self.batch_size}).")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1) (got {self.warmup_ratio}).")
        if self.max_length < 16:
            raise ValueError(f"max_length must be >= 16 (got {self.max_length}).")
        if self.bf16 not in ("auto", "on", "off"):
            raise ValueError(f"bf16 must be auto, on or off (got {self.bf16!r}).")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainReport:
    """What a training run did, for logs, benchmarks and the user's own summary."""

    examples: int
    steps: int
    tokens: int
    seconds: float
    first_loss: float
    final_loss: float
    truncated: int

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def autocast_enabled(setting: str, device_type: str) -> bool:
    """bf16 autocast on CUDA, and on CPUs with native bf16 (AMX/AVX512-bf16)."""
    import torch

    if setting != "auto":
        return setting == "on"
    if device_type == "cuda":
        return torch.cuda.is_bf16_supported()
    # Only native bf16 pays off: on an AVX512 CPU without it, autocast ran 2.6x slower here.
    native = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in native)


@contextmanager
def frozen_weights_in_bf16(model, enabled: bool) -> Iterator[None]:
    """Hold the frozen linear weights in bf16 while training under CPU autocast.

    Autocast keeps its casts only of weights that train, so it cast every frozen fp32 weight
    again at each use: 7 LaMP-2N steps of 16 took 12.5 s with those casts and 8.9 s without on
    an AMX Xeon. The bf16 copies (~270 MB for the 135M model) are exactly autocast's casts, so
    training computes the same numbers; the fp32 weights come back on exit (evaluation, an
    epoch's validation, runs in fp32).
    """
    import torch

    swapped = []
    if enabled:
        for module in model.modules():
            weight = getattr(module, "weight", None)
            if (isinstance(module, torch.nn.Linear) and not weight.requires_grad
                    and weight.dtype == torch.float32):
                module._parameters["weight"] = torch.nn.Parameter(
                    weight.detach().to(torch.bfloat16), requires_grad=False)
                swapped.append((module, weight))
    try:
        yield
    finally:
        for module, weight in swapped:
            module._parameters["weight"] = weight


@contextmanager
def contiguous_head_input(model) -> Iterator[None]:
    """Hand the output head a contiguous input while training.

    Causal LMs slice the last positions (``logits_to_keep``) before the head. A sliced 3-D
    input that requires grad is not folded into one matrix multiply: torch runs a batched
    multiply against the vocabulary matrix expanded per row, 4x slower here (156 vs 40 ms a
    step for 8 rows x 7 positions x 49k vocabulary), about 7% of a LaMP-2N training step.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        yield
        return
    handle = head.register_forward_pre_hook(
        lambda _module, args: (args[0].contiguous(), *args[1:]) if args else None
    )
    try:
        yield
    finally:
        handle.remove()


def answer_loss(model, ids, mask, positions, labels, cache=None):
    """Mean cross-entropy over answer tokens, computing logits only where answers are.

    Rows are left-padded, so answers end every row and only the last few positions need the
    vocabulary projection (``logits_to_keep``).
    """
    import torch.nn.functional as F

    keep = _answer_window(labels)
    if is_prompt_learning(model):
        positions = None  # peft prepends virtual tokens and ignores position ids (RoPE is
        # relative, so left padding shifts no attention score between real tokens)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep,
                cache=cache, use_cache=cache is not None)
    logits = out.logits[:, -keep:-1, :].float()
    target = labels[:, ids.shape[1] - keep + 1 :]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                           ignore_index=IGNORE)


def _answer_window(labels) -> int:
    """Positions at the end of left-padded rows whose logits the loss needs (answers + 1)."""
    answer_width = int((labels != IGNORE).sum(dim=1).max())
    return min(answer_width + 1, labels.shape[1])


def answer_targets(batch: Sequence[Tokenized]) -> int:
    """How many tokens ``batch_loss`` averages its loss over, for weighting a chunk."""
    labels = collate_left_padded(batch, 0)[3]
    return int((labels[:, labels.shape[1] - _answer_window(labels) + 1 :] != IGNORE).sum())


def batch_positions(batch: Sequence[Tokenized], *, share_prefix: bool) -> int:
    """Token positions one forward pass over ``batch`` computes (padding included): what its
    activations' memory grows with. A shared prefix counts once."""
    prefix = shared_prompt_prefix(batch) if share_prefix else 0
    if prefix < MIN_SHARED_PREFIX:
        prefix = 0
    return prefix + len(batch) * (max(len(t.input_ids) for t in batch) - prefix)


def memory_chunks(batch: Sequence[Tokenized], max_positions: int, *, share_prefix: bool
                  ) -> list[Sequence[Tokenized]]:
    """``batch`` split into runs of rows whose forward passes stay within ``max_positions``.

    Activations kept for the backward pass grow with positions (about 1.6 MB each for the
    embedded model in fp32), so a batch of long sequences (retrieved items, profiles) runs as
    several forward/backward passes whose gradients add up to the whole batch's. A batch
    within the budget (every k=0 batch of the LaMP tasks) runs as one pass, exactly as before.
    """
    if batch_positions(batch, share_prefix=share_prefix) <= max_positions:
        return [batch]
    chunks: list[list[Tokenized]] = [[]]
    for row in batch:  # greedy, in the batch's order; a row alone over budget runs alone
        if chunks[-1] and batch_positions([*chunks[-1], row],
                                          share_prefix=share_prefix) > max_positions:
            chunks.append([])
        chunks[-1].append(row)
    return chunks


def batch_backward(model, batch: Sequence[Tokenized], pad_id: int, device, *,
                   share_prefix: bool, max_positions: int, use_bf16: bool) -> tuple[float, int]:
    """Forward and backward of one batch, in memory-bounded chunks; gradients accumulate.

    Each chunk's mean loss is weighted by its share of the batch's answer tokens, so the
    gradients are the whole batch's (up to float rounding). Returns the batch's mean loss
    and its non-pad token count.
    """
    import torch

    chunks = memory_chunks(batch, max_positions,  # prompt tuning never shares a prefix
                           share_prefix=share_prefix and not is_prompt_learning(model))
    targets = [answer_targets(c) for c in chunks] if len(chunks) > 1 else [1]
    total_loss, tokens = 0.0, 0
    for chunk, weight in zip(chunks, targets, strict=True):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            loss, chunk_tokens = batch_loss(model, chunk, pad_id, device,
                                            share_prefix=share_prefix)
        share = weight / sum(targets)
        (loss * share).backward()
        total_loss += float(loss.detach()) * share
        tokens += chunk_tokens
    return total_loss, tokens


def batch_loss(model, batch: Sequence[Tokenized], pad_id: int, device, *, share_prefix: bool):
    """Loss of one batch; the prompt prefix all examples share is computed once.

    Same attention, same result as the plain path (up to float rounding): the prefix's keys
    and values are computed once, repeated for every row, and gradients flow through them.
    """
    prefix = shared_prompt_prefix(batch) if share_prefix else 0
    if prefix < MIN_SHARED_PREFIX or is_prompt_learning(model):
        tensors = collate_left_padded(batch, pad_id)
        return answer_loss(model, *(t.to(device) for t in tensors)), int(tensors[1].sum())
    import torch

    head = torch.tensor([batch[0].input_ids[:prefix]], device=device)
    # The decoder alone: the prefix needs no logits, and its one vocabulary projection (the
    # head's weight cast to bf16 and copied for a batched multiply) cost ~8% of a step here.
    cache = model.get_decoder()(input_ids=head, use_cache=True).cache
    cache.batch_repeat_interleave(len(batch))
    ids, mask, positions, labels = (
        t.to(device) for t in collate_after_prefix(batch, prefix, pad_id)
    )
    loss = answer_loss(model, ids, mask, positions, labels, cache=cache)
    return loss, int(mask.sum())


def train_loop(
    model,
    examples: Sequence[Tokenized],
    settings: TrainSettings,
    *,
    epochs: int,
    pad_id: int,
    description: str = "training",
    show_progress: bool = True,
    on_epoch_end: Callable[[int], bool] | None = None,
    max_positions: int = MAX_POSITIONS,
) -> TrainReport:
    """Train the model's trainable parameters in place on tokenized examples.

    ``max_positions`` bounds the activations one forward pass keeps (``memory_chunks``); it
    is a memory setting, not part of the recipe: results differ only by float rounding.

    ``on_epoch_end(epochs_done)`` runs after each epoch with the number of epochs trained so
    far (1 after the first; the model in eval mode); returning True stops training there
    (early stopping on a validation split).
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    from oppu.shared.llm.sparse_dropout import sparse_dropout  # imports torch: keep it lazy

    if not examples:
        raise ValueError("Nothing to train on: the example list is empty.")
    torch.manual_seed(settings.seed)
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    steps_per_epoch = math.ceil(len(examples) / settings.batch_size)
    total = epochs * steps_per_epoch
    if settings.max_steps is not None:
        total = min(total, settings.max_steps)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(settings.warmup_ratio * total), max(total, 1)
    )
    use_bf16 = autocast_enabled(settings.bf16, device.type)
    model.train()
    tokens, step, losses = 0, 0, []
    start = time.perf_counter()
    bar = tqdm(total=total, desc=description, unit="step", disable=not show_progress, leave=False)
    with contiguous_head_input(model), sparse_dropout(model), gqa_sdpa(model):
        try:
            for epoch in range(epochs):
                with frozen_weights_in_bf16(model, use_bf16 and device.type == "cpu"):
                    for batch in length_grouped_batches(examples, settings.batch_size,
                                                        seed=settings.seed + epoch):
                        if step >= total:
                            break
                        loss, batch_tokens = batch_backward(
                            model, batch, pad_id, device, share_prefix=settings.share_prefix,
                            max_positions=max_positions, use_bf16=use_bf16)
                        torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
                        optimizer.step()
                        scheduler.step()
                        optimizer.zero_grad(set_to_none=True)
                        tokens += batch_tokens
                        losses.append(loss)
                        step += 1
                        bar.update(1)
                        bar.set_postfix(loss=f"{losses[-1]:.3f}")
                if on_epoch_end is not None:
                    model.eval()
                    stop = on_epoch_end(epoch + 1)
                    model.train()
                    if stop or step >= total:
                        break
        finally:
            bar.close()
            model.eval()
    return TrainReport(
        examples=len(examples),
        steps=step,
        tokens=tokens,
        seconds=time.perf_counter() - start,
        first_loss=losses[0] if losses else float("nan"),
        final_loss=sum(losses[-3:]) / len(losses[-3:]) if losses else float("nan"),
        truncated=sum(1 for e in examples if e.truncated),
    )
