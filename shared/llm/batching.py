"""Tokenized training examples and length-grouped, left-padded batches.

Shared by the coordinator's task adaptation and the client's private training. Left padding
puts every answer at the end of its row, so the loss needs logits for the last few positions
only (``logits_to_keep``) instead of the whole sequence times a 50k vocabulary.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from oppu.shared.llm.chat import encode_answer, encode_prompt
from oppu.shared.tasks import Example

IGNORE = -100


@dataclass(frozen=True)
class Tokenized:
    """One example as ids; ``labels`` is IGNORE on prompt tokens (loss on the answer only)."""

    input_ids: list[int]
    labels: list[int]
    truncated: bool = False

    @property
    def answer_length(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE)


def tokenize_example(tokenizer, example: Example, max_length: int) -> Tokenized:
    """Chat-format a supervised example (or plain text for unsupervised) and mask the prompt."""
    if example.unsupervised:
        ids = encode_answer(tokenizer, example.target)
        truncated = len(ids) > max_length
        ids = ids[:max_length]
        return Tokenized(ids, list(ids), truncated)
    answer = encode_answer(tokenizer, example.target)[: max_length // 2]
    prompt = encode_prompt(tokenizer, example.prompt)
    room = max_length - len(answer)
    truncated = len(prompt) > room
    if truncated:  # keep the end of the prompt: the query and the chat header sit there
        prompt = prompt[-room:]
    return Tokenized(prompt + answer, [IGNORE] * len(prompt) + answer, truncated)


def length_grouped_batches(
    items: Sequence[Tokenized], batch_size: int, *, seed: int
) -> Iterator[list[Tokenized]]:
    """Batches of similar length (little padding), in a shuffled order each call."""
    order = sorted(range(len(items)), key=lambda i: len(items[i].input_ids))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    random.Random(seed).shuffle(batches)
    for batch in batches:
        yield [items[i] for i in batch]


def collate_left_padded(batch: Sequence[Tokenized], pad_id: int):
    """Left-pad a batch; returns input_ids, attention_mask, position_ids, labels tensors."""
    import torch

    width = max(len(t.input_ids) for t in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, item in enumerate(batch):
        n = len(item.input_ids)
        ids[row, width - n :] = torch.tensor(item.input_ids)
        labels[row, width - n :] = torch.tensor(item.labels)
        mask[row, width - n :] = 1
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return ids, mask, positions, labels


MIN_SHARED_PREFIX = 16
"""Shorter common prefixes are not worth a separate forward pass."""


def shared_prompt_prefix(batch: Sequence[Tokenized]) -> int:
    """Length of the prompt prefix every example of the batch shares token for token.

    Task prompts repeat the same instruction (LaMP-2N's 25-category list, the chat header):
    computing that prefix once per batch instead of once per example is most of the saving
    of the shared-prefix path. At least one prompt token is left to each example so every
    answer token is predicted from the per-example part.
    """
    limit = min(
        next((i for i, t in enumerate(item.labels) if t != IGNORE), len(item.labels))
        for item in batch
    ) - 1
    return common_prefix_length([item.input_ids for item in batch], limit)


def common_prefix_length(sequences: Sequence[Sequence[int]], limit: int) -> int:
    """How many leading tokens all ``sequences`` share, at most ``limit`` (0 if negative)."""
    first, n = sequences[0], 0
    while n < limit and all(seq[n] == first[n] for seq in sequences):
        n += 1
    return n


def collate_after_prefix(batch: Sequence[Tokenized], prefix: int, pad_id: int):
    """Left-padded suffixes (the tokens after a shared prefix of length ``prefix``).

    Returns suffix input_ids, an attention mask spanning prefix + suffix, suffix position ids
    (continuing after the prefix) and suffix labels.
    """
    import torch

    suffixes = [Tokenized(t.input_ids[prefix:], t.labels[prefix:]) for t in batch]
    ids, mask, positions, labels = collate_left_padded(suffixes, pad_id)
    full_mask = torch.cat([torch.ones((len(batch), prefix), dtype=mask.dtype), mask], dim=1)
    return ids, full_mask, positions + prefix, labels
