"""Bad and hostile input: for any bytes or values, the readers return valid data or raise the
project's clear error type (``OppuError``; ``ConfigError``/``InputError`` are also
``ValueError``), never another exception.

Covered: the history JSONL reader, the LaMP directory reader, custom task files, the round
config (from a Flower config record or a run config) and clients' metric statistics. The
generators mix realistic near-valid input with the hostile kind: invalid UTF-8, BOMs, CRLF,
blank lines, deep nesting, huge numbers, NaN/Infinity, lone surrogates, wrong types, missing
fields and duplicate ids. No model is loaded; the whole module runs in well under a minute.
Examples per test come from the hypothesis profile (``tests/conftest.py``): ``fast`` by
default, ``deep`` for ``tests/test_fuzz_depth.py``.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from oppu.shared.block_metric import BlockMetric
from oppu.shared.data import check_history, load_lamp, read_history, select_test_users
from oppu.shared.data.items import check_item
from oppu.shared.data.split import base_users, split_history, user_activity, user_history
from oppu.shared.errors import ConfigError, InputError, OppuError, Problem
from oppu.shared.federation.keys import RoundKey, key_names
from oppu.shared.federation.round_config import RoundConfig, run_config_overrides
from oppu.shared.metrics import MAX_STAT_VALUE, MetricSpec, make_metric
from oppu.shared.tasks import TaskSpec, dump_task_toml, get_task, spec_from_mapping
from oppu.shared.tasks.custom import KNOWN_KEYS, read_task_file

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

TASKS = ("LaMP_2N", "LaMP_3", "LaMP_7")
FIELDS = ("text", "title", "category", "score", "id", "timestamp", "extra")
MAX_MESSAGE = 1000
"""A single problem's message stays short whatever the input (values are quoted briefly)."""

# ---- generators ----------------------------------------------------------------------------
HOSTILE_STRINGS = ["", "  ", "\ud800", "\udfff x", "\ufeff", "sports", "5", "2.5", "1e999",
                   "2024-05-01T00:00:00Z", "9999-99-99", "0001-01-01T00:00:00+14:00",
                   "\x00", "\r\n", "{text}", "a" * 300]
scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.sampled_from([10**400, -(10**400), 2**63, 2**64 + 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20), st.sampled_from(HOSTILE_STRINGS),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=8,
)
items = st.dictionaries(st.sampled_from(FIELDS),
                        st.one_of(st.text(min_size=1, max_size=20), json_values), max_size=7)
ids = st.one_of(st.text(max_size=4), st.integers(-3, 3), json_values)


def _dumps(value: Any, ascii_only: bool) -> bytes:
    """JSON bytes as a careless writer makes them: NaN allowed, surrogates passed raw."""
    text = json.dumps(value, allow_nan=True, ensure_ascii=ascii_only)
    return text.encode("utf-8", "surrogatepass")


HOSTILE_LINES = [
    b"[" * 100_000,  # nesting past the recursion limit
    b'{"a":' * 20_000,
    b'{"text": "x", "extra": ' + b"[" * 400 + b"]" * 400 + b"}",  # deep, yet loads
    b'{"text": ' + b"1" * 5000 + b"}",  # more digits than int() converts
    b'{"text": "x", "id": ' + b"9" * 4300 + b"}",
    b'{"text": "x", "timestamp": ' + b"9" * 400 + b"}",  # too big for a float
    b'{"text": "x", "score": ' + b"9" * 400 + b"}",
    b'{"text": NaN}', b'{"text": "x", "timestamp": Infinity}', b'{"text": "x", "score": -Infinity}',
    b'{"text": "\\ud800"}', b'{"text": "ok", "title": "\\udc00 t", "category": "sports"}',
    b'\xef\xbb\xbf{"text": "bom inside"}', b"\xff\xfe\x00", b'{"text": "\xc3"}',
    b"null", b"[]", b'"text"', b"1e999", b"\r", b"   \t", b'{"text": "a", "text": 5}',
    b'{"id": 1, "text": "a"}', b'{"id": "1", "text": "b"}', b'{"id": [1], "text": "c"}',
    b'{"text": "t", "title": "t", "category": "sports", "score": 3}',
]
near_valid_items = st.fixed_dictionaries(
    {"text": st.text(min_size=1, max_size=8)},
    optional={"title": st.text(min_size=1, max_size=8),
              "category": st.sampled_from(["sports", "politics", "nope"]),
              "score": st.one_of(st.integers(0, 6), st.sampled_from(["4", " 2 ", "3.0"])),
              "id": st.one_of(st.integers(0, 3), st.sampled_from(["0", "1"])),
              "timestamp": st.sampled_from([0, "2024-01-01", 1.7e9, "2024-13-01"])},
)
lines = st.one_of(
    st.builds(_dumps, items, st.booleans()),
    st.builds(_dumps, near_valid_items, st.booleans()),
    st.binary(max_size=48),
    st.sampled_from(HOSTILE_LINES),
)


@st.composite
def history_bytes(draw: st.DrawFn) -> bytes:
    """A JSONL file: LF or CRLF, maybe a BOM, maybe no final newline, maybe blank lines."""
    sep = draw(st.sampled_from([b"\n", b"\r\n"]))
    data = sep.join(draw(st.lists(lines, max_size=8)))
    if draw(st.booleans()):
        data += sep
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    return data


HOSTILE_DOCS = [b"", b"\xef\xbb\xbf[]", b"[" * 100_000, b"[" + b"9" * 5000 + b"]",
                b'{"task": "LaMP_2N", "golds": NaN}', b"\xff\xfe[", b"[1,]", b"{}", b"null"]


def _file(structured: st.SearchStrategy) -> st.SearchStrategy:
    """One file of a LaMP directory: absent, JSON of ``structured``, raw bytes or hostile."""
    return st.one_of(st.none(), st.builds(_dumps, structured, st.booleans()),
                     st.binary(max_size=32), st.sampled_from(HOSTILE_DOCS))


question = st.fixed_dictionaries(
    {"id": ids, "input": st.one_of(st.text(max_size=12), json_values),
     "profile": st.one_of(st.lists(items, max_size=3), json_values)},
    optional={"user_id": ids},
)
random_lamp_files = st.fixed_dictionaries({
    "questions.json": _file(st.one_of(st.lists(st.one_of(question, json_values), max_size=4),
                                      json_values)),
    "outputs.json": _file(st.one_of(
        st.fixed_dictionaries(
            {"task": st.one_of(st.sampled_from([*TASKS, "LaMP_99", "2N"]), json_values),
             "golds": st.one_of(st.lists(st.fixed_dictionaries(
                 {"id": ids, "output": st.one_of(st.text(max_size=8), json_values)}),
                 max_size=4), json_values)}),
        json_values)),
    "users.json": _file(st.one_of(st.dictionaries(st.text(max_size=4),
                                                  st.one_of(st.lists(ids, max_size=3),
                                                            json_values), max_size=3),
                                  json_values)),
    "split.json": _file(st.one_of(st.fixed_dictionaries(
        {"test_users": st.one_of(st.lists(ids, max_size=3), json_values),
         "base_users": st.one_of(st.lists(ids, max_size=3), json_values)}), json_values)),
})


good_items = st.fixed_dictionaries(
    {"text": st.text(min_size=1, max_size=8), "title": st.text(min_size=1, max_size=8),
     "category": st.sampled_from(["sports", "politics"])},
    optional={"id": st.integers(0, 3), "timestamp": st.sampled_from([0, "2024-01-01", 1.7e9])},
)


def _first_item(question: dict[str, Any]) -> dict[str, Any] | None:
    """The first profile item, unless an earlier mutation removed or replaced the profile."""
    profile = question.get("profile")
    if isinstance(profile, list) and profile and isinstance(profile[0], dict):
        return profile[0]
    return None


@st.composite
def near_valid_lamp_files(draw: st.DrawFn) -> dict[str, bytes | None]:
    """A valid LaMP_2N directory with up to two fields of its questions made hostile."""
    count = draw(st.integers(1, 4))
    questions: list[dict[str, Any]] = [
        {"id": f"q{i}", "input": draw(st.text(max_size=10)),
         "profile": draw(st.lists(good_items, max_size=3)),
         "user_id": draw(st.sampled_from(["u1", "u2"]))} for i in range(count)]
    golds = [{"id": f"q{i}", "output": draw(st.sampled_from(["sports", "x"]))}
             for i in range(count)]
    for _ in range(draw(st.integers(0, 2))):
        question = draw(st.sampled_from(questions))
        key = draw(st.sampled_from(["id", "input", "profile", "user_id", "item", "delete"]))
        if key == "delete":
            question.pop(draw(st.sampled_from(sorted(question))), None)
        elif key == "item" and _first_item(question) is not None:
            _first_item(question)[draw(st.sampled_from(FIELDS))] = draw(json_values)
        else:
            question[key] = draw(json_values)
    split = {"test_users": ["u1"], "base_users": ["u2"]}
    return {"questions.json": _dumps(questions, True),
            "outputs.json": _dumps({"task": "LaMP_2N", "golds": golds}, True),
            "users.json": None,
            "split.json": _dumps(split, True) if draw(st.booleans()) else None}


lamp_files = st.one_of(random_lamp_files, near_valid_lamp_files())


@contextmanager
def _workdir() -> Iterator[Path]:
    """A scratch directory per example (hypothesis cannot share pytest's tmp_path)."""
    with tempfile.TemporaryDirectory(prefix="oppu-fuzz-") as name:
        yield Path(name)


def _assert_problems_located(problems: list[Problem], file_suffix: str | None = None) -> None:
    for problem in problems:
        assert isinstance(problem, Problem)
        assert len(str(problem)) < MAX_MESSAGE, str(problem)[:200]
        if file_suffix is not None:
            assert problem.file is not None and problem.file.endswith(file_suffix)


def _assert_usable_item(item: Any, spec: TaskSpec) -> None:
    """What training relies on: an object whose task fields pass the strict item check and
    can be written as UTF-8."""
    assert isinstance(item, dict)
    assert [i for i in check_item(item, spec, allow_empty=False) if not i.warning] == []
    for name in spec.item_fields:
        str(item[name]).encode("utf-8")


# ---- the history reader --------------------------------------------------------------------
@given(data=history_bytes(), task=st.sampled_from(TASKS))
@example(data=b"[" * 100_000, task="LaMP_7")
@example(data=b'{"text": "x", "timestamp": ' + b"9" * 400 + b"}", task="LaMP_7")
@example(data=b'{"text": "x", "score": ' + b"9" * 400 + b"}", task="LaMP_3")
@example(data=b'{"text": "\\ud800"}', task="LaMP_7")
def test_history_reader_never_crashes(data: bytes, task: str) -> None:
    spec = get_task(task)
    with _workdir() as root:
        path = root / "history.jsonl"
        path.write_bytes(data)
        report = check_history(path, spec)
        try:
            assert read_history(path, spec) == report.items
        except InputError as err:
            assert err.problems == report.problems and report.problems
    _assert_problems_located(report.problems + report.warnings, "history.jsonl")
    for problem in report.problems + report.warnings:
        assert problem.line is None or 1 <= problem.line <= report.lines
    for item in report.items:
        _assert_usable_item(item, spec)
    split_history(report.items)  # what training does next must not crash either


def test_history_hostile_lines_named_by_line() -> None:
    """Each crash the fuzzing found, as a fixed case: one problem, on its own line."""
    cases = {
        b"[" * 100_000: "nested too deeply",
        b'{"text": ' + b"1" * 5000 + b"}": "digits",
        b'{"text": NaN}': "NaN",
        b'{"text": "x", "timestamp": ' + b"9" * 400 + b"}": "ISO-8601",
        b'{"text": "\\ud800"}': "UTF-8",
    }
    with _workdir() as directory:
        for number, (line, words) in enumerate(cases.items()):
            path = directory / f"h{number}.jsonl"
            path.write_bytes(b'{"text": "good"}\n' + line + b"\n")
            [problem] = check_history(path, "LaMP_7").problems
            assert problem.line == 2 and words in problem.message, problem


def test_history_path_that_is_a_directory_is_a_problem(tmp_path: Path) -> None:
    [problem] = check_history(tmp_path, "LaMP_7").problems
    assert "directory" in problem.message and problem.file == str(tmp_path)


def test_history_rating_problem_quotes_value_briefly(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    path.write_text(json.dumps({"text": "t", "score": ["x" * 10_000]}) + "\n")
    [problem] = check_history(path, "LaMP_3").problems
    assert problem.field == "score" and len(str(problem)) < 300


# ---- the LaMP reader -----------------------------------------------------------------------
@given(files=lamp_files, task=st.one_of(st.none(), st.sampled_from(TASKS)))
@example(files={"questions.json": b"[" * 100_000}, task="LaMP_2N")
@example(files={"questions.json": b'[{"id": 1, "input": "\\ud800", "profile": []}]'},
         task="LaMP_2N")
def test_lamp_reader_never_crashes(files: dict[str, bytes | None], task: str | None) -> None:
    with _workdir() as root:
        for name, content in files.items():
            if content is not None:
                (root / name).write_bytes(content)
        try:
            dataset = load_lamp(root, task)
        except OppuError as err:  # InputError, or UnknownTaskError for a task passed in
            if isinstance(err, InputError):
                _assert_problems_located(err.problems)
            return
    spec = dataset.spec
    for query in dataset.queries:
        assert isinstance(query.id, str) and isinstance(query.user_id, str)
        assert isinstance(query.input, str)
        query.input.encode("utf-8")
        assert query.gold is None or isinstance(query.gold, str)
        for item in query.profile:
            assert isinstance(item, dict)
            assert [i for i in check_item(item, spec) if not i.warning] == []
    test_users = select_test_users(dataset)
    user_activity(dataset)
    base_users(dataset, test_users)
    for queries in dataset.users().values():
        split_history(user_history(queries))


def test_lamp_reader_hostile_files(tmp_path: Path) -> None:
    """Crashes found: a directory, deep nesting and a 5000-digit number in questions.json."""
    (tmp_path / "questions.json").mkdir()
    with pytest.raises(InputError, match="directory"):
        load_lamp(tmp_path, "LaMP_2N")
    (tmp_path / "questions.json").rmdir()
    for content, words in ((b"[" * 100_000, "nested too deeply"), (b"[" + b"9" * 5000 + b"]",
                                                                   "digits")):
        (tmp_path / "questions.json").write_bytes(content)
        with pytest.raises(InputError, match=words) as info:
            load_lamp(tmp_path, "LaMP_2N")
        assert info.value.problems[0].file.endswith("questions.json")


def test_lamp_unknown_task_in_outputs_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "questions.json").write_text("[]")
    (tmp_path / "outputs.json").write_text('{"task": "LaMP_99", "golds": []}')
    with pytest.raises(InputError) as info:
        load_lamp(tmp_path)
    [problem] = info.value.problems
    assert problem.file.endswith("outputs.json") and problem.field == "task"


# ---- custom task files ---------------------------------------------------------------------
VALID_TASK = {"name": "fuzz_task", "kind": "classification", "item_fields": ["text", "label"],
              "query_template": "Label: {text}", "target_field": "label",
              "labels": ["yes", "no"]}
HOSTILE_TASK_VALUES = ["(" * 5000 + ")" * 5000, "a{99999999999}", "(?P<q>.*)", "(?P<q>",
                       "{text:>999999999}", "{text!r}", "{0}", "{", "{text", "\x7f", "\ud800",
                       "label", "generation", "rating", "(?P<labels>[^]]*)", "{labels}"]
task_values = st.one_of(
    json_values, st.sampled_from(HOSTILE_TASK_VALUES),
    st.lists(st.one_of(st.text(max_size=6), st.sampled_from(["x", "x", "[1]"]), json_values),
             max_size=4),
    st.integers(min_value=-3, max_value=2_000_000),
)
task_keys = st.sampled_from([*KNOWN_KEYS, "lables", ""])
task_mappings = st.one_of(
    st.builds(lambda edits: {**VALID_TASK, **edits},
              st.dictionaries(task_keys, task_values, max_size=3)),
    st.dictionaries(st.one_of(task_keys, st.text(max_size=4)), task_values, max_size=8),
    json_values,
)


def _exercise(spec: TaskSpec) -> None:
    """A spec that loaded must work: round trip through TOML, prompts, examples."""
    toml_text = dump_task_toml(spec)
    toml_text.encode("utf-8")  # what writing the task file does
    assert spec_from_mapping(tomllib.loads(toml_text)) == spec
    json.dumps(spec.to_dict())
    item = dict.fromkeys(spec.item_fields, "some words")
    spec.example_from_item(item, [item])
    query = spec.query_from_item(item)
    text = query[0] if query else "a query"
    spec.build_prompt(text, [item])
    spec.label_set(text)
    spec.retrieval_query(text)
    spec.parse_prediction("yes 3", spec.labels)


@given(mapping=task_mappings)
@example(mapping={**VALID_TASK, "labels": [[1], [1]]})
@example(mapping={**VALID_TASK, "target_field": ["label"]})
@example(mapping={**VALID_TASK, "query_pattern": "(" * 5000 + ")" * 5000})
@example(mapping={**VALID_TASK, "description": "a\x7fb"})
@example(mapping={**VALID_TASK, "description": "\ud800"})
@example(mapping={**VALID_TASK, "labels": ["yes", "yes "]})
def test_task_mapping_never_crashes(mapping: Any) -> None:
    try:
        spec = spec_from_mapping(mapping, source="task.json")
    except InputError as err:
        _assert_problems_located(err.problems)
        return
    _exercise(spec)


@given(content=st.one_of(
    st.binary(max_size=64),
    st.text(max_size=64).map(lambda t: t.encode("utf-8")),
    st.builds(_dumps, task_mappings, st.booleans()),
    st.sampled_from([b"a = " + b"[" * 5000, b"a = " + b"9" * 5000, b"\xef\xbb\xbf{}",
                     b'version = true\nname = "x"', b"[" * 100_000]),
), suffix=st.sampled_from([".json", ".toml"]))
def test_task_file_never_crashes(content: bytes, suffix: str) -> None:
    with _workdir() as root:
        path = root / f"task{suffix}"
        path.write_bytes(content)
        try:
            spec = read_task_file(path)
        except InputError as err:
            _assert_problems_located(err.problems, f"task{suffix}")
            return
    _exercise(spec)


def test_task_file_hostile_cases(tmp_path: Path) -> None:
    """Crashes the fuzzing found, each now an InputError naming the field or file."""
    cases = [
        ({**VALID_TASK, "labels": [[1], [1]]}, "labels"),  # unhashable duplicates
        ({**VALID_TASK, "target_field": ["label"]}, "target_field"),  # unhashable target
        ({**VALID_TASK, "query_pattern": "(" * 5000 + ")" * 5000}, "query_pattern"),
        ({**VALID_TASK, "query_template": "{text:>999999999}"}, "query_template"),
        ({**VALID_TASK, "version": True}, "version"),
        ({**VALID_TASK, "description": 5}, "description"),
        ({**VALID_TASK, "kind": "rating", "labels": ["²"]}, "labels"),
    ]
    for mapping, field in cases:
        with pytest.raises(InputError) as info:
            spec_from_mapping(mapping, source="t.json")
        assert field in {p.field for p in info.value.problems}, (mapping, info.value)
    path = tmp_path / "deep.toml"
    path.write_text("a = " + "[" * 5000)
    with pytest.raises(InputError, match=r"nested too deeply|not valid TOML"):
        read_task_file(path)


def test_dump_task_toml_escapes_delete() -> None:
    spec = spec_from_mapping({**VALID_TASK, "description": "a\x7fb"})
    assert spec_from_mapping(tomllib.loads(dump_task_toml(spec))) == spec


# ---- the round config ----------------------------------------------------------------------
ROUND_KEYS = sorted(key_names(RoundKey))
flower_scalars = st.one_of(
    st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([10**400, 2**32, 2**64]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.binary(max_size=40),
    st.sampled_from(["", "nan", "inf", "1e400", "2", "2.5", " 3 ", '["a", "b"]', "[1]",
                     "[[", "[\"a\", \"a\"]", "LaMP_2N", "sealed", "secagg", "\ud800"]),
)
config_values = st.one_of(flower_scalars, st.lists(flower_scalars, max_size=3))


def _valid_round() -> RoundConfig:
    return RoundConfig(task="LaMP_2N", labels=("a, b", "c"), holdout=2.0, lr=3e-3,
                       aggregation="sealed", sealing_key=bytes(range(32)))


def _exercise_round(cfg: RoundConfig) -> None:
    assert RoundConfig.from_config(cfg.to_config()) == cfg
    cfg.public_summary()
    assert cfg.blocks and cfg.holdout_value >= 0


@given(edits=st.dictionaries(st.sampled_from([*ROUND_KEYS, "junk"]), config_values,
                             max_size=3),
       drop_task=st.booleans())
@example(edits={RoundKey.EPOCHS: float("inf")}, drop_task=False)
@example(edits={RoundKey.LABELS: "[["}, drop_task=False)
@example(edits={RoundKey.HOLDOUT: float("nan")}, drop_task=False)
@example(edits={RoundKey.FORMAT: [1]}, drop_task=False)
def test_round_config_from_record_never_crashes(edits: dict[str, Any], drop_task: bool) -> None:
    config = {**_valid_round().to_config(), **edits}
    if drop_task:
        config.pop(RoundKey.TASK)
    try:
        cfg = RoundConfig.from_config(config)
    except ConfigError as err:
        if len(edits) == 1 and not drop_task:  # the one bad key is named
            [key] = edits
            assert f"'{key}'" in str(err) or key == RoundKey.FORMAT, str(err)
        return
    _exercise_round(cfg)


@given(run_config=st.dictionaries(st.sampled_from([*ROUND_KEYS, "state-dir", "sim-data"]),
                                  config_values, max_size=4))
@example(run_config={RoundKey.LABELS: "[1], [2]"})
@example(run_config={RoundKey.LABELS: "[[" * 5000})
def test_run_config_overrides_never_crash(run_config: dict[str, Any]) -> None:
    try:
        fields = run_config_overrides(run_config)
        cfg = RoundConfig(**{"task": "LaMP_2N", **fields})
    except ConfigError as err:
        assert "'" in str(err)  # names a key
        return
    _exercise_round(cfg)


def test_round_config_crashes_found_are_config_errors() -> None:
    base = _valid_round().to_config()
    for key, value in [(RoundKey.EPOCHS, float("inf")), (RoundKey.EPOCHS, 1.5),
                       (RoundKey.LR, float("nan")), (RoundKey.LABELS, "[["),
                       (RoundKey.LABELS, "5"), (RoundKey.BATCH_SIZE, [8]),
                       (RoundKey.SEED, 2**64), (RoundKey.HOLDOUT, 2.5),
                       (RoundKey.STAT_BOUND, float("inf")), (RoundKey.TASK, 5)]:
        with pytest.raises(ConfigError, match=f"'{key}'"):
            RoundConfig.from_config({**base, key: value})
    with pytest.raises(ConfigError, match="'task' is missing"):
        RoundConfig.from_config({})
    assert run_config_overrides({RoundKey.LABELS: "[1], [2]"})["labels"] == ("[1]", "[2]")


# ---- metric statistics ---------------------------------------------------------------------
LABELS = ("a", "b", "c")
METRICS = {
    "classification": make_metric("classification", LABELS),
    "rating": make_metric("rating"),
    "generation": make_metric("generation"),
    "block": BlockMetric(make_metric("classification", LABELS), ("base", "oppu-k0")),
}


@st.composite
def valid_vectors(draw: st.DrawFn, kind: str) -> list[float]:
    """Statistics some set of examples really produces (generation: F1 sums in [0, n])."""
    metric = METRICS[kind]
    n = draw(st.integers(0, 12))
    if kind == "generation":
        scores = draw(st.lists(st.floats(0, 1), min_size=n, max_size=n))
        correct = draw(st.lists(st.integers(0, 20), min_size=4, max_size=4))
        return [float(n), sum(scores), sum(scores) * draw(st.floats(0, 1)),
                sum(x * x for x in scores), sum(scores) * draw(st.floats(0, 1)),
                float(draw(st.integers(0, 50))), float(draw(st.integers(0, 50))),
                *map(float, correct), *(float(c + draw(st.integers(0, 5))) for c in correct)]
    inner = metric.inner if isinstance(metric, BlockMetric) else metric
    answers = [*LABELS, "zz"] if kind != "rating" else ["1", "3", "5", "x", "4.5"]
    golds = [*LABELS] if kind != "rating" else ["1", "2", "3", "4", "5"]
    blocks = metric.blocks if isinstance(metric, BlockMetric) else ("",)
    vector: list[float] = []
    for _ in blocks:
        preds = draw(st.lists(st.sampled_from(answers), min_size=n, max_size=n))
        gold = draw(st.lists(st.sampled_from(golds), min_size=n, max_size=n))
        vector += inner.to_vector(inner.stats_for(preds, gold))
    return vector


NOT_NUMBERS = [None, "1", [1.0], True, {"x": 1}, b"1", complex(1, 1)]


def _bound_violation(kind: str, vector: list[Any], bump: int) -> str:
    """Break the kind's own bound in ``vector`` (in place); returns the statistic named."""
    if kind in ("classification", "block"):
        vector[1] = vector[0] + bump  # correct > count
        return METRICS[kind].stat_names()[1]
    if kind == "rating":
        vector[:] = [1.0, 2.0 + bump, 1.0]  # abs_err^2 > count * sq_err (Cauchy-Schwarz)
        return "abs_err"
    vector[1] = vector[0] + bump  # the sum of F1 scores > count
    return "rouge1"


@st.composite
def invalid_vectors(draw: st.DrawFn, kind: str) -> tuple[list[Any], str | None]:
    """(vector, name of the statistic the error must name, or None for a length error)."""
    metric: MetricSpec = METRICS[kind]
    vector: list[Any] = list(draw(valid_vectors(kind)))
    names = metric.stat_names()
    how = draw(st.sampled_from(["negative", "nan", "inf", "huge", "not-number", "fraction",
                                "bound", "length"]))
    if how == "length":
        if draw(st.booleans()) and vector:
            vector.pop(draw(st.integers(0, len(vector) - 1)))
        else:
            vector.append(0.0)
        return vector, None
    if how == "bound":
        return vector, _bound_violation(kind, vector, draw(st.integers(1, 5)))
    if how == "fraction":
        index = names.index(draw(st.sampled_from(metric.whole_stat_names())))
        vector[index] += draw(st.sampled_from([0.5, 0.25, 1e-3]))
        return vector, names[index]
    index = draw(st.integers(0, len(vector) - 1))
    vector[index] = {
        "negative": lambda: -draw(st.floats(1e-3, 1e6)),
        "nan": lambda: math.nan,
        "inf": lambda: draw(st.sampled_from([math.inf, -math.inf])),
        "huge": lambda: draw(st.sampled_from([MAX_STAT_VALUE * 10, 1e300, 10**400])),
        "not-number": lambda: draw(st.sampled_from(NOT_NUMBERS)),
    }[how]()
    return vector, names[index]


def _names(name: str, message: str) -> bool:
    """Whether ``message`` names statistic ``name`` (a block's as "block: stat" too)."""
    block, _, stat = name.rpartition("/")
    return name in message or (stat in message and block in message)


@given(data=st.data(), kind=st.sampled_from(sorted(METRICS)))
def test_valid_statistics_are_accepted(data: st.DataObject, kind: str) -> None:
    metric = METRICS[kind]
    vector = data.draw(valid_vectors(kind))
    stats = metric.from_vector(vector)
    assert metric.to_vector(stats) == pytest.approx(vector)
    metric.validate_stats(metric.add(stats, stats))  # sums of valid stats are valid


@given(data=st.data(), kind=st.sampled_from(sorted(METRICS)))
def test_invalid_statistics_are_rejected_naming_the_statistic(data: st.DataObject,
                                                              kind: str) -> None:
    metric = METRICS[kind]
    vector, name = data.draw(invalid_vectors(kind))
    with pytest.raises(InputError) as info:  # an InputError is a ValueError
        metric.from_vector(vector)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    if name is None:
        assert "expected" in message
    else:
        assert _names(name, message), (name, message)


@pytest.mark.parametrize("vector", [None, 5, "abc", object()])
def test_statistics_that_are_not_a_list_are_rejected(vector: Any) -> None:
    with pytest.raises(InputError):
        METRICS["rating"].from_vector(vector)
