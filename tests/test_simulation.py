"""Simulation mode: LaMP test users as virtual clients of a real Flower simulation SuperLink.

The smoke test is the CI-sized configuration of the benchmark: 10 users of a LaMP directory
built from the bundled sample, one capped adapter per user, SecAgg+ over TLS on loopback.
It checks the cohort's secure sum against the users' local records, the trivial baseline
against an independent computation from the data, the report, and resume.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from oppu.client.simulation import safe_name, suite_key, suite_variants, variant_keys
from oppu.shared.block_metric import BlockMetric
from oppu.shared.data import load_lamp, select_test_users, user_history
from oppu.shared.data.cohort import LampCohort
from oppu.shared.federation.round_config import RoundConfig
from oppu.shared.federation.secagg_encoding import snap_whole
from oppu.shared.metrics import InputError, make_metric
from oppu.simulations.quickstart import sample_dir

SMOKE_SUITE = ("base-k0", "rag-k1", "majority", "top-bm25", "oppu-k0")
SMOKE_USERS = 10


def ten_user_lamp_dir(root: Path, *, base_users: bool = True) -> Path:
    """The bundled sample with its 10 most active users as test users (time split kept);
    without ``base_users`` the other users' queries are left out (nothing to adapt on)."""
    target = root / "lamp10"
    target.mkdir()
    for name in ("questions.json", "outputs.json", "users.json"):
        shutil.copy(sample_dir() / name, target / name)
    dataset = load_lamp(target)
    ranked = sorted(dataset.users(), key=lambda u: (-sum(len(q.profile) for q in
                                                         dataset.users()[u]), u))
    test = ranked[:SMOKE_USERS]
    base = [u for u in dataset.users() if u not in test]
    if not base_users:
        kept = {q.id for q in dataset.queries if q.user_id in test}
        for name, key in (("questions.json", None), ("outputs.json", "golds")):
            data = json.loads((target / name).read_text())
            rows = data[key] if key else data
            rows[:] = [row for row in rows if row["id"] in kept]
            (target / name).write_text(json.dumps(data))
        base = []
    (target / "split.json").write_text(json.dumps({"test_users": test, "base_users": base}))
    return target


# ---- units ---------------------------------------------------------------------------------
def test_block_metric_lays_variants_side_by_side_and_validates_each():
    inner = make_metric("classification", ["a", "b"])
    metric = BlockMetric(inner, ["base-k0", "oppu-k0"])
    good = inner.stats_for(["a", "b"], ["a", "a"])
    perfect = inner.stats_for(["a", "a"], ["a", "a"])
    stats = metric.from_vector(inner.to_vector(good) + inner.to_vector(perfect))
    assert metric.stat_names()[0] == "base-k0/count"
    assert metric.per_block(stats)["base-k0"]["accuracy"] == 0.5
    assert metric.per_block(stats)["oppu-k0"]["accuracy"] == 1.0
    vector = metric.to_vector(stats)
    assert inner.to_vector(metric.block(metric.from_vector(vector), "oppu-k0")) \
        == inner.to_vector(perfect)
    bad = list(vector)
    bad[len(inner.stat_names()) + 1] = 5.0  # oppu-k0: correct > count
    with pytest.raises(InputError, match="oppu-k0"):
        metric.from_vector(bad)
    noisy = {k: v + 0.01 for k, v in stats.items()}
    assert snap_whole(metric, noisy, 0.05) == stats
    assert BlockMetric(make_metric("rating"), ["a"]).whole_stat_names() == ["a/count"]
    with pytest.raises(ValueError, match="duplicate"):
        BlockMetric(inner, ["x", "x"])


def test_round_blocks_and_the_variant_of_an_ordinary_round():
    assert RoundConfig(task="LaMP_2N").blocks == ("personal",)
    assert RoundConfig(task="LaMP_2N", suite="base-k0, oppu-k1").blocks == ("base-k0", "oppu-k1")
    assert suite_variants(RoundConfig(task="LaMP_2N", k=2, peft_method="ia3",
                                      profile_mode="pag")) == ("pag-oppu-ia3-k2",)
    with pytest.raises(InputError, match="expected"):
        BlockMetric(make_metric("rating"), ("a", "b")).from_vector([1.0] * 5)


class _Context:
    def __init__(self, run_config: dict):
        self.run_config = run_config


def test_resume_key_ignores_run_specifics_but_not_settings(tmp_path: Path):
    cfg = RoundConfig(task="LaMP_2N", suite="base-k0,oppu-k0")
    ctx = _Context({"sim-data": "/d", "max-history": 8})
    key = suite_key(cfg, ctx)
    assert key == suite_key(replace(cfg, round=7, base_address="h:1", aggregation="sealed",
                                    stat_bound=99.0), ctx)
    assert key != suite_key(replace(cfg, lr=5e-3), ctx)
    assert key != suite_key(replace(cfg, suite="base-k0"), ctx)
    # A variant's cached result does not depend on the suite around it, only on its settings.
    variants = ("base-k0", "oppu-k0")
    assert variant_keys(cfg, ctx, variants)["oppu-k0"] == \
        variant_keys(replace(cfg, suite="oppu-k0,rag-k1"), ctx, variants)["oppu-k0"]
    assert variant_keys(cfg, ctx, variants)["oppu-k0"] != \
        variant_keys(replace(cfg, lr=5e-3), ctx, variants)["oppu-k0"]
    assert key != suite_key(cfg, _Context({"sim-data": "/d", "max-history": 16}))
    assert key != suite_key(cfg, _Context({"sim-data": "/d", "max-history": 8,
                                           "history-shift": 0.5}))


    pooled = tmp_path / "pooled"
    pooled.mkdir()
    (pooled / "adapter_model.safetensors").write_bytes(b"one cohort")
    with_pooled = _Context({"sim-data": "/d", "max-history": 8, "pooled-adapter": str(pooled)})
    first = suite_key(cfg, with_pooled)
    (pooled / "adapter_model.safetensors").write_bytes(b"another cohort")
    assert suite_key(cfg, with_pooled) != first  # same path, other weights: not resumable


def test_user_ids_become_distinct_directory_names():
    assert safe_name("310") == "310"
    assert safe_name("Ann Lee") != safe_name("Ann_Lee")
    assert "/" not in safe_name("../../etc")


def test_cohort_maps_partitions_to_test_users_in_split_order(tmp_path: Path):
    cohort = LampCohort(load_lamp(ten_user_lamp_dir(tmp_path)))
    assert cohort.users == tuple(select_test_users(cohort.dataset))
    user = cohort.user(3)
    assert user.user_id == cohort.users[3] and user.queries
    assert user.history == user_history(user.queries)
    assert len(cohort.labels()) == 25  # every query lists the same 25 categories
    with pytest.raises(ValueError, match="num-supernodes"):
        cohort.user(SMOKE_USERS)


# ---- the smoke run -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory):
    from oppu.shared.llm.training import TrainSettings
    from oppu.shared.personal.peft_methods import PeftSettings
    from oppu.shared.personal.private_adapter import PersonalizeSettings
    from oppu.simulations.simulate import SimulationSettings, run_simulation

    root = tmp_path_factory.mktemp("simulation")
    data = ten_user_lamp_dir(root, base_users=False)  # so it runs on the untuned base
    settings = SimulationSettings(
        users=SMOKE_USERS, suite=SMOKE_SUITE, max_history=8,
        personal=PersonalizeSettings(peft=PeftSettings(alpha=16), train=TrainSettings(
            lr=3e-3, epochs=1, batch_size=4, max_steps=1)),
        timeout=1200.0)
    out = root / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "2")
        table = run_simulation(data, out, settings, plots=True)
    return data, out, settings, table


@pytest.mark.slow
def test_simulation_table_is_the_secure_sum_of_every_users_local_record(smoke):
    data, out, _settings, table = smoke
    assert table["users"] == SMOKE_USERS and table["aggregation"] == "secagg"
    records = [json.loads(p.read_text()) for p in out.glob("users/*/suite-*.json")]
    assert len(records) == SMOKE_USERS
    metric = make_metric("classification", table["labels"])
    queries = sum(r["queries"] for r in records)
    assert queries == sum(len(q) for q in LampCohort(load_lamp(data)).dataset.users().values()
                          if q[0].user_id in {r["user"] for r in records})
    for variant in SMOKE_SUITE:
        summed = metric.sum(metric.from_vector(r["vectors"][variant]) for r in records)
        expected = metric.compute(summed)
        assert table["variants"][variant]["count"] == queries
        assert table["variants"][variant]["accuracy"] == pytest.approx(expected["accuracy"])
        assert table["variants"][variant]["f1"] == pytest.approx(expected["f1"])
        assert table["intervals"][variant] == pytest.approx(metric.interval(summed))
    # Every comparison's test, from the secure sum, is the one the pooled records give.
    block = BlockMetric(metric, SMOKE_SUITE, tuple(table["comparisons"]))
    assert "oppu-k0 vs majority" in table["comparisons"]
    for pair, values in table["comparisons"].items():
        paired = block.paired
        pooled = paired.compute(paired.sum(paired.from_vector(r["pairs"][pair]) for r in records))
        assert values["users"] == pooled["users"] == SMOKE_USERS
        assert (values["a_better"], values["b_better"]) == (pooled["a_better"],
                                                            pooled["b_better"])
        for key in ("mean", "low", "high", "p", "example_p"):
            assert values[key] == pytest.approx(pooled[key], abs=1e-3, nan_ok=True), (pair, key)


@pytest.mark.slow
def test_majority_baseline_matches_an_independent_count_from_the_data(smoke):
    data, _out, settings, table = smoke
    cohort = LampCohort(load_lamp(data))
    correct = total = 0
    for i in range(len(cohort)):
        user = cohort.user(i)
        counts = Counter(str(item["category"]).strip()
                         for item in user.recent_history(settings.max_history))
        top = counts.most_common(1)[0][0]
        correct += sum(q.gold == top for q in user.queries)
        total += len(user.queries)
    assert table["variants"]["majority"]["accuracy"] == pytest.approx(correct / total)


@pytest.mark.slow
def test_simulation_writes_report_and_adapters_and_keeps_the_base_once(smoke):
    _data, out, _settings, table = smoke
    markdown = (out / "report" / "table1.md").read_text()
    for variant in SMOKE_SUITE:
        assert f"`{variant}`" in markdown
    # The data has no base users: the untuned base, and the report says so.
    assert "**The plain base is not task-adapted**: no base-user queries" in markdown
    assert "**The rag-k1 base is not task-adapted**" in markdown
    assert "accuracy 95% CI" in markdown and "McNemar p = " in markdown
    assert json.loads((out / "report" / "table1.json").read_text())["users"] == SMOKE_USERS
    assert (out / "report" / "fig7_similarity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    adapters = list(out.glob("users/*/adapters/LaMP_2N.oppu-k0/adapter_model.safetensors"))
    assert len(adapters) == SMOKE_USERS
    # One base per simulation worker, however many users it plays; memory stays flat.
    records = [json.loads(p.read_text()) for p in out.glob("users/*/suite-*.json")]
    assert {r["worker_model_loads"] for r in records} == {1}
    assert len({r["worker_pid"] for r in records}) < SMOKE_USERS
    assert table["cost"]["users"] == SMOKE_USERS and table["cost"]["resumed"] == 0
    assert table["cost"]["users_per_hour_per_worker"] > 0
    assert table["cost"]["peak_rss_mb_all_processes"] > 0
    # Where each user's time went, and the worker's memory after every user.
    for record in records:
        split = record["time_split"]
        assert split["training"] > 0 and split["evaluation"] > 0
        assert sum(split.values()) == pytest.approx(record["seconds_this_run"], rel=0.05)
        assert record["worker_rss_mb"] > 0 and record["train_item_words_mean"] > 0
    assert set(table["cost"]["time_split"]) >= {"training", "evaluation", "base", "framework"}
    assert "everything but training and evaluation" in markdown
    # The base travelled over the BaseStore (TLS), into one cache all virtual clients share.
    assert [p.name for p in (out / "base-cache").iterdir() if p.is_dir()] \
        == [table["base_version"]]


@pytest.mark.slow
def test_a_rerun_resumes_from_the_users_records_and_recomputes_them_exactly(smoke):
    from oppu.simulations.simulate import run_simulation

    data, out, settings, table = smoke
    records = sorted(out.glob("users/*/suite-*.json"))
    redone = records[:2]  # these two users train and evaluate again: seeded end to end
    old = {p: json.loads(p.read_text()) for p in redone}
    for path in redone:
        path.unlink()
        # Their private adapter trains again; the untrained variants answer from the
        # per-variant results kept on disk (as a suite sharing variants with this one would).
        for cached in (path.parent / "variants").glob("oppu-k0-*.json"):
            cached.unlink()
    kept = {p: p.stat().st_mtime_ns for p in records[2:]}
    again = run_simulation(data, out, settings, plots=False)
    assert {p: p.stat().st_mtime_ns for p in records[2:]} == kept  # nobody else retrained
    for path in redone:
        new = json.loads(path.read_text())
        assert (new["vectors"], new["pairs"]) == (old[path]["vectors"], old[path]["pairs"])
        assert new["variants_cached"] == sorted(set(SMOKE_SUITE) - {"oppu-k0"})
    assert again["variants"] == table["variants"]  # counts: exact after SecAgg+
    # Fractional sums (per-user differences) carry SecAgg+'s stochastic rounding: a rerun's
    # interval ends moved by 0.0013 here. Counts and the tests on them are exact.
    for pair, values in table["comparisons"].items():
        again_values = again["comparisons"][pair]
        assert {k: again_values[k] for k in ("users", "examples", "a_better", "b_better",
                                              "example_p")} == \
            {k: values[k] for k in ("users", "examples", "a_better", "b_better", "example_p")}
        assert again_values == pytest.approx(values, abs=0.01, nan_ok=True)
    assert again["cost"]["resumed"] == SMOKE_USERS - 2
