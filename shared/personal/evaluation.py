"""Local evaluation: predict the user's held-out queries and keep only summable statistics."""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from oppu.shared.llm.inference import generate_answer, iter_label_scores
from oppu.shared.metrics import make_metric
from oppu.shared.personal.label_prior import LabelPrior
from oppu.shared.retrieval import HistoryIndex
from oppu.shared.tasks import TaskKind, TaskSpec
from oppu.shared.timing import phase


@dataclass(frozen=True)
class EvalQuery:
    """A held-out query, its gold answer, and the history the user had before it."""

    input: str
    gold: str
    history: Sequence[Mapping] = ()


@dataclass
class EvalResult:
    """Per-query predictions stay on the client; ``stats`` is all that may be shared."""

    labels: tuple[str, ...]
    stats: dict[str, float]
    metrics: dict[str, float]
    predictions: list[str] = field(default_factory=list)
    golds: list[str] = field(default_factory=list)


def predict(
    model,
    tokenizer,
    task: TaskSpec,
    query_input: str,
    *,
    retrieved: Sequence[Mapping] = (),
    profile: str | None = None,
    prior: LabelPrior | None = None,
) -> str:
    """The model's answer to one query (see ``predictions``)."""
    return next(predictions(model, tokenizer, task, [(query_input, retrieved, profile)],
                            prior=prior))


def predictions(
    model,
    tokenizer,
    task: TaskSpec,
    queries: Sequence[tuple[str, Sequence[Mapping], str | None]],
    *,
    prior: LabelPrior | None = None,
) -> Iterator[str]:
    """The model's answer to each ``(input, retrieved items, profile)`` query, in order: the
    best-scoring label (with the user's label prior when one was chosen; the queries are
    scored together, their shared prompt prefix once), or a greedy first line."""
    if has_labels(task):
        chooser = prior or LabelPrior({})
        asked = _label_prompts(task, queries)
        for (_, labels), scored in zip(asked, iter_label_scores(model, tokenizer, asked),
                                       strict=True):
            yield chooser.choose(labels, scored)
        return
    for text, retrieved, profile in queries:
        prompt = task.build_prompt(text, retrieved=retrieved, profile=profile)
        yield task.parse_prediction(
            generate_answer(model, tokenizer, prompt, max_new_tokens=task.max_new_tokens), ()
        )


def has_labels(task: TaskSpec) -> bool:
    """Whether the task answers from a closed label set (scored, never generated)."""
    return task.kind in (TaskKind.CLASSIFICATION, TaskKind.RATING)


def metric_labels(task: TaskSpec, queries: Sequence[EvalQuery]) -> tuple[str, ...]:
    """One label set for the whole evaluation (union in first-seen order)."""
    labels: dict[str, None] = {}
    for query in queries:
        labels.update(dict.fromkeys(task.label_set(query.input)))
    return tuple(labels)


def evaluate_queries(
    model,
    tokenizer,
    task: TaskSpec,
    queries: Sequence[EvalQuery],
    *,
    k: int = 0,
    profile: str | None = None,
    labels: Sequence[str] | None = None,
    retrieval: str = "bm25",
    seed: int = 0,
    show_progress: bool = False,
    prior: LabelPrior | None = None,
) -> EvalResult:
    """Predict every query (with top-k items from its own history) and score it.

    ``retrieval="random"`` picks the k items at random instead of by BM25: the paper's
    random-history baseline, which tells relevance apart from merely seeing more text.
    """
    from tqdm.auto import tqdm

    labels = tuple(labels) if labels is not None else metric_labels(task, queries)
    metric = make_metric(task.kind, labels)
    stats = metric.new_stats()
    answered, golds = [], []
    with phase("evaluation"):  # retrieval included
        asked = [(query.input, retrieved, profile) for query, retrieved in
                 zip(queries, retrieved_items(task, queries, k, retrieval, seed), strict=True)]
        answers = predictions(model, tokenizer, task, asked, prior=prior)
        for query, prediction in tqdm(zip(queries, answers, strict=True), total=len(queries),
                                      desc="evaluating", unit="query",
                                      disable=not show_progress, leave=False):
            metric.update(stats, prediction, query.gold)
            answered.append(prediction)
            golds.append(query.gold)
    return EvalResult(labels, stats, metric.compute(stats), answered, golds)


def retrieved_items(task: TaskSpec, queries: Sequence[EvalQuery], k: int,
                    retrieval: str = "bm25", seed: int = 0) -> Iterator[Sequence[Mapping]]:
    """Each query's k items from its own history: top BM25, or at random."""
    if retrieval not in ("bm25", "random"):
        raise ValueError(f"retrieval must be bm25 or random (got {retrieval!r}).")
    rng = random.Random(seed)
    index, indexed = None, None  # queries of one user often share one history: index it once
    for query in queries:
        if k <= 0 or not query.history:
            yield ()
        elif retrieval == "random":
            yield rng.sample(list(query.history), min(k, len(query.history)))
        else:
            if query.history is not indexed:
                index, indexed = HistoryIndex(task, query.history), query.history
            yield index.top_k(task.retrieval_query(query.input), k)


def label_scores(model, tokenizer, task: TaskSpec, queries: Sequence[EvalQuery], *,
                 k: int = 0, profile: str | None = None
                 ) -> list[tuple[tuple[str, ...], list[float]]]:
    """Each query's labels and their log-likelihoods: scored once, decided many ways (the
    label prior's weights in selection)."""
    with phase("evaluation"):  # retrieval included
        asked = _label_prompts(task, [(query.input, retrieved, profile) for query, retrieved
                                      in zip(queries, retrieved_items(task, queries, k),
                                             strict=True)])
        return [(labels, scores) for (_, labels), scores
                in zip(asked, iter_label_scores(model, tokenizer, asked), strict=True)]


def _label_prompts(task: TaskSpec, queries: Sequence[tuple[str, Sequence[Mapping], str | None]]
                   ) -> list[tuple[str, tuple[str, ...]]]:
    """Each ``(input, retrieved items, profile)`` query as its prompt and offered labels."""
    return [(task.build_prompt(text, retrieved=retrieved, profile=profile), task.label_set(text))
            for text, retrieved, profile in queries]


def heldout_queries(
    task: TaskSpec,
    train: Sequence[Mapping],
    heldout: Sequence[Mapping],
    labels: Sequence[str] | None = None,
) -> list[EvalQuery]:
    """Held-out history items as queries; each may retrieve from the training items."""
    queries = []
    for item in heldout:
        pair = task.query_from_item(item, labels=labels)
        if pair is not None:
            queries.append(EvalQuery(input=pair[0], gold=pair[1], history=tuple(train)))
    return queries
