"""Writing one profile: pick the history that fits, ask the model (PAG or GPG), clean the answer.

Pure with respect to storage: ``profile_cache`` decides whether to call this at all.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from oppu.shared.data.items import resolve_task
from oppu.shared.data.split import time_order
from oppu.shared.personal.profile_prompts import (
    digest_prompt,
    guided_prompt,
    pag_prompt,
    profile_prompts,
)
from oppu.shared.tasks import TaskSpec
from oppu.shared.tasks.text import as_text, truncate_words

MODES = ("pag", "gpg")

DEFAULT_BUDGET_TOKENS = 1500
DEFAULT_MAX_ITEMS = 50
DEFAULT_MAX_NEW_TOKENS = 96
DEFAULT_DIGEST_TOKENS = 48
DEFAULT_FIELD_WORDS = 100
"""Words kept per field of a history item (the reference keeps 200 tokens per field); short
enough that one long article cannot crowd every other item out of the budget."""

Generate = Callable[[str, int], str]
"""``(user-turn prompt, max new tokens) -> raw model text``; injectable for tests."""


# ---- history selection ---------------------------------------------------------------------


def _count(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _cut_tokens(tokenizer, text: str, limit: int) -> str:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return text if len(ids) <= limit else tokenizer.decode(ids[:limit]).rstrip() + " ..."


def history_line(task: TaskSpec, item: Mapping[str, Any], field_words: int) -> str:
    """One item as a context line (labels included, as in the reference), fields cut."""
    trimmed = {k: truncate_words(as_text(v), field_words) if k in task.item_fields else v
               for k, v in item.items()}
    return " ".join(task.render_context([trimmed]).split())


def select_history(
    tokenizer,
    task: TaskSpec,
    history: Sequence[Mapping[str, Any]],
    *,
    budget_tokens: int = DEFAULT_BUDGET_TOKENS,
    max_items: int | None = DEFAULT_MAX_ITEMS,
    field_words: int = DEFAULT_FIELD_WORDS,
) -> list[str]:
    """Context lines of the newest items that fit ``budget_tokens`` together, newest first.

    Stops at the first item that does not fit, so the kept items are exactly the most
    recent ones. If even the newest alone is too long, it is kept, cut to the budget.
    """
    if budget_tokens < 1:
        raise ValueError(f"budget_tokens must be >= 1, got {budget_tokens}")
    newest_first = list(reversed(time_order(list(history))))
    if max_items is not None:
        newest_first = newest_first[:max(0, max_items)]
    lines: list[str] = []
    used = 0
    for item in newest_first:
        line = history_line(task, item, field_words)
        cost = _count(tokenizer, line) + 1  # + the newline joining it
        if used + cost > budget_tokens:
            if not lines:
                lines.append(_cut_tokens(tokenizer, line, max(1, budget_tokens - 2)))
            break
        lines.append(line)
        used += cost
    return lines


def context_limit(model, tokenizer) -> int | None:
    """The model's context length in tokens, when it says (None for stand-in models)."""
    config = getattr(model, "config", None)
    limit = getattr(config, "max_position_embeddings", None)
    if isinstance(limit, int) and limit > 0:
        return limit
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < 1_000_000 else None


# ---- generation and cleaning ----------------------------------------------------------------


def model_generator(model, tokenizer, *, no_repeat_ngram: int = 4) -> Generate:
    """Greedy decoding of a chat-templated user turn; returns all new text (not one line).

    Plain greedy decoding makes a 135M model loop ("They are now ... They are now ...").
    An n-gram seen earlier *in the answer* is not repeated; unlike transformers'
    ``no_repeat_ngram_size`` this leaves the prompt alone, so the answer may still copy
    phrases from the history and the instruction ("most popular category: ...").
    """

    def generate(prompt: str, max_new_tokens: int) -> str:
        from transformers import LogitsProcessorList

        from oppu.shared.llm.chat import encode_prompt
        from oppu.shared.llm.inference import greedy_generate

        processors = LogitsProcessorList()
        if no_repeat_ngram > 1:
            prompt_length = len(encode_prompt(tokenizer, prompt))
            processors.append(_AnswerNoRepeat(prompt_length, no_repeat_ngram))
        return greedy_generate(model, tokenizer, prompt, max_new_tokens=max_new_tokens,
                               logits_processor=processors)

    return generate


class _AnswerNoRepeat:
    """Logits processor: ban the token that would repeat an n-gram of the answer so far."""

    def __init__(self, prompt_len: int, n: int):
        self.prompt_len = prompt_len
        self.n = n

    def __call__(self, input_ids, scores):
        for row in range(input_ids.shape[0]):
            answer = input_ids[row, self.prompt_len:].tolist()
            if len(answer) < self.n:
                continue
            tail = answer[len(answer) - self.n + 1:]
            banned = {answer[i + self.n - 1] for i in range(len(answer) - self.n + 1)
                      if answer[i:i + self.n - 1] == tail}
            if banned:
                scores[row, list(banned)] = float("-inf")
        return scores


_LEAD_LABEL = re.compile(r"^\s*(?:answer|profile|user profile|summary|guidance)\s*:\s*", re.I)
_SENTENCE_END = re.compile(r"[.!?][\"')\]]?(?=\s|$)")
_ENDS_SENTENCE = re.compile(r"[.!?][\"')\]]?$")
_TRAILING_ENUMERATOR = re.compile(r"\s*(?:\d+[.)]|[-*])$")


def clean_answer(text: str) -> str:
    """One paragraph: the first non-empty block, whitespace collapsed, echo labels dropped.

    A text cut off by the token limit mid-sentence is trimmed back to its last full
    sentence, when it has one; a one-line answer with no sentence end is kept as is.
    """
    blocks = [b for b in re.split(r"\n\s*\n", text.strip()) if b.strip()]
    paragraph = " ".join(blocks[0].split()) if blocks else ""
    paragraph = _LEAD_LABEL.sub("", paragraph).strip().strip('"').strip()
    if paragraph and not _ENDS_SENTENCE.search(paragraph):
        ends = list(_SENTENCE_END.finditer(paragraph))
        if ends:
            paragraph = paragraph[: ends[-1].end()]
    return _TRAILING_ENUMERATOR.sub("", paragraph).strip()


# ---- building -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProfileResult:
    """A profile and how it was made (kept in the cache to explain a profile later)."""

    text: str
    mode: str
    digest: str = ""
    items_used: int = 0
    seconds: float = 0.0


def check_mode(mode: str) -> str:
    """``mode`` if it is one of ``MODES``, else a ValueError naming them."""
    if mode not in MODES:
        raise ValueError(f"profile mode must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def generate_profile(
    model,
    tokenizer,
    task: TaskSpec | str,
    history: Sequence[Mapping[str, Any]],
    *,
    mode: str = "pag",
    max_items: int | None = DEFAULT_MAX_ITEMS,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    budget_tokens: int = DEFAULT_BUDGET_TOKENS,
    digest_max_new_tokens: int = DEFAULT_DIGEST_TOKENS,
    field_words: int = DEFAULT_FIELD_WORDS,
    generate: Generate | None = None,
) -> ProfileResult:
    """Write a profile from ``history`` (PAG or GPG); details included. See ``build_profile``."""
    check_mode(mode)
    spec = resolve_task(task)
    prompts = profile_prompts(spec)
    start = time.perf_counter()
    if not history:
        return ProfileResult("", mode)
    generate = generate or model_generator(model, tokenizer)
    # Keep the whole prompt inside the model's context: instructions, guidance, answer.
    overhead = _count(tokenizer, guided_prompt(prompts, [], "") + pag_prompt(prompts, []))
    reserved = overhead + max_new_tokens + (digest_max_new_tokens if mode == "gpg" else 0) + 64
    limit = context_limit(model, tokenizer)
    budget = budget_tokens if limit is None else min(budget_tokens, limit - reserved)
    if budget < 1:
        raise ValueError(f"the model's context ({limit} tokens) leaves no room for history")
    lines = select_history(tokenizer, spec, history, budget_tokens=budget,
                           max_items=max_items, field_words=field_words)
    digest = ""
    if mode == "pag":
        text = clean_answer(generate(pag_prompt(prompts, lines), max_new_tokens))
    else:
        digest = clean_answer(generate(digest_prompt(prompts, lines), digest_max_new_tokens))
        text = clean_answer(generate(guided_prompt(prompts, lines, digest), max_new_tokens))
    return ProfileResult(text, mode, digest, len(lines), time.perf_counter() - start)


def build_profile(
    model,
    tokenizer,
    task: TaskSpec | str,
    history: Sequence[Mapping[str, Any]],
    **settings: Any,
) -> str:
    """A one-paragraph profile of the user written by ``model`` from their history.

    The newest items that fit ``budget_tokens`` (and the model's context) are shown, newest
    first, as context lines; decoding is greedy, so the same history gives the same profile.
    ``generate`` replaces the model call (``(prompt, max_new_tokens) -> text``). An empty
    history gives an empty profile (prompts then carry none). ``settings`` are
    ``generate_profile``'s keyword arguments (mode, max_items, budget_tokens...).
    """
    return generate_profile(model, tokenizer, task, history, **settings).text
