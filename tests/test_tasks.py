"""The LaMP task table, prompt rendering, label reading, output parsing and the registry."""

from __future__ import annotations

import dataclasses

import pytest

from oppu.shared.errors import UnknownTaskError
from oppu.shared.tasks import (
    Example,
    TaskKind,
    TaskSpec,
    TaskSpecError,
    get_task,
    register_task,
    task_names,
)
from oppu.shared.tasks.lamp import MOVIE_TAGS, NEWS_CATEGORIES

# A real input line from shared/data/huffpost_lamp2n/questions.json (question id "200").
HUFFPOST_INPUT = (
    "Which category does this article relate to among the following categories? Just answer "
    "with the category name without further explanation. categories: [black voices, business, "
    "comedy, crime, culture & arts, entertainment, environment, food & drink, home & living, "
    "impact, media, money, parenting, politics, queer voices, religion, science, sports, "
    "style & beauty, tech, u.s. news, weird news, wellness, women, world news] article: Zillow "
    "Group says it will stop buying and selling homes, citing the unpredictability of "
    "forecasting housing prices."
)
HUFFPOST_CATEGORIES = (
    "black voices", "business", "comedy", "crime", "culture & arts", "entertainment",
    "environment", "food & drink", "home & living", "impact", "media", "money", "parenting",
    "politics", "queer voices", "religion", "science", "sports", "style & beauty", "tech",
    "u.s. news", "weird news", "wellness", "women", "world news",
)
CITATION_INPUT = (
    'For an author who has written the paper with the title "Deep Residual Learning", which '
    'reference is related? Just answer with [1] or [2] without explanation. '
    '[1]: "Batch Normalization" [2]: "Medieval Crop Rotation"'
)

# One history item per task; the first is the item under test, the others are "retrieved".
ITEMS = {
    "LaMP_1": [{"title": "Deep nets", "abstract": "We train deep nets."},
               {"title": "Wide nets", "abstract": "Wide ones."},
               {"title": "Shallow nets", "abstract": "Shallow ones."}],
    "LaMP_2N": [{"text": "Stocks fell today.", "title": "Markets slide", "category": "business"},
                {"text": "The team won.", "title": "Victory", "category": "sports"},
                {"text": "A new law passed.", "title": "Senate votes", "category": "politics"}],
    "LaMP_2M": [{"description": "A robot learns to love.", "tag": "sci-fi"},
                {"description": "Two friends on a road trip.", "tag": "comedy"},
                {"description": "A war story.", "tag": "true story"}],
    "LaMP_3": [{"text": "Great blender, loud though.", "score": "4"},
               {"text": "Broke in a week.", "score": 1},
               {"text": "Fine.", "score": 3.0}],
    "LaMP_4": [{"text": "The city council approved a budget.", "title": "Budget passes"},
               {"text": "Rain all week.", "title": "Wet week ahead"},
               {"text": "Schools reopen.", "title": "Back to class"}],
    "LaMP_5": [{"title": "Sparse attention", "abstract": "We study sparse attention."},
               {"title": "Dense retrieval", "abstract": "We retrieve densely."},
               {"title": "Tiny models", "abstract": "Small is fine."}],
    "LaMP_6": [{"text": "Please find the report attached.", "title": "Q3 report"},
               {"text": "Lunch at noon?", "title": "lunch"},
               {"text": "Meeting moved.", "title": "Re: meeting"}],
    "LaMP_7": [{"text": "gotta make the most of my last day in ktown"},
               {"text": "coffee first, people later"},
               {"text": "rainy mondays are the worst"}],
}
QUERY_INPUTS = {
    "LaMP_1": CITATION_INPUT,
    "LaMP_2N": HUFFPOST_INPUT,
    "LaMP_2M": ("Which tag does this movie relate to among the following tags? Just answer with "
                "the tag name without further explanation. tags: [" + ", ".join(MOVIE_TAGS)
                + "] description: A detective hunts a killer."),
    "LaMP_3": ("What is the score of the following review on a scale of 1 to 5? just answer "
               "with 1, 2, 3, 4, or 5 without further explanation. review: Works as promised."),
    "LaMP_4": "Generate a headline for the following article: The mayor resigned on Friday.",
    "LaMP_5": "Generate a title for the following abstract of a paper: We prune transformers.",
    "LaMP_6": "Generate a subject for the following email: Can you send the slides?",
    "LaMP_7": ("Paraphrase the following tweet without any explanation before or after it: "
               "I am tired but happy."),
}
SEARCH_TEXT = {  # what retrieval_query must extract from QUERY_INPUTS
    "LaMP_1": "Deep Residual Learning",
    "LaMP_2N": "Zillow Group says it will stop buying and selling homes, citing the "
               "unpredictability of forecasting housing prices.",
    "LaMP_2M": "A detective hunts a killer.",
    "LaMP_3": "Works as promised.",
    "LaMP_4": "The mayor resigned on Friday.",
    "LaMP_5": "We prune transformers.",
    "LaMP_6": "Can you send the slides?",
    "LaMP_7": "I am tired but happy.",
}
SUPERVISED = {"LaMP_2N": "category", "LaMP_2M": "tag", "LaMP_3": "score", "LaMP_4": "title",
              "LaMP_5": "title", "LaMP_6": "title"}
LAMP = sorted(ITEMS)


def test_all_lamp_tasks_registered():
    assert set(LAMP) <= set(task_names())


@pytest.mark.parametrize("name", LAMP)
def test_prompt_k0_k2_and_profile(name):
    task = get_task(name)
    query, items = QUERY_INPUTS[name], ITEMS[name]
    bare = task.build_prompt(query)
    assert SEARCH_TEXT[name] in bare
    assert bare == task.query_text(query)

    with_two = task.build_prompt(query, items[1:3])
    context = task.render_context(items[1:3])
    lines = context.split("\n")
    assert len(lines) == 2 and lines[0] == task.render_context(items[1:2])
    assert with_two == f"{context}\n\n{bare}"  # given order kept: most relevant first

    profiled = task.build_prompt(query, items[1:3], profile="  Likes short answers.  ")
    assert profiled == f"Likes short answers.\n{with_two}"
    assert task.build_prompt(query, (), profile="   ") == bare


@pytest.mark.parametrize("name", LAMP)
def test_retrieval_query_extracts_the_content(name):
    assert get_task(name).retrieval_query(QUERY_INPUTS[name]) == SEARCH_TEXT[name]


def test_retrieval_query_falls_back_to_whole_input():
    assert get_task("LaMP_4").retrieval_query("  just some text ") == "just some text"


@pytest.mark.parametrize("name", LAMP)
def test_examples_from_history_items(name):
    task = get_task(name)
    item = ITEMS[name][0]
    example = task.example_from_item(item, ITEMS[name][1:3])
    assert isinstance(example, Example)
    if name in SUPERVISED:
        target = SUPERVISED[name]
        assert not example.unsupervised
        assert example.target == str(item[target])
        assert example.prompt.startswith(task.render_context(ITEMS[name][1:3]))
        query, gold = task.query_from_item(item)
        assert gold == example.target
        assert task.build_prompt(query, ITEMS[name][1:3]) == example.prompt
    else:  # LaMP-1 and LaMP-7 history cannot be posed as queries: next-token text
        assert example.unsupervised and example.prompt == ""
        assert example.target == task.item_text(item)
        assert task.query_from_item(item) is None


def test_generation_prompt_does_not_leak_the_answer():
    for name in ("LaMP_4", "LaMP_5", "LaMP_6"):
        task = get_task(name)
        example = task.example_from_item(ITEMS[name][0])
        assert example.target not in example.prompt


def test_rating_target_is_a_whole_number_text():
    task = get_task("LaMP_3")
    assert [task.example_from_item(it).target for it in ITEMS["LaMP_3"]] == ["4", "1", "3"]


def test_news_example_matches_the_lamp_input_format():
    task = get_task("LaMP_2N")
    item = {"text": "Zillow Group says it will stop buying and selling homes, citing the "
                    "unpredictability of forecasting housing prices.",
            "title": "t", "category": "u.s. news"}
    query, gold = task.query_from_item(item, labels=HUFFPOST_CATEGORIES)
    assert query == HUFFPOST_INPUT and gold == "u.s. news"
    example = task.example_from_item(item, labels=HUFFPOST_CATEGORIES)
    assert example.prompt == task.build_prompt(HUFFPOST_INPUT)
    assert example.prompt.endswith("category:")
    default = task.example_from_item(item)
    assert "categories: [" + ", ".join(NEWS_CATEGORIES) + "]" in default.prompt


def test_label_set_reads_the_list_in_the_input():
    news = get_task("LaMP_2N")
    assert news.label_set(HUFFPOST_INPUT) == HUFFPOST_CATEGORIES
    official = news.query_from_item(ITEMS["LaMP_2N"][0])[0]
    assert news.label_set(official) == NEWS_CATEGORIES
    assert news.label_set("no list here") == NEWS_CATEGORIES
    assert get_task("LaMP_2M").label_set(QUERY_INPUTS["LaMP_2M"]) == MOVIE_TAGS
    assert get_task("LaMP_3").label_set(QUERY_INPUTS["LaMP_3"]) == ("1", "2", "3", "4", "5")
    assert get_task("LaMP_1").label_set(CITATION_INPUT) == ("[1]", "[2]")
    assert "categories: [black voices, business," in news.build_prompt(HUFFPOST_INPUT)


def test_citation_prompt_shows_both_references():
    prompt = get_task("LaMP_1").build_prompt(CITATION_INPUT)
    assert "Deep Residual Learning" in prompt
    assert '[1]: "Batch Normalization" [2]: "Medieval Crop Rotation"' in prompt
    assert prompt.endswith("reference:")


def test_render_context_truncates_each_field_by_words():
    task = dataclasses.replace(get_task("LaMP_4"), context_max_words=3)
    item = {"text": "one two three four five", "title": "a b c d"}
    assert task.render_context([item]) == "article: one two three headline: a b c"
    short = {"text": "one  two", "title": "x"}
    assert task.render_context([short]) == "article: one  two headline: x"


def test_training_item_and_query_truncated_to_input_max_words():
    task = dataclasses.replace(get_task("LaMP_4"), input_max_words=2)
    example = task.example_from_item({"text": "w1 w2 w3 w4", "title": "T"})
    assert "article: w1 w2 headline:" in example.prompt
    assert "w3" not in task.build_prompt(QUERY_INPUTS["LaMP_4"].replace("Friday", "w1 w2 w3"))


def test_epoch_defaults_follow_the_paper():
    assert {n: get_task(n).epochs for n in LAMP} == {
        "LaMP_1": 3, "LaMP_2N": 3, "LaMP_2M": 3, "LaMP_3": 2,
        "LaMP_4": 2, "LaMP_5": 2, "LaMP_6": 2, "LaMP_7": 2,
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [("Sports.\nbecause", "sports"), ('  "Politics" ', "politics"), ("world news", "world news"),
     ("gardening", "gardening"), ("", "")],
)
def test_parse_classification(text, expected):
    assert get_task("LaMP_2N").parse_prediction(text, ("sports", "politics", "world news")) \
        == expected


def test_parse_citation_rating_and_generation():
    assert get_task("LaMP_1").parse_prediction(" [2] ", ()) == "[2]"
    assert get_task("LaMP_1").parse_prediction("1", ()) == "[1]"
    rating = get_task("LaMP_3")
    assert rating.parse_prediction("I'd give it 4 stars", ()) == "4"
    assert rating.parse_prediction("4.0", ()) == "4"
    assert rating.parse_prediction("score: 10 or 3", ()) == "3"
    assert rating.parse_prediction("  no idea ", ()) == "no idea"
    assert get_task("LaMP_4").parse_prediction("\n Budget passes \nExtra", ()) == "Budget passes"


@pytest.mark.parametrize("alias", ["LaMP_2N", "LaMP-2N", "lamp2n", "2N", "2n", "news_categorize"])
def test_aliases_resolve(alias):
    assert get_task(alias) is get_task("LaMP_2N")


def test_unknown_task_lists_known_tasks():
    with pytest.raises(UnknownTaskError) as info:
        get_task("LaMP_9")
    message = str(info.value)
    assert all(name in message for name in LAMP)
    assert "custom task file" in message
    assert isinstance(info.value, KeyError)


def _spec(**overrides) -> TaskSpec:
    base = dict(name="toy", kind="classification", item_fields=("text", "label"),
                query_template="Label: {text}", target_field="label", labels=("a", "b"))
    return TaskSpec(**(base | overrides))


def test_valid_minimal_spec_gets_defaults():
    spec = _spec()
    assert spec.kind is TaskKind.CLASSIFICATION and spec.epochs == 3
    assert spec.item_text_template == "{text}"
    assert spec.context_template == "text: {text} label: {label}"
    assert spec.prompt_template == "{input}"


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"kind": "regression"}, "'regression'"),
        ({"labels": ()}, "needs labels"),
        ({"item_text_template": "{body}"}, "{body}"),
        ({"query_pattern": "(?P<q>[unclosed"}, "not a valid regular expression"),
        ({"query_pattern": "article: (.*)"}, "(?P<q>"),
        ({"labels_pattern": "cats: (.*)"}, "(?P<labels>"),
        ({"epochs": 0}, "epochs"),
        ({"target_field": None}, "go together"),
        ({"target_field": "missing"}, "'missing' is not in item_fields"),
        ({"query_template": "{text} -> {label}"}, "must not contain the answer"),
        ({"item_fields": "text"}, "list of strings"),
        ({"item_fields": ("text", "labels")}, "cannot be a field name"),
        ({"prompt_template": "{0}"}, "not a field name"),
        ({"kind": "rating", "labels": ("low", "high")}, "whole numbers"),
        ({"name": " "}, "name"),
        ({"query_pattern": "(?P<q>x)(?P<labels>y)"}, "rename the group"),
    ],
)
def test_spec_validation_rejects(overrides, needle):
    with pytest.raises(TaskSpecError) as info:
        _spec(**overrides)
    assert needle in str(info.value)
    assert isinstance(info.value, ValueError)


def test_register_task_conflicts_and_replace():
    spec = register_task(_spec(name="test_tasks_toy"))
    assert register_task(_spec(name="test_tasks_toy")) is spec  # identical: no-op
    other = _spec(name="test_tasks_toy", labels=("a", "b", "c"))
    with pytest.raises(ValueError, match="replace=True"):
        register_task(other)
    register_task(other, replace=True)
    assert get_task("test-tasks-toy") == other
    with pytest.raises(ValueError, match="already registered"):
        register_task(dataclasses.replace(get_task("LaMP_4"), description="mine"))


def test_item_missing_a_field_is_named():
    with pytest.raises(ValueError, match="no field 'category'"):
        get_task("LaMP_2N").example_from_item({"text": "x", "title": "y"})
