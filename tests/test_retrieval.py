"""BM25 over a user's history: relevance, the before= training rule, edge cases, exactness."""

from __future__ import annotations

import random
import time

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from oppu.shared.retrieval import HistoryIndex, retrieve, tokenize
from oppu.shared.tasks import get_task

NEWS = get_task("LaMP_2N")
HISTORY = [
    {"text": "The senate passed the budget bill after a long debate.", "title": "Budget",
     "category": "politics"},
    {"text": "A new smartphone with a folding screen was unveiled.", "title": "Phones",
     "category": "science & technology"},
    {"text": "The home team won the championship game in overtime.", "title": "Champions",
     "category": "sports"},
    {"text": "Chefs share their favourite pasta recipes for winter.", "title": "Pasta",
     "category": "food & drink"},
    {"text": "The striker scored twice as the team won the cup.", "title": "Cup final",
     "category": "sports"},
]


def test_tokenize_lowercases_word_characters():
    assert tokenize("U.S. Stocks' worst-year, 2008!") == ["u", "s", "stocks", "worst", "year",
                                                         "2008"]


def test_relevant_item_ranks_first():
    index = HistoryIndex(NEWS, HISTORY)
    assert index.top_k("folding smartphone screen", 1) == [HISTORY[1]]
    top = index.top_k("the team won", 2)
    assert {id(x) for x in top} == {id(HISTORY[2]), id(HISTORY[4])}


def test_before_excludes_later_items():
    index = HistoryIndex(NEWS, HISTORY)
    assert index.top_k("striker scored cup", 1) == [HISTORY[4]]
    found = index.top_k("striker scored cup team won", 5, before=3)
    assert len(found) == 3 and all(item in HISTORY[:3] for item in found)
    assert found[0] is HISTORY[2]
    assert index.top_k("anything", 2, before=0) == []


def test_k_zero_and_k_larger_than_history():
    index = HistoryIndex(NEWS, HISTORY)
    assert index.top_k("team", 0) == []
    assert len(index.top_k("team", 50)) == len(HISTORY)
    assert len(index.top_k("team", 50, before=2)) == 2
    with pytest.raises(ValueError, match=">= 0"):
        index.top_k("team", -1)


def test_ties_go_to_the_most_recent_item():
    same = [{"text": "same words", "title": "", "category": "sports"} for _ in range(4)]
    index = HistoryIndex(NEWS, same)
    # Equal dicts compare equal, so compare identities.
    assert [id(x) for x in index.top_k("same", 3)] == [id(same[3]), id(same[2]), id(same[1])]
    assert [id(x) for x in index.top_k("no overlap", 2, before=3)] == [id(same[2]),
                                                                        id(same[1])]


def test_empty_history_and_empty_items():
    assert HistoryIndex(NEWS, []).top_k("x", 3) == []
    blank = [{"text": "", "title": "", "category": "sports"}] * 2
    assert len(HistoryIndex(NEWS, blank).top_k("x", 3)) == 2


def test_retrieve_searches_with_the_task_query_part():
    query_input = NEWS.query_from_item({"text": "pasta recipes", "title": "", "category": "x"})[0]
    assert retrieve(NEWS, HISTORY, query_input, 1) == [HISTORY[3]]
    assert retrieve(NEWS, HISTORY, query_input, 0) == []
    assert retrieve(NEWS, [], query_input, 2) == []


def test_scores_equal_bm25okapi_built_on_the_prefix():
    rng = random.Random(0)
    words = [f"w{i}" for i in range(40)] + ["the"] * 30  # "the" gets a negative idf
    items = [{"text": " ".join(rng.choices(words, k=rng.randint(1, 25))), "title": "",
              "category": "c"} for _ in range(60)]
    index = HistoryIndex(NEWS, items)
    corpus = [tokenize(NEWS.item_text(it)) for it in items]
    for before in (1, 2, 3, 7, 30, 60, None):
        query = " ".join(rng.choices(words, k=8)) + " unseen"
        m = len(items) if before is None else before
        expected = BM25Okapi(corpus[:m]).get_scores(tokenize(query))
        np.testing.assert_allclose(index.scores(query, before=before), expected, atol=1e-9)


def test_training_rule_is_fast_for_a_thousand_items():
    rng = random.Random(1)
    vocab = [f"t{i}" for i in range(3000)]
    items = [{"text": " ".join(rng.choices(vocab, k=100)), "title": "", "category": "c"}
             for _ in range(1000)]
    start = time.perf_counter()
    index = HistoryIndex(NEWS, items)
    for i in range(1, len(items), 4):
        index.top_k(items[i]["text"], 4, before=i)
    assert time.perf_counter() - start < 10  # rebuilding BM25Okapi per prefix takes ~4x this


def test_least_relevant_keeps_the_items_unlike_the_queries_in_time_order():
    from oppu.shared.retrieval import least_relevant
    from oppu.shared.tasks import get_task

    task = get_task("LaMP_2N")
    history = [{"id": str(i), "text": text, "title": "", "category": "politics"}
               for i, text in enumerate(["senate vote on budget", "pasta recipe with basil",
                                         "budget senate deal", "hiking trails in utah",
                                         "jazz festival lineup", "new phone camera review"])]
    inputs = ["Which category does this article belong to? article: senate budget vote"]
    kept = least_relevant(task, history, inputs, 4 / 6)
    assert [item["id"] for item in kept] == ["1", "3", "4", "5"]
    assert least_relevant(task, history, inputs, 1.0) == history
