"""The per-user variant suite (the paper's Table 1 for one user) and the pooled baseline.

Model tests use a tiny synthetic LaMP-2M user who tags every plain comedy, action film or
romance "dystopia": the base cannot know that, the user's own history says it. Training is
cut to a few steps of batch 4 (see tests/test_personalization.py for why lr 3e-3, alpha 16).
"""

from __future__ import annotations

import pytest
from helpers import DYSTOPIA_MOVIES_SHORT as MOVIES
from helpers import fast_lora

from oppu.client.adapter_store import AdapterStore
from oppu.shared.llm.training import TrainSettings
from oppu.shared.metrics import make_metric
from oppu.shared.personal.adapter_meta import history_labels
from oppu.shared.personal.peft_methods import PeftSettings
from oppu.shared.personal.pipeline import heldout_queries
from oppu.shared.personal.pipeline import run_variants as run_suite
from oppu.shared.personal.recipe import PersonalizeSettings
from oppu.shared.personal.suite import (
    PEFT_SUITE,
    TABLE1_SUITE,
    parse_suite,
    supported_variants,
)
from oppu.shared.personal.variants import Variant, parse_variant
from oppu.shared.tasks import get_task
from oppu.simulations import pooled

SETTINGS = fast_lora(batch_size=4, max_steps=6, max_length=192)

TRAIN = 10
USER_VARIANTS = ("base-k0", "rag-k1", "random-k1", "majority", "top-bm25", "oppu-k0")


def _user(tag: str = "dystopia", movies=MOVIES, train: int = TRAIN):
    task = get_task("LaMP_2M")
    items = [{"description": text, "tag": tag} for text in movies]
    history, heldout = items[:train], items[train:]
    labels = history_labels(task, history)
    return task, history, heldout_queries(task, history, heldout, labels), labels


# ---- grammar ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name, expected", [
    ("base-k0", Variant("base-k0", "base", 0)),
    ("random-k1", Variant("random-k1", "random", 1)),
    ("rag-k4", Variant("rag-k4", "rag", 4)),
    ("pag-k0", Variant("pag-k0", "profile", 0, "pag")),
    ("gpg-k2", Variant("gpg-k2", "profile", 2, "gpg")),
    ("oppu-k1", Variant("oppu-k1", "oppu", 1, "none", "lora")),
    ("oppu-lora-k0", Variant("oppu-lora-k0", "oppu", 0, "none", "lora")),
    ("oppu-ia3-k0", Variant("oppu-ia3-k0", "oppu", 0, "none", "ia3")),
    ("oppu-pt-k2", Variant("oppu-pt-k2", "oppu", 2, "none", "prompt_tuning")),
    ("pag-oppu-k1", Variant("pag-oppu-k1", "oppu", 1, "pag", "lora")),
    ("gpg-oppu-k0", Variant("gpg-oppu-k0", "oppu", 0, "gpg", "lora")),
    # A profile with a non-default method: what `--peft ia3 --profile pag` trains.
    ("pag-oppu-ia3-k0", Variant("pag-oppu-ia3-k0", "oppu", 0, "pag", "ia3")),
    ("pooled-k0", Variant("pooled-k0", "pooled", 0)),
    ("majority", Variant("majority", "majority")),
    ("top-bm25", Variant("top-bm25", "top-bm25")),
])
def test_variant_names_parse(name: str, expected: Variant) -> None:
    variant = parse_variant(name)
    assert variant == expected
    assert variant.trains == (expected.family == "oppu")


@pytest.mark.parametrize("name", ["rag-k0", "random-k0", "oppu-foo-k1", "kitten", "base-k1",
                                  "rag-k01", "oppu-k", "oppu-pag-k0", "RAG-k1", ""])
def test_invalid_variant_names_are_rejected_by_name(name: str) -> None:
    with pytest.raises(ValueError, match="Valid forms") as err:
        parse_variant(name)
    assert repr(name) in str(err.value)


def test_suites_parse_in_order_and_reject_duplicates() -> None:
    assert [v.name for v in parse_suite(TABLE1_SUITE)] == list(TABLE1_SUITE)
    assert [v.name for v in parse_suite(" base-k0, oppu-k0 ,")] == ["base-k0", "oppu-k0"]
    assert parse_suite(",".join(PEFT_SUITE)) == parse_suite(PEFT_SUITE)
    assert parse_variant("oppu-k0").adapter_key == parse_variant("oppu-lora-k0").adapter_key
    with pytest.raises(ValueError, match="rag-k1"):
        parse_suite("rag-k1,base-k0,rag-k1")
    with pytest.raises(ValueError, match="kitten"):
        parse_suite(["base-k0", "kitten"])
    with pytest.raises(ValueError, match="empty"):
        parse_suite(" , ")


def test_supported_variants_drop_what_a_task_cannot_have() -> None:
    def names(task_name: str) -> set[str]:
        kept = supported_variants(get_task(task_name), TABLE1_SUITE)
        return set(TABLE1_SUITE) - {v.name for v in kept}

    assert names("LaMP_2M") == set()
    assert names("LaMP_3") == set()
    assert names("LaMP_4") == {"majority"}
    assert names("LaMP_1") == {"majority", "top-bm25"}  # its history items carry no label


def test_unsupported_or_unready_variants_fail_before_any_work() -> None:
    task, history, queries, _ = _user()
    with pytest.raises(ValueError, match=r"pooled-k0.*pooled_adapter"):
        run_suite(None, None, task, history, queries, ["base-k0", "pooled-k0"], SETTINGS)
    with pytest.raises(ValueError, match="majority"):
        run_suite(None, None, get_task("LaMP_4"), [{"text": "t", "title": "h"}], [],
                  "majority", SETTINGS)


def test_profiles_and_adapters_are_made_once_and_wired_per_variant(monkeypatch) -> None:
    """Stubbed model calls: which adapters train, with what, and which profile each sees."""
    from oppu.shared.personal import user_run as suite
    from oppu.shared.personal.evaluation import EvalResult

    task, history, queries, labels = _user()
    metric = make_metric(task.kind, labels)
    profiles, trained, detached, evaluated = [], [], [], []

    def fake_profile(model, tokenizer, task, history, mode, store):
        profiles.append(mode)
        return None if mode == "none" else f"{mode} profile"

    def fake_evaluate(model, tokenizer, task, queries, *, k, profile, labels, retrieval="bm25",
                      show_progress=False, prior=None):
        evaluated.append((model, k, profile, retrieval))
        stats = metric.stats_for(["dystopia"] * len(queries), [q.gold for q in queries])
        return EvalResult(tuple(labels), stats, metric.compute(stats))

    monkeypatch.setattr(suite, "user_profile", fake_profile)
    monkeypatch.setattr(suite, "evaluate_queries", fake_evaluate)
    monkeypatch.setattr(suite, "attach_fresh_adapter", lambda model, peft, seed: peft.method)
    monkeypatch.setattr(suite, "detach_adapter", detached.append)
    monkeypatch.setattr(suite, "train_private_adapter", lambda model, tok, task, history, s,
                        **kw: trained.append((s.peft.method, s.k, s.profile, kw["profile"])))

    outcome = run_suite(None, None, task, history, queries,
                        "pag-k0,pag-k1,pag-oppu-k0,oppu-k0,oppu-lora-k0,oppu-pt-k2,"
                        "gpg-oppu-k1,random-k2", SETTINGS, labels=labels)

    assert sorted(profiles) == ["gpg", "none", "pag"]  # one per mode, however many use it
    assert trained == [("lora", 0, "pag", "pag profile"), ("lora", 0, "none", None),
                       ("prompt_tuning", 2, "none", None), ("lora", 1, "gpg", "gpg profile")]
    assert detached == ["lora", "lora", "prompt_tuning", "lora"]
    assert evaluated == [(None, 0, "pag profile", "bm25"), (None, 1, "pag profile", "bm25"),
                         ("lora", 0, "pag profile", "bm25"), ("lora", 0, None, "bm25"),
                         ("prompt_tuning", 2, None, "bm25"), ("lora", 1, "gpg profile", "bm25"),
                         (None, 2, None, "random")]
    assert outcome.adapters == {}  # no store: nothing saved
    assert len(outcome.vector(metric)) == 8 * len(metric.stat_names())


def test_each_variant_runs_on_its_familys_base_and_the_plain_base_writes_profiles(
        monkeypatch) -> None:
    """The paper's per-family bases: stubbed model calls record which base each variant
    evaluates and trains on, and which model wrote the profile."""
    from oppu.shared.personal import user_run as suite
    from oppu.shared.personal.evaluation import EvalResult
    from oppu.shared.personal.suite import suite_bases

    task, history, queries, labels = _user()
    metric = make_metric(task.kind, labels)
    writers, evaluated, trained_on = [], {}, []

    def fake_profile(model, tokenizer, task, history, mode, store):
        writers.append((model, mode))
        return None if mode == "none" else f"{mode} profile"

    def fake_evaluate(model, tokenizer, task, queries, *, k, profile, labels, retrieval="bm25",
                      show_progress=False, prior=None):
        evaluated[len(evaluated)] = (model, k, profile)
        stats = metric.stats_for(["dystopia"] * len(queries), [q.gold for q in queries])
        return EvalResult(tuple(labels), stats, metric.compute(stats))

    def attach(model, peft, seed):
        trained_on.append(model)
        return f"adapter on {model}"

    monkeypatch.setattr(suite, "user_profile", fake_profile)
    monkeypatch.setattr(suite, "evaluate_queries", fake_evaluate)
    monkeypatch.setattr(suite, "attach_fresh_adapter", attach)
    monkeypatch.setattr(suite, "detach_adapter", lambda model: None)
    monkeypatch.setattr(suite, "train_private_adapter", lambda *a, **kw: None)

    names = "base-k0,random-k1,rag-k1,pag-k0,gpg-k0,oppu-k0,oppu-k1,pag-oppu-k0,majority"
    assert suite_bases(names) == ("plain", "rag-k1", "profile-k0")
    bases = {"plain": "PLAIN", "rag-k1": "RAG1", "profile-k0": "PROFILE0"}
    run_suite("PLAIN", None, task, history, queries, names, SETTINGS, labels=labels,
              bases=bases)
    assert [model for model, _k, _p in evaluated.values()] == [
        "PLAIN", "RAG1", "RAG1", "PROFILE0", "PROFILE0", "adapter on PLAIN", "adapter on RAG1",
        "adapter on PROFILE0"]
    assert trained_on == ["PLAIN", "RAG1", "PROFILE0"]
    # One profile per mode, written by the plain base, whichever base reads it.
    assert writers == [("PLAIN", "none"), ("PLAIN", "pag"), ("PLAIN", "gpg")]
    with pytest.raises(ValueError, match="No profile-k0 base"):
        run_suite("PLAIN", None, task, history, queries, names, SETTINGS, labels=labels,
                  bases={"plain": "PLAIN", "rag-k1": "RAG1"})


@pytest.mark.slow
def test_the_base_is_clean_when_a_variant_fails(base, monkeypatch) -> None:
    from oppu.shared.personal import user_run as suite

    def broken(*args, **kwargs):
        raise RuntimeError("training failed")

    task, history, queries, labels = _user()
    keys = set(base.model.state_dict())
    monkeypatch.setattr(suite, "train_private_adapter", broken)
    for variant in ("oppu-k0", "oppu-ia3-k0", "oppu-pt-k0"):
        with pytest.raises(RuntimeError, match="training failed"):
            run_suite(base.model, base.tokenizer, task, history, queries, variant, SETTINGS,
                      labels=labels)
        assert set(base.model.state_dict()) == keys, variant


# ---- one user, real model ------------------------------------------------------------------


@pytest.fixture(scope="module")
def user_suite(base, tmp_path_factory):
    import torch

    task, history, queries, labels = _user()
    store = AdapterStore(tmp_path_factory.mktemp("suite-user"))
    before = {n: t.clone() for n, t in base.model.state_dict().items()}
    outcome = run_suite(base.model, base.tokenizer, task, history, queries,
                        (*USER_VARIANTS, "oppu-lora-k0"), SETTINGS, labels=labels, store=store)
    after = base.model.state_dict()
    clean = after.keys() == before.keys() and all(torch.equal(after[n], before[n])
                                                   for n in before)
    print(f"\nsuite seconds: { {v: round(s, 1) for v, s in outcome.seconds.items()} }")
    return outcome, make_metric(task.kind, labels), len(queries), clean


@pytest.mark.slow
def test_every_variant_scores_every_query(user_suite) -> None:
    outcome, metric, n_queries, _ = user_suite
    assert list(outcome.results) == [*USER_VARIANTS, "oppu-lora-k0"]
    assert (outcome.train_items, outcome.queries) == (TRAIN, n_queries)
    for name, result in outcome.results.items():
        assert result.metrics["count"] == n_queries, name
    assert len(outcome.vector(metric)) == len(outcome.results) * len(metric.stat_names())


@pytest.mark.slow
def test_trivial_baselines_and_the_personal_adapter_beat_the_base(user_suite) -> None:
    outcome, _, _, _ = user_suite
    accuracy = {name: r.metrics["accuracy"] for name, r in outcome.results.items()}
    print(f"\naccuracy: {accuracy}")
    assert accuracy["majority"] == 1.0
    assert accuracy["top-bm25"] == 1.0
    assert accuracy["oppu-k0"] > accuracy["base-k0"]


@pytest.mark.slow
def test_variants_sharing_an_adapter_train_it_once(user_suite) -> None:
    outcome, _, _, _ = user_suite
    assert outcome.results["oppu-lora-k0"].predictions == outcome.results["oppu-k0"].predictions
    assert outcome.adapters == {"oppu-k0": outcome.adapters["oppu-k0"],
                                "oppu-lora-k0": outcome.adapters["oppu-k0"]}
    assert outcome.adapters["oppu-k0"].endswith("LaMP_2M.oppu-k0")
    assert outcome.seconds["oppu-lora-k0"] < outcome.seconds["oppu-k0"] / 10


@pytest.mark.slow
def test_the_base_is_clean_after_the_suite(base, user_suite) -> None:
    from peft import PeftModel

    assert user_suite[3], "base weights or modules changed"
    assert not isinstance(base.model, PeftModel)
    assert not any("lora" in name for name, _ in base.model.named_modules())


# ---- pooled baseline -----------------------------------------------------------------------


@pytest.mark.slow
def test_pooled_adapter_trains_once_resumes_and_evaluates(base, tmp_path, monkeypatch) -> None:
    import torch

    task, history_a, queries, labels = _user("dystopia", MOVIES[:6], train=4)
    _, history_b, _, _ = _user("romance", MOVIES[6:10], train=4)
    settings = PersonalizeSettings(
        peft=PeftSettings(method="lora", r=8, alpha=16),
        train=TrainSettings(lr=3e-3, epochs=1, batch_size=4, max_steps=2, max_length=128))
    out = tmp_path / "pooled"
    before = {n: t.clone() for n, t in base.model.state_dict().items()}

    path = pooled.train_pooled_adapter(base.model, base.tokenizer, task, [history_a, history_b],
                                       settings, out, labels=labels, show_progress=False)

    assert path == out
    assert {"adapter_model.safetensors", "adapter_config.json",
            pooled.METADATA_FILE} <= {p.name for p in out.iterdir()}
    mtime = (out / "adapter_model.safetensors").stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("the pooled adapter was trained again")

    monkeypatch.setattr(pooled, "train_on_examples", no_training)
    again = pooled.train_pooled_adapter(base.model, base.tokenizer, task,
                                        [history_a, history_b], settings, out, labels=labels,
                                        show_progress=False)
    assert again == out
    assert (out / "adapter_model.safetensors").stat().st_mtime_ns == mtime
    other = pooled.pooled_key(base.model, task, [history_a, history_b],
                              PersonalizeSettings(peft=settings.peft), labels)
    assert other != pooled.pooled_key(base.model, task, [history_a, history_b], settings, labels)

    outcome = run_suite(base.model, base.tokenizer, task, history_a, queries, "pooled-k0",
                        settings, labels=labels, pooled_adapter=path)
    assert outcome.results["pooled-k0"].metrics["count"] == len(queries) == 2
    after = base.model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[n], before[n]) for n in before)
