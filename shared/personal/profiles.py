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

This module is the one import for callers; the work is split by concern into
``profile_prompts`` (wording), ``profile_writer`` (history selection, generation, cleaning)
and ``profile_cache`` (the on-disk cache).
"""

from __future__ import annotations

from oppu.shared.personal.profile_cache import ProfileCache, model_id_of, profile_key
from oppu.shared.personal.profile_prompts import (
    PROFILE_PROMPTS,
    PROMPT_VERSION,
    ProfilePrompts,
    digest_prompt,
    guided_prompt,
    pag_prompt,
    profile_prompts,
)
from oppu.shared.personal.profile_writer import (
    DEFAULT_BUDGET_TOKENS,
    DEFAULT_DIGEST_TOKENS,
    DEFAULT_FIELD_WORDS,
    DEFAULT_MAX_ITEMS,
    DEFAULT_MAX_NEW_TOKENS,
    MODES,
    Generate,
    ProfileResult,
    build_profile,
    clean_answer,
    context_limit,
    generate_profile,
    history_line,
    model_generator,
    select_history,
)

__all__ = [
    "DEFAULT_BUDGET_TOKENS",
    "DEFAULT_DIGEST_TOKENS",
    "DEFAULT_FIELD_WORDS",
    "DEFAULT_MAX_ITEMS",
    "DEFAULT_MAX_NEW_TOKENS",
    "MODES",
    "PROFILE_PROMPTS",
    "PROMPT_VERSION",
    "Generate",
    "ProfileCache",
    "ProfilePrompts",
    "ProfileResult",
    "build_profile",
    "clean_answer",
    "context_limit",
    "digest_prompt",
    "generate_profile",
    "guided_prompt",
    "history_line",
    "model_generator",
    "model_id_of",
    "pag_prompt",
    "profile_key",
    "profile_prompts",
    "select_history",
]
