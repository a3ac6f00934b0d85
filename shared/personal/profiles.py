"""Natural-language user profiles written locally by the base LLM from the user's history.

OPPU pairs each private adapter with a short profile prepended to the prompt (PAG: profile-
augmented generation). Two ways to write it:

- ``pag``: one prompt per task asking the model to summarize the history (OPPU paper,
  Appendix I; wording from TamSiuhin/OPPU ``prompt/prompt_profile.json``).
- ``gpg``: Guided Profile Generation (Zhang 2024, arXiv 2409.13093, Sec. 3 and 5.2): the
  model first answers one task-specific question about the history ("context digestion"),
  then writes a descriptive profile from the history with that answer as guidance.

A profile is derived from private history, so it is cached only under the user's own data
directory and is never sent anywhere.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from oppu.shared.atomic import write_text_atomic
from oppu.shared.data.items import resolve_task
from oppu.shared.data.split import time_order
from oppu.shared.tasks import TaskSpec
from oppu.shared.tasks.text import as_text, truncate_words

MODES = ("pag", "gpg")
PROMPT_VERSION = 1
"""Bumped whenever a prompt below changes, so cached profiles are rebuilt."""

DEFAULT_BUDGET_TOKENS = 1500
DEFAULT_MAX_ITEMS = 50
DEFAULT_MAX_NEW_TOKENS = 96
DEFAULT_DIGEST_TOKENS = 48
DEFAULT_FIELD_WORDS = 100
"""Words kept per field of a history item (the reference keeps 200 tokens per field); short
enough that one long article cannot crowd every other item out of the budget."""

Generate = Callable[[str, int], str]
"""``(user-turn prompt, max new tokens) -> raw model text``; injectable for tests."""


@dataclass(frozen=True)
class ProfilePrompts:
    """Everything needed to write one task's profile, with where the wording comes from."""

    instruction: str = field(metadata={"help": "PAG: the one-shot profile request."})
    digest_question: str = field(metadata={"help": "GPG step 1: what to look for first."})
    focus: str = field(metadata={"help": "GPG step 2: what the profile should describe."})
    source: str = field(default="oppu", metadata={"help": "Origin of the wording."})


_REF = "TamSiuhin/OPPU prompt/prompt_profile.json"
_GPG = "GPG (arXiv 2409.13093) Sec. 5.2"
_GPG_TWEETS = ("Among the usage of 1. Capitalization, 2. Emoji, 3. Abbreviation, "
               "4. Punctuation, which is the most distinctive feature of the above tweets?")

PROFILE_PROMPTS: dict[str, ProfilePrompts] = {
    "LaMP_1": ProfilePrompts(
        instruction=("Write a summary, in English, of the research interests and topics of a "
                     "researcher who has published the following papers. Only generate the "
                     "summary, no other text."),
        digest_question=("Provide the research topic of each of the above papers one by one, "
                         "each in less than 10 words, split by a comma:"),
        focus="their research interests and topics",
        source=f"{_REF} (citation); digest adapted from {_GPG} (product categories)",
    ),
    "LaMP_2N": ProfilePrompts(
        instruction=("Look at the following past articles this journalist has written and "
                     "determine the most popular category they write in. Answer in the "
                     "following form: most popular category: <category>."),
        digest_question=("Which categories and topics appear most often in the above "
                         "articles? List them from most to least frequent, split by a comma:"),
        focus="the news categories and topics they write about most",
        source=f"{_REF} (news_categorize); digest: oppu, after {_GPG}",
    ),
    "LaMP_2M": ProfilePrompts(
        instruction=("Look at the following past movies this user has watched and determine "
                     "the most popular tag they labeled. Answer in the following form: most "
                     "popular tag: <tag>."),
        digest_question=("Which tags and kinds of movies appear most often above? List them "
                         "from most to least frequent, split by a comma:"),
        focus="which tags they give to which kinds of movies",
        source=f"{_REF} (movie_tagging); digest: oppu, after {_GPG}",
    ),
    "LaMP_3": ProfilePrompts(
        instruction=("Based on this user's past reviews, what are the most common scores they "
                     "give for positive and negative reviews? Answer in the following form: "
                     "most common positive score: <most common positive score>, most common "
                     "negative score: <most common negative score>."),
        digest_question=("Provide the product category of each of the above reviews one by "
                         "one, each in less than 10 words, split by a comma, then say which "
                         "scores this user gives most often:"),
        focus="which products they review and which scores they give in positive and "
              "negative reviews",
        source=f"{_REF} (product_rating); digest adapted from {_GPG} (product categories)",
    ),
    "LaMP_4": ProfilePrompts(
        instruction=("Given this author's previous articles, try to describe a template for "
                     "their headlines. I want to be able to accurately predict the headline "
                     "gives one of their articles. Be specific about their style and wording, "
                     "don't tell me anything generic."),
        digest_question=("Among the usage of 1. Length, 2. Capitalization, 3. Punctuation, "
                         "4. Word choice, which is the most distinctive feature of the above "
                         "headlines?"),
        focus="the style and wording of their headlines",
        source=(f"{_REF} (news_headline, commit 704328d; d2128d7 has a copy-paste error "
                f"there); digest adapted from {_GPG} (tweets)"),
    ),
    "LaMP_5": ProfilePrompts(
        instruction=("Given this author's previous publications, try to describe a template "
                     "for their titles. I want to be able to accurately predict the title of "
                     "one of the papers from the abstract. Only generate the template "
                     "description, nothing else."),
        digest_question=("Among the usage of 1. Length, 2. Colons and subtitles, 3. Acronyms "
                         "and method names, 4. Word choice, which is the most distinctive "
                         "feature of the above titles?"),
        focus="the style and wording of their paper titles",
        source=f"{_REF} (scholarly_title); digest adapted from {_GPG} (tweets)",
    ),
    "LaMP_6": ProfilePrompts(
        instruction=("Given this person's previous emails, try to describe a template for "
                     "their email subjects. I want to be able to accurately predict the "
                     "subject of one of their emails from its text. Be specific about their "
                     "style and wording, don't tell me anything generic."),
        digest_question=("Among the usage of 1. Length, 2. Capitalization, 3. Punctuation, "
                         "4. Word choice, which is the most distinctive feature of the above "
                         "email subjects?"),
        focus="the style and wording of their email subjects",
        source=(f"oppu: LaMP-6 is not in the reference; modeled on {_REF} (news_headline); "
                f"digest adapted from {_GPG} (tweets)"),
    ),
    "LaMP_7": ProfilePrompts(
        instruction=("Given this person's previous tweets, try to describe a template for "
                     "their tweets. I want to take a generic sentence and rephrase it to "
                     "sound like one of their tweets, with the same style/punctuation/"
                     "capitalization/wording/tone/etc. as them. Only give me the template "
                     "description, nothing else."),
        digest_question=_GPG_TWEETS,
        focus="their tweet writing style (capitalization, emoji, abbreviation, punctuation "
              "and tone)",
        source=f"{_REF} (tweet_paraphrase); digest verbatim from {_GPG} (tweets)",
    ),
}
"""Built-in LaMP tasks; apostrophes are ASCII (the reference uses typographic ones)."""


def profile_prompts(task: TaskSpec | str) -> ProfilePrompts:
    """The task's prompts; a custom task gets generic ones built from its description."""
    spec = resolve_task(task)
    known = PROFILE_PROMPTS.get(spec.name)
    if known is not None:
        return known
    what = spec.description.strip().rstrip(".") or spec.name
    return ProfilePrompts(
        instruction=("Look at the following past items of this user and describe, in a few "
                     "sentences, what is distinctive about them that would help with this "
                     f"task: {what}. Only write the description, nothing else."),
        digest_question=("Which features of the above items are most distinctive of this "
                         "user? List them, split by a comma:"),
        focus=f"what is distinctive about them for this task: {what}",
        source=f"oppu generic prompt, after {_REF} and {_GPG}",
    )


# ---- prompts -------------------------------------------------------------------------------


def _history_block(lines: Sequence[str]) -> str:
    return "User History:\n" + "\n".join(lines)


def pag_prompt(prompts: ProfilePrompts, lines: Sequence[str]) -> str:
    """The reference layout: instruction, the history, then ``Answer:``."""
    return f"{prompts.instruction}\n{_history_block(lines)}\nAnswer:"


def digest_prompt(prompts: ProfilePrompts, lines: Sequence[str]) -> str:
    """GPG step 1: the history first, the guiding question after it ("the above ...")."""
    return f"{_history_block(lines)}\n\n{prompts.digest_question}"


def guided_prompt(prompts: ProfilePrompts, lines: Sequence[str], digest: str) -> str:
    """GPG step 2: history and guidance concatenated, then a request for a profile."""
    return (f"{_history_block(lines)}\n\nGuidance: {digest}\n\n"
            "Based on the user history and the guidance, write a short descriptive profile "
            f"of this user that describes {prompts.focus}. Write two or three sentences and "
            "nothing else.\nProfile:")


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


def _check_mode(mode: str) -> str:
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
    _check_mode(mode)
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


# ---- cache ----------------------------------------------------------------------------------


def model_id_of(model) -> str:
    """What identifies the base model for the cache key (its source path or hub id)."""
    config = getattr(model, "config", None)
    return str(getattr(config, "_name_or_path", "") or getattr(model, "name_or_path", "") or "")


def profile_key(
    task_name: str,
    mode: str,
    history: Sequence[Mapping[str, Any]],
    model_id: str,
    settings: Mapping[str, Any] | None = None,
) -> str:
    """sha256 over everything that changes the profile: items, model, mode, prompts, settings."""
    payload = {
        "version": PROMPT_VERSION,
        "task": task_name,
        "mode": mode,
        "model": model_id,
        "settings": dict(settings or {}),
        "history": list(history),
    }
    blob = json.dumps(payload, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ProfileCache:
    """Profiles of one user, one file per (task, mode), under the user's data directory.

    The file remembers the key it was built for, so a changed history, model or setting is
    a miss and the rebuilt profile replaces the old one (no stale files pile up). Files are
    written atomically (and created owner-only by ``mkstemp``).
    """

    root: Path

    def path(self, task_name: str, mode: str) -> Path:
        return Path(self.root) / "profiles" / task_name / f"{_check_mode(mode)}.json"

    def get(self, task_name: str, mode: str, key: str) -> str | None:
        """The cached profile if it was built for exactly ``key``, else None."""
        path = self.path(task_name, mode)
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # missing or unreadable: build again
        if not isinstance(record, dict) or record.get("key") != key:
            return None
        text = record.get("profile")
        return text if isinstance(text, str) else None

    def put(self, task_name: str, key: str, result: ProfileResult, model_id: str = "") -> Path:
        path = self.path(task_name, result.mode)
        record = {"key": key, "task": task_name, "model": model_id, "profile": result.text,
                  "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  **{k: v for k, v in asdict(result).items() if k != "text"}}
        write_text_atomic(path, json.dumps(record, indent=2, ensure_ascii=False) + "\n")
        return path

    def get_or_build(
        self,
        model,
        tokenizer,
        task: TaskSpec | str,
        history: Sequence[Mapping[str, Any]],
        *,
        mode: str = "pag",
        model_id: str | None = None,
        generate: Generate | None = None,
        **settings: Any,
    ) -> str:
        """The cached profile for this exact history and model, else a new one (then cached).

        ``settings`` are ``build_profile``'s keyword arguments (max_items, budget_tokens...).
        """
        spec = resolve_task(task)
        model_id = model_id_of(model) if model_id is None else model_id
        key = profile_key(spec.name, _check_mode(mode), history, model_id, settings)
        cached = self.get(spec.name, mode, key)
        if cached is not None:
            return cached
        result = generate_profile(model, tokenizer, spec, history, mode=mode,
                                  generate=generate, **settings)
        self.put(spec.name, key, result, model_id)
        return result.text
