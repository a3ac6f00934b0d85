"""Table 1, the OPPU comparisons and the figures, on small hand-built results."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from oppu.shared.block_metric import BlockMetric
from oppu.shared.metrics import make_metric
from oppu.shared.paired_stats import PairMetric, split_pair
from oppu.shared.personal.suite import PEFT_SUITE, TABLE1_SUITE, comparison_pairs
from oppu.simulations.figures import activity_groups, adapter_similarity
from oppu.simulations.report import (
    compare_variants,
    ordered_names,
    pooled_metrics,
    report_markdown,
    table1_markdown,
    variant_group,
    variant_label,
    write_report,
)

LABELS = ["a", "b", "c"]
PNG = b"\x89PNG\r\n\x1a\n"


def record(user: str, history: int, runs: dict[str, tuple[list[str], list[str]]],
           kind: str = "classification", labels: list[str] = LABELS) -> dict:
    """A per-user record as a simulated client writes it: (predictions, golds) per variant."""
    metric = make_metric(kind, labels)
    return {
        "user": user, "history_items": history, "train_items": history,
        "queries": len(next(iter(runs.values()))[1]) if runs else 0,
        "labels": labels, "kind": kind, "stat_names": metric.stat_names(),
        "vectors": {v: metric.to_vector(metric.stats_for(p, g)) for v, (p, g) in runs.items()},
        "seconds": dict.fromkeys(runs, 1.0), "adapters": {},
    }


def row(accuracy: float | None, f1: float | None = 0.1, count: float = 6.0) -> dict:
    return {"accuracy": accuracy, "f1": f1, "count": count}


def classification_table(variants: dict[str, dict]) -> dict:
    return {"task": "LaMP_2N", "kind": "classification", "labels": LABELS, "users": 6,
            "aggregation": "secagg", "variants": variants, "seconds_total": 12.5,
            "settings": {"lr": 1e-3}, "base_version": "abc"}


def rating_table(maes: dict[str, float]) -> dict:
    return {"task": "LaMP_3", "kind": "rating", "labels": ["1", "2", "3", "4", "5"],
            "users": 3, "aggregation": "sealed",
            "variants": {v: {"mae": m, "rmse": m + 0.1, "count": 9.0} for v, m in maes.items()}}


def table_rows(markdown: str) -> list[list[str]]:
    """Cells of the Markdown table's body rows."""
    lines = [line for line in markdown.splitlines() if line.startswith("| ")][1:]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


# --- pooled metrics --------------------------------------------------------------------------


def test_pooled_metrics_sums_users_statistics() -> None:
    records = [
        record("u1", 5, {"base-k0": (["a", "b"], ["a", "a"])}),
        record("u2", 9, {"base-k0": (["c"], ["c"])}),
        record("u3", 7, {"oppu-k0": (["b"], ["a"])}),  # did not run base-k0: skipped
    ]
    pooled = pooled_metrics(records, "base-k0")
    assert pooled["count"] == 3
    assert pooled["accuracy"] == pytest.approx(2 / 3)
    # per class F1: a = 2*1/(2+0+1), b = 0 (one false positive), c = 1
    assert pooled["f1"] == pytest.approx((2 / 3 + 0 + 1) / 3)
    assert math.isnan(pooled_metrics(records, "rag-k1")["accuracy"])


def test_pooled_metrics_rejects_mixed_label_orders() -> None:
    records = [record("u1", 5, {"base-k0": (["a"], ["a"])}),
               record("u2", 5, {"base-k0": (["a"], ["a"])}, labels=["c", "b", "a"])]
    with pytest.raises(ValueError, match="u2"):
        pooled_metrics(records, "base-k0")


# --- Table 1 ---------------------------------------------------------------------------------


def test_table1_rows_follow_the_papers_groups_unknown_last() -> None:
    names = ["oppu-ia3-k0", "top-bm25", "my-experiment", "oppu-k1", "pag-oppu-k1", "rag-k2",
             "majority", "pag-k0", "oppu-k0", "random-k1", "pooled-k0", "gpg-k0", "rag-k1",
             "base-k0", "oppu-pt-k0", "gpg-oppu-k0"]
    table = classification_table({n: row(0.5) for n in names})
    rows = table_rows(table1_markdown(table))
    assert [r[2].strip("`") for r in rows] == [
        "base-k0", "random-k1", "rag-k1", "rag-k2", "pag-k0", "gpg-k0",
        "oppu-k0", "oppu-ia3-k0", "oppu-pt-k0", "oppu-k1", "pag-oppu-k1", "gpg-oppu-k0",
        "pooled-k0", "majority", "top-bm25", "my-experiment",
    ]
    groups = [r[0] for r in rows if r[0]]
    assert groups == ["Non-personalized", "RAG", "Profile", "OPPU", "Profile + OPPU",
                      "Baselines", "Other"]
    labels = {r[2].strip("`"): r[1] for r in rows}
    assert labels["rag-k2"] == "RAG (k=2)"
    assert labels["oppu-k0"] == "OPPU LoRA (k=0)"
    assert labels["oppu-ia3-k0"] == "OPPU IA3 (k=0)"
    assert labels["pag-oppu-k1"] == "PAG + OPPU (k=1)"
    assert labels["my-experiment"] == "my-experiment"


def test_table1_bolds_the_best_and_shows_nan_as_na() -> None:
    table = classification_table({
        "base-k0": row(0.4, 0.30), "oppu-k0": row(0.6, 0.20),
        "rag-k1": row(math.nan, None, count=0.0),
    })
    markdown = table1_markdown(table)
    assert "LaMP_2N" in markdown and "6 users" in markdown and "secagg" in markdown
    assert "accuracy ↑" in markdown
    cells = {r[2].strip("`"): r for r in table_rows(markdown)}
    assert cells["oppu-k0"][3:5] == ["**0.600**", "0.200"]
    assert cells["base-k0"][3:5] == ["0.400", "**0.300**"]
    assert cells["rag-k1"][3:6] == ["n/a", "n/a", "0"]


def test_table1_bolds_the_lowest_mae() -> None:
    markdown = table1_markdown(rating_table({"base-k0": 0.5, "oppu-k0": 0.25, "rag-k1": 0.75}))
    assert "MAE ↓" in markdown
    cells = {r[2].strip("`"): r for r in table_rows(markdown)}
    assert cells["oppu-k0"][3] == "**0.250**"
    assert cells["rag-k1"][3] == "0.750"


def test_variant_display_follows_the_suites_grammar() -> None:
    assert variant_group("gpg-oppu-k2") == "Profile + OPPU"
    assert variant_label("gpg-k1") == "GPG (k=1)"
    assert variant_label("oppu-pt-k3") == "OPPU prompt tuning (k=3)"
    assert variant_label("pooled-k1") == "Pooled adapter (k=1)"
    for rejected in ("rag-ia3-k1", "rag-k0", "pag-rag-k1", "oppu-pag-k1"):  # grammar says no
        assert (variant_group(rejected), variant_label(rejected)) == ("Other", rejected)
    # A profile with a non-default PEFT method is a recipe `start --peft ia3 --profile pag`
    # trains, so the grammar names it too.
    assert variant_group("pag-oppu-ia3-k2") == "Profile + OPPU"
    assert variant_label("pag-oppu-ia3-k2") == "PAG + OPPU IA3 (k=2)"
    # The default method and the explicitly named one are both listed, the explicit one after.
    assert ordered_names(["oppu-lora-k0", "oppu-k1", "oppu-k0"]) == [
        "oppu-k0", "oppu-lora-k0", "oppu-k1"]
    assert variant_label("oppu-lora-k0") == variant_label("oppu-k0") == "OPPU LoRA (k=0)"


def test_every_suite_variant_has_a_group() -> None:
    names = dict.fromkeys(TABLE1_SUITE + PEFT_SUITE)
    assert {n: variant_group(n) for n in names if variant_group(n) == "Other"} == {}
    assert sorted(ordered_names(names)) == sorted(names)


# --- comparisons -----------------------------------------------------------------------------


def summed_table(kind: str, users: list[dict[str, tuple[list[str], list[str]]]],
                 labels: list[str] = LABELS) -> dict:
    """A table as the coordinator publishes it: every user's blocks and pairs summed."""
    metric = make_metric(kind, labels)
    names = list(users[0])
    pairs = comparison_pairs(names)
    block = BlockMetric(metric, names, pairs)
    paired = PairMetric(metric)
    vectors = []
    for runs in users:
        golds = next(iter(runs.values()))[1]
        vectors.append([x for n in names for x in metric.to_vector(metric.stats_for(*runs[n]))]
                       + [x for pair in pairs for x in paired.to_vector(paired.user_stats(
                           runs[split_pair(pair)[0]][0], runs[split_pair(pair)[1]][0], golds))])
    sums = block.from_vector([sum(column) for column in zip(*vectors, strict=True)])
    return {"task": "t", "kind": kind, "labels": labels, "users": len(users),
            "variants": block.per_block(sums), "intervals": block.intervals(sums),
            "comparisons": block.comparisons(sums)}


def test_comparisons_say_not_significant_where_the_test_does_not_support_a_win() -> None:
    # The reviewed 100-user run in small: the adapter beats the base on many users and the
    # user's majority label on 15 users while losing on 12 (a gain of a few queries).
    users = []
    for i in range(40):
        gold = ["a", "b", "a"]
        base = (["c", "c", "c"], gold)
        majority = (["a", "a", "a"], gold)
        oppu = (["a", "b", "a"] if i < 15 else ["a", "a", "b"] if i < 27 else ["a", "a", "a"],
                gold)
        users.append({"base-k0": base, "oppu-k0": oppu, "majority": majority})
    table = summed_table("classification", users)
    sentences = compare_variants(table)
    assert [s.split(",")[0] for s in sentences] == [
        "OPPU LoRA (k=0) vs Non-personalized (k=0)", "OPPU LoRA (k=0) vs Majority label",
        "Majority label vs Non-personalized (k=0)"]
    assert sentences[0].endswith("Better, significant.")
    against_majority = sentences[1]
    assert "queries only it got right: 15, only the other: 12" in against_majority
    assert against_majority.endswith("Not significant.")
    markdown = report_markdown(table)
    assert "accuracy 95% CI" in markdown and "Not significant." in markdown
    low, high = table["intervals"]["oppu-k0"]
    assert low < table["variants"]["oppu-k0"]["accuracy"] < high


def test_a_verdict_says_which_test_decides_when_the_two_disagree() -> None:
    # Two users lose all 20 of their queries, ten gain one of two: counted over queries that
    # is 10 against 40 (McNemar: worse), over users a small, insignificant gain.
    users = [{"base-k0": (["a"] * 20, ["a"] * 20), "rag-k2": (["b"] * 20, ["a"] * 20)}
             for _ in range(2)]
    users += [{"base-k0": (["b", "b"], ["a", "b"]), "rag-k2": (["a", "b"], ["a", "b"])}
              for _ in range(10)]
    users += [{"base-k0": (["a", "b"], ["a", "b"]), "rag-k2": (["a", "b"], ["a", "b"])}
              for _ in range(8)]
    (sentence,) = compare_variants(summed_table("classification", users))
    assert "queries only it got right: 10, only the other: 40" in sentence
    assert "+0.150 per user" in sentence
    assert sentence.endswith("Not significant over users, which decides: the test over "
                             "queries alone (p = 2.4e-05) counts one user's queries as "
                             "independent.")


def test_comparisons_of_a_lower_mae_call_it_better() -> None:
    users = [{"base-k0": (["1", "1"], ["4", "5"]), "oppu-k0": (["4", str(4 + i % 2)], ["4", "5"])}
             for i in range(6)]
    (sentence,) = compare_variants(summed_table("rating", users, ["1", "2", "3", "4", "5"]))
    assert sentence.startswith("OPPU LoRA (k=0) vs Non-personalized (k=0), MAE: -3.")
    assert sentence.endswith("Better, significant.")


def test_one_user_gives_a_difference_but_no_test() -> None:
    users = [{"base-k0": (["c"], ["a"]), "oppu-k0": (["a"], ["a"])}]
    assert compare_variants(summed_table("classification", users)) == [
        "OPPU LoRA (k=0) vs Non-personalized (k=0), accuracy: +1.000 per user over 1 user(s): "
        "too few users to test"]


# --- figures ---------------------------------------------------------------------------------


def test_activity_groups_are_tertiles_by_history_length() -> None:
    lengths = {"u1": 50, "u2": 3, "u3": 20, "u4": 8, "u5": 100, "u6": 1}
    groups = activity_groups([record(u, n, {}) for u, n in lengths.items()])
    assert [(name, [r["user"] for r in members]) for name, members in groups] == [
        ("low", ["u6", "u2"]), ("medium", ["u4", "u3"]), ("high", ["u1", "u5"]),
    ]
    assert [name for name, _ in activity_groups([record("u1", 4, {})])] == ["all"]


def write_adapter(folder: Path, tensors: dict[str, np.ndarray]) -> Path:
    folder.mkdir(parents=True)
    save_file({k: np.asarray(v, dtype=np.float32) for k, v in tensors.items()},
              str(folder / "adapter_model.safetensors"))
    return folder


def three_adapters(root: Path) -> dict[str, Path]:
    """u1 and u2 = 2 * u1 point the same way; u3 is orthogonal to both."""
    a, b = np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([1.0, 0.0])
    return {
        "u1": write_adapter(root / "u1", {"lora_A": a, "lora_B": b}),
        "u2": write_adapter(root / "u2", {"lora_A": 2 * a, "lora_B": 2 * b}),
        "u3": write_adapter(root / "u3", {"lora_A": [[2.0, -1.0], [0.0, 0.0]],
                                          "lora_B": [0.0, 5.0]}),
    }


def test_adapter_similarity_is_cosine_over_all_tensors(tmp_path: Path) -> None:
    users, matrix = adapter_similarity(three_adapters(tmp_path))
    assert users == ["u1", "u2", "u3"]
    assert matrix[0, 1] == pytest.approx(1.0)
    assert matrix[0, 2] == pytest.approx(0.0, abs=1e-12)
    assert matrix[1, 2] == pytest.approx(0.0, abs=1e-12)
    assert np.allclose(np.diag(matrix), 1.0) and np.allclose(matrix, matrix.T)


def test_adapter_similarity_reads_bf16_adapters(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file as save_torch

    paths = three_adapters(tmp_path)
    (tmp_path / "bf16").mkdir()
    save_torch({"lora_A": torch.tensor([[2.0, 4.0], [6.0, 8.0]], dtype=torch.bfloat16),
                "lora_B": torch.tensor([2.0, 0.0], dtype=torch.bfloat16)},
               str(tmp_path / "bf16" / "adapter_model.safetensors"))
    _, matrix = adapter_similarity({"u1": paths["u1"], "bf16": tmp_path / "bf16"})
    assert matrix[0, 1] == pytest.approx(1.0)


def test_adapter_similarity_names_the_mismatched_user(tmp_path: Path) -> None:
    paths = three_adapters(tmp_path)
    paths["odd-user"] = write_adapter(tmp_path / "odd", {"lora_A": np.ones(4),
                                                         "lora_B": np.ones(2)})
    with pytest.raises(ValueError, match="odd-user"):
        adapter_similarity(paths)
    with pytest.raises(ValueError, match="missing-user"):
        adapter_similarity({"u1": paths["u1"], "missing-user": tmp_path / "nowhere"})


def test_adapter_similarity_names_the_user_with_a_corrupt_file(tmp_path: Path) -> None:
    paths = three_adapters(tmp_path)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "adapter_model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="corrupt-user"):
        adapter_similarity({"u1": paths["u1"], "corrupt-user": tmp_path / "bad"})
    records = [record(u, 5, {"oppu-k0": (["a"], ["a"])}) for u in ("u1", "corrupt-user")]
    records[0]["adapters"]["oppu-k0"] = str(paths["u1"])
    records[1]["adapters"]["oppu-k0"] = str(tmp_path / "bad")
    table = classification_table({"oppu-k0": row(1.0)})
    paths = write_report(tmp_path / "report", table, records)
    assert "similarity" not in paths
    assert "similarity: not drawn (user 'corrupt-user'" in paths["markdown"].read_text()


# --- the whole report ------------------------------------------------------------------------


def simulated_results(root: Path) -> tuple[dict, list[dict]]:
    """Six users' records (with adapters on disk) and the table pooled from them."""
    adapters = three_adapters(root / "adapters")
    records, runs = [], []
    for i, history in enumerate([3, 5, 10, 20, 40, 80]):
        gold = LABELS[i % 3]
        wrong = LABELS[(i + 1) % 3]
        runs.append({
            "base-k0": ([wrong, gold], [gold, gold]),
            "rag-k1": ([gold, wrong], [gold, gold]),
            "oppu-k0": ([gold, gold], [gold, gold]),
            "oppu-k1": ([gold, wrong if i % 2 else gold], [gold, gold]),
        })
        rec = record(f"user-{i}-with-a-rather-long-identifier", history, runs[-1])
        rec["adapters"]["oppu-k0"] = str(adapters[f"u{i % 3 + 1}"])
        records.append(rec)
    variants = {v: pooled_metrics(records, v) for v in ("base-k0", "rag-k1", "oppu-k0", "oppu-k1")}
    variants["oppu-ia3-k0"] = row(0.55)
    variants["oppu-pt-k0"] = row(math.nan, math.nan, count=0.0)
    variants["majority"] = row(0.6)
    summed = summed_table("classification", runs)
    table = classification_table(variants)
    table.update(comparisons=summed["comparisons"], intervals=summed["intervals"])
    return table, records


def test_write_report_writes_table_json_and_figures(tmp_path: Path) -> None:
    table, records = simulated_results(tmp_path)
    paths = write_report(tmp_path / "report", table, records)
    assert set(paths) == {"markdown", "json", "activity", "k", "peft", "similarity",
                          "comparisons"}
    for name in ("activity", "k", "peft", "similarity", "comparisons"):
        data = paths[name].read_bytes()
        assert data.startswith(PNG) and len(data) > 1000, name
    markdown = paths["markdown"].read_text()
    assert "OPPU LoRA (k=1) vs RAG (k=1), accuracy: +0.250 per user" in markdown
    assert "pooled over all users' queries" in markdown
    assert "fig7_similarity.png" in markdown
    saved = json.loads(paths["json"].read_text())  # strict JSON: no NaN tokens
    assert saved["variants"]["oppu-pt-k0"]["accuracy"] is None
    assert saved["variants"]["oppu-k0"]["accuracy"] == 1.0
    assert saved["settings"] == {"lr": 1e-3}
    assert math.isnan(table["variants"]["oppu-pt-k0"]["accuracy"])  # input left untouched
    assert not [p for p in (tmp_path / "report").iterdir() if p.name.startswith(".")]


def test_write_report_without_data_for_figures_says_why(tmp_path: Path) -> None:
    table = classification_table({"base-k0": row(0.4), "majority": row(0.5)})
    paths = write_report(tmp_path, table)
    assert set(paths) == {"markdown", "json"}
    markdown = paths["markdown"].read_text()
    assert "activity: not drawn (no per-user records given)" in markdown
    assert "peft: not drawn" in markdown
    assert set(write_report(tmp_path / "quiet", table, plots=False)) == {"markdown", "json"}


def test_cost_section_fits_growth_with_history_length(tmp_path):
    from oppu.simulations.cost_report import cost_figure, cost_markdown, growth_fit

    per_user = [{"user": f"u{i}", "train_items": n, "seconds": 10 + 0.5 * n}
                for i, n in enumerate((8, 16, 32, 64))]
    intercept, slope = growth_fit(per_user)
    assert intercept == pytest.approx(10.0) and slope == pytest.approx(0.5)
    assert growth_fit(per_user[:2]) is None
    cost = {"users": 4, "resumed": 1, "round_seconds": 120.0, "users_per_hour_per_worker": 120.0,
            "workers_this_run": 1, "user_seconds_median": 18.0, "user_seconds_max": 42.0,
            "peak_rss_mb_all_processes": 2048.0, "worker_peak_rss_mb_max": 1500.0,
            "per_user": per_user}
    text = "\n".join(cost_markdown(cost))
    assert "120.0 users per hour per worker" in text and "2048 MB" in text
    assert "1500 MB" in text and "0.50 s per training" in text and "(1 answered" in text
    assert cost_figure(cost, tmp_path / "cost.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="fewer than two"):
        cost_figure({"per_user": per_user[:1]}, tmp_path / "none.png")


def test_cost_section_splits_time_and_follows_worker_memory(tmp_path):
    """Appendix B's second half (item length), where the time went, and each worker's
    memory after every user: flat memory reads flat, a leak reads as a slope."""
    from oppu.simulations.cost_report import (
        cost_figure,
        cost_markdown,
        growth_fit,
        memory_growth,
        worker_memory,
    )
    from oppu.simulations.simulate import time_split_of

    per_user = [{"user": f"u{i}", "train_items": 16, "train_item_words_mean": words,
                 "seconds": 5 + 0.25 * words, "worker_pid": 7 + i % 2, "finished": float(i),
                 "worker_rss_mb": 3000.0 + (40.0 * i if i % 2 else 1.0 * (i % 4))}
                for i, words in enumerate((10, 20, 30, 40, 50, 60, 70, 80))]
    assert growth_fit(per_user, "train_item_words_mean") == pytest.approx((5.0, 0.25))
    traces = worker_memory(per_user)
    assert traces["7"] == [3000.0, 3002.0, 3000.0, 3002.0]  # finished order kept
    assert memory_growth({"7": traces["7"]})["rise_mb_max"] == 2.0
    leak = memory_growth(traces)
    assert leak["rise_mb_max"] == 240.0 and leak["slope_mb_per_user_max"] == 80.0

    fresh = [{"seconds_this_run": 10.0, "time_split": {"training": 6.0, "evaluation": 3.0,
                                                       "base": 0.5, "other": 0.5}},
             {"seconds_this_run": 10.0, "time_split": {"training": 7.0, "evaluation": 2.0,
                                                       "other": 1.0}},
             {"seconds_this_run": 5.0}]  # a record from before the split existed
    split = time_split_of(fresh, worker_seconds=30.0)
    assert split == {"training": 13.0, "evaluation": 5.0, "base": 0.5, "other": 1.5,
                     "framework": 5.0}
    assert time_split_of([{"seconds_this_run": 1.0}], 2.0) is None

    cost = {"users": 8, "round_seconds": 60.0, "users_per_hour": 480.0,
            "time_split": split, "per_user": per_user}
    text = "\n".join(cost_markdown(cost))
    assert "training 52.0%" in text and "framework 20.0%" in text
    assert "everything but training and evaluation: 28.0%" in text
    assert "480.0 users per hour in this run" in text
    assert "rose by at most 240 MB" in text and "0.25 s per word" in text
    assert cost_figure(cost, tmp_path / "cost.png").read_bytes()[:4] == b"\x89PNG"


def test_shift_table_sets_each_variant_beside_its_shifted_self():
    from oppu.simulations.shift_report import shift_markdown, shift_rows

    def table(values, **extra):
        return {"task": "LaMP_2N", "kind": "classification", "users": 4,
                "variants": {v: {"accuracy": a, "f1": 0.1, "count": 12.0}
                             for v, a in values.items()}, **extra}

    original = table({"oppu-k0": 0.5, "rag-k1": 0.6, "base-k0": 0.4})
    shifted = table({"oppu-k0": 0.45, "rag-k1": 0.3, "majority": 0.2},
                    settings={"history_shift": 0.5})
    rows = shift_rows(original, shifted)
    assert [r["variant"] for r in rows] == ["rag-k1", "oppu-k0"]  # paper order, shared only
    assert rows[0]["change"] == pytest.approx(-0.3)
    text = shift_markdown(original, shifted)
    assert "| -0.300 |" in text and "0.5 most query-relevant" in text
    with pytest.raises(ValueError, match="different tasks"):
        shift_rows(original, {**shifted, "task": "LaMP_4"})


def test_lora_adapters_compare_by_their_weight_update_not_the_shared_init(tmp_path):
    from safetensors.numpy import save_file

    from oppu.simulations.adapter_similarity import adapter_similarity

    rng = np.random.default_rng(0)
    a = rng.normal(size=(2, 6)).astype(np.float32)  # the seeded init every user shares
    key = "base_model.model.layers.0.self_attn.q_proj.lora_{}.weight"
    users = {}
    for name, b in (("u1", [[1, 0], [0, 0], [0, 0]]), ("u2", [[0, 0], [0, 0], [0, 1]]),
                    ("u3", [[2, 0], [0, 0], [0, 0]])):
        path = tmp_path / name
        path.mkdir()
        save_file({key.format("A"): a, key.format("B"): np.array(b, dtype=np.float32)},
                  str(path / "adapter_model.safetensors"))
        users[name] = path
    names, matrix = adapter_similarity(users)
    assert names == ["u1", "u2", "u3"]
    # Raw tensors would be ~alike (A dominates); the updates B @ A of u1 and u2 share nothing.
    assert matrix[0, 1] == pytest.approx(0.0, abs=1e-6)
    assert matrix[0, 2] == pytest.approx(1.0)


def test_report_warns_of_a_base_below_the_trivial_answer_and_names_the_recipe() -> None:
    table = rating_table({"base-k0": 3.4, "oppu-k0": 3.0})
    table["bases"] = {"plain": {
        "check": {"metric": "mae", "queries": 20, "users": 7, "untuned": 3.6, "adapted": 3.4,
                  "chosen_epochs": 2, "trivial": {"always '5'": 0.375},
                  "beaten_by": ["always '5'"]},
        "recipe": {"lr": 0.003, "epochs": 2, "users": ["a", "b", "c"], "metric": "mae"}}}
    table["settings"] = {"personal": {"train": {"lr": 0.003, "epochs": 2}}}
    markdown = report_markdown(table)
    assert "**Warning: the plain base scores below always '5' on held-out base users**" \
        in markdown
    assert "untuned 3.600, task-adapted 3.400 after 2 epoch(s); always '5' 0.375." in markdown
    assert ("Private-adapter recipe chosen on 3 held-out base users: lr 0.003, 2 epoch(s); the "
            "private adapters trained with lr 0.003 for 2 epoch(s).") in markdown
    assert "Every row runs on one task-adapted base (`plain`)" in markdown
    table["bases"] = {"plain": {"untuned": "no base-user queries with gold answers"}}
    assert "**The plain base is not task-adapted**: no base-user queries" in \
        report_markdown(table)


def test_report_names_the_base_each_row_ran_on() -> None:
    table = rating_table({"base-k0": 0.9, "rag-k1": 0.8, "oppu-k1": 0.7})
    table["variant_bases"] = {"base-k0": "plain", "rag-k1": "rag-k1", "oppu-k1": "rag-k1"}
    table["bases"] = {name: {"version": version * 64} for name, version in
                      (("plain", "a"), ("rag-k1", "b"))}
    markdown = report_markdown(table)
    rows = {line.split("|")[3].strip(" `"): line.split("|")[4].strip()
            for line in markdown.splitlines() if line.startswith("| ") and "`" in line}
    assert rows == {"base-k0": "plain", "rag-k1": "rag-k1", "oppu-k1": "rag-k1"}
    assert "Each row runs on the task-adapted base of its prompt family" in markdown


def test_report_says_what_differential_privacy_cost() -> None:
    table = rating_table({"base-k0": 0.9, "oppu-k0": 0.7})
    assert "Differentially private" not in report_markdown(table)
    table["dp"] = {"epsilon": 1.0, "delta": 1e-5, "total_epsilon": 2.5, "max_queries": 4,
                   "noise_std": 57.4, "metric_noise_std": {"base-k0": 0.02, "oppu-k0": None}}
    markdown = report_markdown(table)
    assert ("**Differentially private**: epsilon 1 (delta 1e-05) this round, 2.5 in total; "
            "each user counts at most 4 queries and every sum carries noise of std 57.4") \
        in markdown
    assert "(noise std of the metrics: base-k0 ±0.020)." in markdown
