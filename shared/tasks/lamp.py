"""The eight LaMP tasks as one declarative table.

Wording sources (read, not copied as code):
- ``query_template``: the LaMP dataset's own query inputs (LaMP paper, Table "task input";
  LaMP-6 from LaMP-Benchmark/LaMP ``data/avocado/create_avocado_dataset.py``).
- ``prompt_template`` and ``context_template``: the OPPU reference's ``prompt/prompt.json``
  (TamSiuhin/OPPU; its "prompt" and "retrieval_history" entries, which the paper's Appendix H
  shows). LaMP-1 adds the two candidate references, which the reference template drops;
  LaMP-6 is not in the OPPU code and follows the LaMP-4 pattern.
- ``item_text_template``: LaMP's BM25 corpora (LaMP-Benchmark/LaMP ``LaMP/prompts/prompts.py``):
  item content only, so labels in past items do not pull retrieval toward a label.
- ``query_pattern``: what each task searches the history with, as OPPU extracts it
  (``utils.py``: the text after the instruction; LaMP-1: the paper's title).
"""

from __future__ import annotations

from oppu.shared.tasks.spec import TaskKind, TaskSpec

NEWS_CATEGORIES = (
    "travel", "education", "parents", "style & beauty", "entertainment", "food & drink",
    "science & technology", "business", "sports", "healthy living", "women", "politics",
    "crime", "culture & arts", "religion",
)
"""LaMP-2N's 15 categories, in the order its inputs list them."""

MOVIE_TAGS = (
    "sci-fi", "based on a book", "comedy", "action", "twist ending", "dystopia", "dark comedy",
    "classic", "psychology", "fantasy", "romance", "thought-provoking", "social commentary",
    "violence", "true story",
)
"""LaMP-2M's 15 tags, in the order its inputs list them."""

_NEWS_ASK = ("Which category does this article relate to among the following categories? "
             "Just answer with the category name without further explanation.")
_MOVIE_ASK = ("Which tag does this movie relate to among the following tags? "
              "Just answer with the tag name without further explanation.")
_REVIEW_ASK = ("What is the score of the following review on a scale of 1 to 5? just answer "
               "with 1, 2, 3, 4, or 5 without further explanation.")
_CITATION_ASK = ("Identify the most relevant reference for the listed publication by the "
                 "researcher. Select the reference paper that is most closely related to the "
                 "researcher's work. Just answer with [1] or [2] without explanation.")

LAMP_TASKS: tuple[TaskSpec, ...] = (
    TaskSpec(
        name="LaMP_1",
        kind=TaskKind.CLASSIFICATION,
        description="Personalized citation identification: which of two papers the author cites.",
        item_fields=("title", "abstract"),
        item_text_template="{title} {abstract}",
        context_template="paper title: {title}",
        query_pattern=(r'the title "(?P<q>.*?)", which reference is related\?.*?'
                       r'\[1\]: "(?P<ref1>.*?)"\s*\[2\]: "(?P<ref2>.*)"'),
        prompt_template=_CITATION_ASK
        + '\npaper title: {q} [1]: "{ref1}" [2]: "{ref2}" reference:',
        labels=("[1]", "[2]"),
        max_new_tokens=8,
    ),
    TaskSpec(
        name="LaMP_2N",
        kind=TaskKind.CLASSIFICATION,
        description="Personalized news categorization (category of the journalist's article).",
        item_fields=("text", "title", "category"),
        query_template=_NEWS_ASK + " categories: [{labels}] article: {text}",
        target_field="category",
        item_text_template="{title} {text}",
        context_template="article: {text} category: {category}",
        query_pattern=r"\barticle:\s*(?P<q>.*)",
        prompt_template=_NEWS_ASK + " categories: [{labels}]\n article: {q} category:",
        labels=NEWS_CATEGORIES,
        labels_pattern=r"categories:\s*\[(?P<labels>[^\]]*)\]",
        max_new_tokens=16,
    ),
    TaskSpec(
        name="LaMP_2M",
        kind=TaskKind.CLASSIFICATION,
        description="Personalized movie tagging (the tag this user gives a movie).",
        item_fields=("description", "tag"),
        query_template=_MOVIE_ASK + " tags: [{labels}] description: {description}",
        target_field="tag",
        item_text_template="{description}",
        context_template="description: {description} tag: {tag}",
        query_pattern=r"\bdescription:\s*(?P<q>.*)",
        prompt_template=_MOVIE_ASK + " tags: [{labels}]\n description: {q} tag:",
        labels=MOVIE_TAGS,
        labels_pattern=r"tags:\s*\[(?P<labels>[^\]]*)\]",
        max_new_tokens=16,
    ),
    TaskSpec(
        name="LaMP_3",
        kind=TaskKind.RATING,
        description="Personalized product rating (1-5 stars from the review text).",
        item_fields=("text", "score"),
        query_template=_REVIEW_ASK + " review: {text}",
        target_field="score",
        item_text_template="{text}",
        context_template="review: {text} score: {score}",
        query_pattern=r"\breview:\s*(?P<q>.*)",
        prompt_template=_REVIEW_ASK + " review: {q}\n score:",
        max_new_tokens=4,
    ),
    TaskSpec(
        name="LaMP_4",
        kind=TaskKind.GENERATION,
        description="Personalized news headline generation.",
        item_fields=("text", "title"),
        query_template="Generate a headline for the following article: {text}",
        target_field="title",
        item_text_template="{title} {text}",
        context_template="article: {text} headline: {title}",
        query_pattern=r"following article:\s*(?P<q>.*)",
        prompt_template="Generate a headline for the following article.\narticle: {q} headline:",
        max_new_tokens=48,
    ),
    TaskSpec(
        name="LaMP_5",
        kind=TaskKind.GENERATION,
        description="Personalized scholarly title generation (paper title from its abstract).",
        item_fields=("title", "abstract"),
        query_template="Generate a title for the following abstract of a paper: {abstract}",
        target_field="title",
        item_text_template="{title} {abstract}",
        context_template="abstract: {abstract} title: {title}",
        query_pattern=r"abstract of a paper:\s*(?P<q>.*)",
        prompt_template=("Generate a title for the following abstract of a paper.\n"
                         " abstract: {q} title:"),
        max_new_tokens=48,
    ),
    TaskSpec(
        name="LaMP_6",
        kind=TaskKind.GENERATION,
        description="Personalized email subject generation (Avocado; data not public).",
        item_fields=("text", "title"),
        query_template="Generate a subject for the following email: {text}",
        target_field="title",
        item_text_template="{text}",
        context_template="email: {text} subject: {title}",
        query_pattern=r"following email:\s*(?P<q>.*)",
        prompt_template="Generate a subject for the following email.\n email: {q} subject:",
        max_new_tokens=32,
    ),
    TaskSpec(
        name="LaMP_7",
        kind=TaskKind.GENERATION,
        description="Personalized tweet paraphrasing (history: the user's past tweets).",
        item_fields=("text",),
        item_text_template="{text}",
        context_template="tweet: {text}",
        query_pattern=r"before or after it:\s*(?P<q>.*)",
        prompt_template=("Paraphrase the following text into tweet without any explanation "
                         "before or after it.\n text: {q} tweet:"),
        max_new_tokens=96,
    ),
)

LAMP_ALIASES = {
    "citation": "LaMP_1",
    "news_categorize": "LaMP_2N",
    "movie_tagging": "LaMP_2M",
    "product_rating": "LaMP_3",
    "news_headline": "LaMP_4",
    "scholarly_title": "LaMP_5",
    "email_subject": "LaMP_6",
    "tweet_paraphrase": "LaMP_7",
}
"""The OPPU reference's task names (``utils.name2taskid``), accepted as aliases."""
