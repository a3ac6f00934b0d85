"""The wording of the profile requests: one table entry per LaMP task, and the prompt layouts.

PAG's instructions come from the OPPU reference (TamSiuhin/OPPU ``prompt/prompt_profile.json``,
paper Appendix I); GPG's digest questions follow Guided Profile Generation (arXiv 2409.13093,
Sec. 5.2). Kept apart from the code that runs them so a wording change is one reviewable
diff here, with ``PROMPT_VERSION`` bumped beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from oppu.shared.data.items import resolve_task
from oppu.shared.tasks import TaskSpec

PROMPT_VERSION = 1
"""Bumped whenever a prompt below changes, so cached profiles are rebuilt."""


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
