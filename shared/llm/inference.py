"""Answering a prompt: label scoring for closed label sets, greedy decoding otherwise.

Scoring each label's likelihood always yields a valid label and is faster than generating.
Labels are scored packed: each label follows its prompt in the same row, restarting its
positions where the prompt ends and seeing only the prompt and its own earlier tokens (a block
mask), so no KV cache is copied per label, no row is padded, and a label's final EOS is only
predicted, never fed. Queries scored together run the prompt prefix they share once (the chat
header and, at k=0, the task's instruction with its label list: 118 of LaMP-2N's ~150 prompt
tokens) and share forward passes of up to ``PACK_TOKENS`` tokens, which keeps the matrix
products large enough to run near this CPU's matmul rate.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from oppu.shared.llm.batching import MIN_SHARED_PREFIX, common_prefix_length
from oppu.shared.llm.chat import encode_answer, encode_prompt

PACK_TOKENS = 384
"""Tokens of one packed forward pass: the masked attention computes all pairs, so longer
passes waste more of it (~10% here) for little better matrix-product efficiency."""


def is_prompt_learning(model) -> bool:
    """Whether ``model`` carries a prompt-learning adapter (virtual tokens, base untouched)."""
    config = getattr(model, "active_peft_config", None)
    return bool(getattr(config, "is_prompt_learning", False))


def label_log_likelihoods(model, tokenizer, prompt: str, labels: Sequence[str]) -> list[float]:
    """Summed log-probability of each label (its tokens then EOS) after the prompt."""
    return next(iter_label_scores(model, tokenizer, [(prompt, labels)]))


def iter_label_scores(model, tokenizer, queries: Sequence[tuple[str, Sequence[str]]]
                      ) -> Iterator[list[float]]:
    """``label_log_likelihoods`` of each ``(prompt, labels)`` query in order, one model, one
    pass over the prompt prefix all of them share."""
    import torch

    encoded = [(encode_prompt(tokenizer, prompt),
                [encode_answer(tokenizer, label) for label in labels])
               for prompt, labels in queries]
    if not encoded:
        return
    if is_prompt_learning(model):
        for prompt_ids, label_ids in encoded:
            with torch.inference_mode():
                yield _label_logprobs_full(model, prompt_ids, label_ids,
                                           tokenizer.pad_token_id).tolist()
        return
    prompts = [prompt_ids for prompt_ids, _ in encoded]
    shared = common_prefix_length(prompts, min(map(len, prompts)) - 1)
    cache = None
    if len(encoded) > 1 and shared >= MIN_SHARED_PREFIX:
        with torch.inference_mode():
            cache = _prefix_cache(model, prompts[0][:shared])
    else:
        shared = 0
    for pack in _packs([(prompt_ids[shared:], label_ids) for prompt_ids, label_ids in encoded]):
        with torch.inference_mode():
            scored = _label_logprobs_packed(model, pack, cache)
        yield from (scores.tolist() for scores in scored)


def _packs(queries: list[tuple[list[int], list[list[int]]]]) -> Iterator[list]:
    """Consecutive queries grouped into passes of at most ``PACK_TOKENS`` fed tokens (a longer
    query gets a pass of its own)."""
    pack, size = [], 0
    for prompt_ids, label_ids in queries:
        tokens = len(prompt_ids) + sum(len(ids) - 1 for ids in label_ids)
        if pack and size + tokens > PACK_TOKENS:
            yield pack
            pack, size = [], 0
        pack.append((prompt_ids, label_ids))
        size += tokens
    if pack:
        yield pack


def _prefix_cache(model, prefix_ids: Sequence[int]):
    import torch

    device = next(model.parameters()).device
    return model(input_ids=torch.tensor([prefix_ids], device=device), use_cache=True,
                 logits_to_keep=1).cache


def _label_logprobs_packed(model, queries: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]],
                           cache=None) -> list:
    """Each query's label log-likelihoods from one forward pass of one row holding, query
    after query, ``prompt + label_1[:-1] + label_2[:-1] + ...``, after the ``cache``'s prefix
    (which every token sees; the cache is left as it was found)."""
    import torch

    device = next(model.parameters()).device
    past = cache.get_seq_length() if cache is not None else 0
    ids: list[int] = []
    positions: list[int] = []
    query_of: list[int] = []  # which query each fed token belongs to
    block: list[int] = []  # 0: the query's prompt, j + 1: its label j
    keep: list[int] = []  # row positions whose logits are needed
    target: list[int] = []  # the token each kept logit scores
    owner: list[int] = []  # the (query, label) slot each scored token adds to
    slot = 0
    for q, (prompt_ids, label_ids) in enumerate(queries):
        p = len(prompt_ids)
        prompt_last = len(ids) + p - 1  # predicts every label's first token
        ids += prompt_ids
        positions += range(past, past + p)
        query_of += [q] * p
        block += [0] * p
        for j, answer in enumerate(label_ids):
            fed = answer[:-1]  # the last token (EOS) is only predicted
            keep += [prompt_last, *range(len(ids), len(ids) + len(fed))]
            ids += fed
            positions += range(past + p, past + p + len(fed))
            query_of += [q] * len(fed)
            block += [j + 1] * len(fed)
            target += answer
            owner += [slot] * len(answer)
            slot += 1
    query_of_t, block_t = torch.tensor(query_of), torch.tensor(block)
    sees = (torch.ones(len(ids), len(ids), dtype=torch.bool).tril()
            & (query_of_t[None, :] == query_of_t[:, None])
            & ((block_t[None, :] == 0) | (block_t[None, :] == block_t[:, None])))
    sees = torch.cat([torch.ones(len(ids), past, dtype=torch.bool), sees], dim=1)
    dtype = model.get_input_embeddings().weight.dtype
    mask = torch.zeros(sees.shape, dtype=dtype).masked_fill_(~sees, torch.finfo(dtype).min)
    kept = torch.tensor(sorted(set(keep)))
    logits = model(
        input_ids=torch.tensor([ids], device=device),
        attention_mask=mask[None, None].to(device),
        position_ids=torch.tensor([positions], device=device),
        logits_to_keep=kept.to(device),
        cache=cache,
        use_cache=cache is not None,
    ).logits[0].float()
    if cache is not None:
        cache.crop(-len(ids))  # back to the shared prefix for the next pass
    row_of_kept = torch.searchsorted(kept, torch.tensor(keep)).to(device)
    token_lp = torch.log_softmax(logits, dim=-1)[row_of_kept, torch.tensor(target, device=device)]
    sums = torch.zeros(slot, device=device)
    sums.index_add_(0, torch.tensor(owner, device=device), token_lp)
    sizes = [len(label_ids) for _, label_ids in queries]
    return list(sums.split(sizes))


def _label_logprobs_full(model, prompt_ids: Sequence[int], label_ids: Sequence[Sequence[int]],
                         pad_id: int | None):
    """Prompt and each label as its own padded row: the reference the packed pass must match,
    and the path for prompt-tuned models, whose virtual tokens need peft's own 2-D mask."""
    import torch

    device = next(model.parameters()).device
    n, width, p = len(label_ids), max(map(len, label_ids)), len(prompt_ids)
    batch = torch.full((n, width), pad_id if pad_id is not None else 0, dtype=torch.long)
    valid = torch.zeros((n, width), dtype=torch.bool)
    for row, ids in enumerate(label_ids):
        batch[row, : len(ids)] = torch.tensor(ids)
        valid[row, : len(ids)] = True
    batch, valid = batch.to(device), valid.to(device)
    prompt = torch.tensor([prompt_ids], device=device).expand(n, p)
    ids = torch.cat([prompt, batch], dim=1)
    mask = torch.cat([torch.ones((n, p), dtype=torch.long, device=device), valid.long()], dim=1)
    logits = model(input_ids=ids, attention_mask=mask).logits[:, -width - 1 : -1].float()
    lp = torch.log_softmax(logits, dim=-1).gather(-1, batch[..., None]).squeeze(-1)
    return (lp * valid).sum(dim=1)


def choose_label(model, tokenizer, prompt: str, labels: Sequence[str]) -> str:
    scores = label_log_likelihoods(model, tokenizer, prompt, labels)
    return labels[max(range(len(labels)), key=scores.__getitem__)]


def greedy_generate(model, tokenizer, prompt: str, *, max_new_tokens: int = 32,
                    logits_processor=None) -> str:
    """The model's whole greedy continuation of a chat-formatted prompt."""
    import torch

    device = next(model.parameters()).device
    ids = torch.tensor([encode_prompt(tokenizer, prompt)], device=device)
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            logits_processor=logits_processor,
            pad_token_id=tokenizer.pad_token_id,
        )
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def generate_answer(model, tokenizer, prompt: str, *, max_new_tokens: int = 32) -> str:
    """Greedy answer, cut at the first line as LaMP's generation tasks expect."""
    text = greedy_generate(model, tokenizer, prompt, max_new_tokens=max_new_tokens).strip()
    return text.splitlines()[0].strip() if text else ""
