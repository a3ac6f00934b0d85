"""Tokenized training examples and length-grouped, left-padded batches.

Shared by the coordinator's task adaptation and the client's private training. Left padding
puts every answer at the end of its row, so the loss needs logits for the last few positions
only (``logits_to_keep``) instead of the whole sequence times a 50k vocabulary.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from oppu.shared.chat import encode_answer, encode_prompt
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
