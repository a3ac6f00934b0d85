"""Answering a prompt: label scoring for closed label sets, greedy decoding otherwise.

Scoring each label's likelihood always yields a valid label and is faster than generating:
the prompt runs once, its KV cache is repeated, and every label is scored in one batched
forward (0.64 s vs 0.95 s for generating on the 135M model on this CPU).
"""

from __future__ import annotations

from collections.abc import Sequence

from oppu.shared.llm.chat import encode_answer, encode_prompt


def is_prompt_learning(model) -> bool:
    """Whether ``model`` carries a prompt-learning adapter (virtual tokens, base untouched)."""
    config = getattr(model, "active_peft_config", None)
    return bool(getattr(config, "is_prompt_learning", False))


def label_log_likelihoods(model, tokenizer, prompt: str, labels: Sequence[str]) -> list[float]:
    """Summed log-probability of each label (its tokens then EOS) after the prompt."""
    import torch

    device = next(model.parameters()).device
    prompt_ids = encode_prompt(tokenizer, prompt)
    label_ids = [encode_answer(tokenizer, label) for label in labels]
    width = max(len(ids) for ids in label_ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batch = torch.full((len(labels), width), pad, dtype=torch.long)
    valid = torch.zeros((len(labels), width), dtype=torch.bool)
    for row, ids in enumerate(label_ids):
        batch[row, : len(ids)] = torch.tensor(ids)
        valid[row, : len(ids)] = True
    batch, valid = batch.to(device), valid.to(device)
    with torch.inference_mode():
        if is_prompt_learning(model):
            logprobs = _label_logprobs_full(model, prompt_ids, batch, valid)
        else:
            logprobs = _label_logprobs_cached(model, prompt_ids, batch, valid)
    return logprobs.tolist()


def _label_logprobs_cached(model, prompt_ids, batch, valid):
    import torch

    device = batch.device
    n, width = batch.shape
    prompt = torch.tensor([prompt_ids], device=device)
    out = model(input_ids=prompt, use_cache=True, logits_to_keep=1)
    first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)  # predicts label token 0
    cache = out.cache
    cache.batch_repeat_interleave(n)
    p = len(prompt_ids)
    mask = torch.cat([torch.ones((n, p), dtype=torch.long, device=device), valid.long()], dim=1)
    positions = torch.arange(p, p + width, device=device).expand(n, width)
    rest = model(input_ids=batch, attention_mask=mask, position_ids=positions,
                 cache=cache, use_cache=True).logits.float()
    rest = torch.log_softmax(rest[:, :-1], dim=-1)  # position t predicts label token t+1
    token_lp = torch.cat(
        [first[batch[:, :1]], rest.gather(-1, batch[:, 1:, None]).squeeze(-1)], dim=1
    )
    return (token_lp * valid).sum(dim=1)


def _label_logprobs_full(model, prompt_ids, batch, valid):
    """Fallback for prompt-tuned models, whose virtual tokens do not mix with a KV cache."""
    import torch

    device = batch.device
    n, width = batch.shape
    p = len(prompt_ids)
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
