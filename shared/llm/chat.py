"""Turning task prompts into model inputs: chat template where the model has one."""

from __future__ import annotations


def render_prompt(tokenizer, prompt: str) -> str:
    """The text the model sees before its answer (chat-templated user turn, or plain)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    return prompt.rstrip() + "\n"


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    return tokenizer(render_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"]


def encode_answer(tokenizer, answer: str, *, eos: bool = True) -> list[int]:
    """Answer tokens, EOS appended so the model learns where an answer ends."""
    ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    if eos and tokenizer.eos_token_id is not None:
        ids = [*ids, tokenizer.eos_token_id]
    return ids
