"""Custom tasks from TOML/JSON files: the sample, round trips, and every error a user can make."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from oppu.shared.errors import InputError
from oppu.shared.tasks import (
    TaskKind,
    dump_task_toml,
    get_task,
    load_task_file,
    spec_from_mapping,
)

SAMPLE = Path(__file__).resolve().parents[1] / "shared" / "sample" / "custom_task_example.toml"
LAMP = ["LaMP_1", "LaMP_2N", "LaMP_2M", "LaMP_3", "LaMP_4", "LaMP_5", "LaMP_6", "LaMP_7"]

MINIMAL = """
name = "{name}"
kind = "classification"
item_fields = ["text", "label"]
query_template = "Label this: {{text}}"
target_field = "label"
labels = ["yes", "no"]
"""


def _write(tmp_path: Path, text: str, name: str = "task.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_sample_task_file_loads_and_works():
    spec = load_task_file(SAMPLE)
    assert get_task("recipe-cuisine") is spec
    assert spec.kind is TaskKind.CLASSIFICATION and spec.epochs == 3
    item = {"title": "Pad see ew", "ingredients": "rice noodles, soy sauce", "cuisine": "thai"}
    example = spec.example_from_item(item, [item])
    assert example.target == "thai"
    assert example.prompt.startswith("recipe: Pad see ew ingredients: rice noodles")
    assert example.prompt.endswith("recipe: Pad see ew. ingredients: rice noodles, soy sauce "
                                   "cuisine:")
    query, gold = spec.query_from_item(item, labels=["thai", "italian"])
    assert spec.label_set(query) == ("thai", "italian") and gold == "thai"
    assert spec.retrieval_query(query) == "Pad see ew. ingredients: rice noodles, soy sauce"


@pytest.mark.parametrize("name", LAMP)
def test_builtin_tasks_round_trip_through_toml(name):
    import tomllib

    spec = get_task(name)
    assert spec_from_mapping(tomllib.loads(dump_task_toml(spec))) == spec


def test_toml_file_round_trip_registers(tmp_path):
    spec = dataclasses.replace(get_task("LaMP_2N"), name="my_news", description="ü \"q\" \\ {x}")
    loaded = load_task_file(_write(tmp_path, dump_task_toml(spec)))
    assert loaded == spec and get_task("MY-NEWS") is loaded


def test_json_file_round_trip(tmp_path):
    spec = dataclasses.replace(get_task("LaMP_3"), name="my_rating", epochs=5)
    path = _write(tmp_path, json.dumps(spec.to_dict()), "rating.json")
    assert load_task_file(path) == spec


def test_minimal_file_gets_defaults(tmp_path):
    spec = load_task_file(_write(tmp_path, MINIMAL.format(name="custom_minimal")))
    assert spec.epochs == 3 and spec.item_text_template == "{text}"
    assert spec.build_prompt("Label this: hello") == "Label this: hello"


def test_unknown_key_is_named_with_a_suggestion(tmp_path):
    path = _write(tmp_path, MINIMAL.format(name="typo") + 'lables = ["x"]\ncolour = 1\n')
    with pytest.raises(InputError) as info:
        load_task_file(path)
    message = str(info.value)
    assert str(path) in message and "lables" in message and "did you mean 'labels'" in message
    assert "colour" in message and len(info.value.problems) == 2


def test_missing_required_keys_are_named(tmp_path):
    path = _write(tmp_path, 'description = "nothing else"\n')
    with pytest.raises(InputError) as info:
        load_task_file(path)
    assert {p.field for p in info.value.problems} == {"name", "kind", "item_fields"}
    assert all(p.file == str(path) for p in info.value.problems)


def test_invalid_values_reported_per_field(tmp_path):
    text = MINIMAL.format(name="bad_values").replace('"classification"', '"clasification"')
    text += "epochs = 0\n"
    with pytest.raises(InputError) as info:
        load_task_file(_write(tmp_path, text))
    fields = {p.field for p in info.value.problems}
    assert {"kind", "epochs"} <= fields
    assert "clasification" in str(info.value)


def test_syntax_errors_and_wrong_suffix(tmp_path):
    with pytest.raises(InputError, match="not valid TOML"):
        load_task_file(_write(tmp_path, "name = \n"))
    with pytest.raises(InputError, match="not valid JSON") as info:
        load_task_file(_write(tmp_path, '{\n"name": }', "t.json"))
    assert info.value.problems[0].line == 2
    with pytest.raises(InputError, match=r"\.toml or \.json"):
        load_task_file(_write(tmp_path, "name: x", "t.yaml"))
    with pytest.raises(InputError, match="cannot read"):
        load_task_file(tmp_path / "absent.toml")
    with pytest.raises(InputError, match="one table"):
        load_task_file(_write(tmp_path, "[1, 2]", "list.json"))


def test_version_and_name_collision(tmp_path):
    with pytest.raises(InputError, match="unsupported version"):
        load_task_file(_write(tmp_path, "version = 2\n" + MINIMAL.format(name="v2")))
    with pytest.raises(InputError, match="already registered"):
        load_task_file(_write(tmp_path, MINIMAL.format(name="LaMP_2N")))
    assert get_task("LaMP_2N").name == "LaMP_2N"
