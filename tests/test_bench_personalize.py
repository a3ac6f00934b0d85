"""Smoke test of the CPU speed benchmark: both pipelines, each in its own process."""

from __future__ import annotations

import json

import pytest

from oppu.shared.llm.training import autocast_enabled
from oppu.simulations.bench_personalize import JSON_PREFIX, main, parse_args, summarize
from oppu.simulations.quickstart import sample_dir


@pytest.mark.slow
def test_tiny_benchmark_reports_both_pipelines(base, tmp_path, capsys):
    out = tmp_path / "bench.json"
    result = main(["--data", str(sample_dir()), "--items", "4", "--epochs", "1",
                   "--base-model", base.source, "--out", str(out)])

    assert json.loads(out.read_text()) == result
    printed = [line for line in capsys.readouterr().out.splitlines()
               if line.startswith(JSON_PREFIX)]
    assert len(printed) == 1
    assert json.loads(printed[0][len(JSON_PREFIX):]) == result
    for pipeline in ("reference", "optimized"):
        assert result[pipeline]["tokens_per_second"] > 0
        assert result[pipeline]["peak_rss_mb"] > 0
    assert result["identical_examples"]
    assert result["reference"]["tokens"] == result["optimized"]["tokens"]
    assert result["ratio"] > 0
    assert result["ratio"] == pytest.approx(
        result["optimized"]["tokens_per_second"] / result["reference"]["tokens_per_second"])
    # The peak is measured in the dtype oppu trains in here: bf16 where this CPU has native bf16.
    peak = result["matmul_peak"]
    assert peak["gflops"] > 0
    assert peak["dtype"] == ("bfloat16" if autocast_enabled("auto", "cpu") else "float32")
    for pipeline in ("reference", "optimized"):
        run = result[pipeline]
        assert run["flops"] > 0
        assert run["useful_gflops_per_second"] == pytest.approx(
            result["optimized"]["flops"] / run["seconds"] / 1e9)
        assert run["useful_peak_fraction"] == pytest.approx(
            run["useful_gflops_per_second"] / peak["gflops"])
    # The reference recomputes activations (checkpointing) and projects every position onto
    # the vocabulary; oppu does neither, so it executes fewer FLOPs for the same tokens.
    assert result["reference"]["flops"] > result["optimized"]["flops"]


def test_repeated_runs_report_each_pipelines_median_run():
    def run(which: str, seconds: float, peak: float = 100.0) -> dict:
        return {"pipeline": which, "seconds": seconds, "tokens_per_second": 1000 / seconds,
                "peak_rss_mb": 100.0, "task": "LaMP_2N", "user": "u", "items": 3,
                "tokens_per_epoch": 500, "threads": 2, "device": "cpu", "fingerprint": "f",
                "flops": int(6e12 if which == "reference" else 3e12),
                "matmul_peak": {"gflops": peak, "dtype": "float32", "threads": 2,
                                "shape": [1024, 576, 1536], "device": "cpu"}}

    refs = [run("reference", s) for s in (300.0, 240.0, 260.0)]  # drifting machine
    opts = [run("optimized", s) for s in (50.0, 80.0, 60.0)]
    result = summarize(refs, opts, parse_args(["--repeats", "3"]))
    assert result["reference"]["seconds"] == 260.0 and result["optimized"]["seconds"] == 60.0
    assert result["ratio"] == pytest.approx(260.0 / 60.0)
    assert result["runs"]["wall_speedups"] == pytest.approx([6.0, 3.0, 260.0 / 60.0])
    # Rates are the median runs'; the peak is the best any run measured.
    assert result["matmul_peak"]["gflops"] == 100.0
    assert result["optimized"]["useful_gflops_per_second"] == pytest.approx(3e12 / 60 / 1e9)
    assert result["reference"]["useful_gflops_per_second"] == pytest.approx(3e12 / 260 / 1e9)
    assert result["reference"]["counted_gflops_per_second"] == pytest.approx(6e12 / 260 / 1e9)
    assert result["optimized"]["useful_peak_fraction"] == pytest.approx(0.5)


def test_timed_runs_are_not_counted_and_the_flops_come_from_runs_apart(monkeypatch, tmp_path):
    """The FLOP counter slows what it counts (oppu's loop 1.7x): the timed runs run without
    it, and one more run of each pipeline counts the FLOPs."""
    import oppu.simulations.bench_personalize as bench

    calls = []

    def fake_child(which: str, argv) -> dict:
        counting = "--count-flops" in argv
        calls.append((which, counting))
        seconds = 99.0 if counting else (80.0 if which == "reference" else 20.0)
        return {"pipeline": which, "seconds": seconds, "tokens_per_second": 1000 / seconds,
                "peak_rss_mb": 100.0, "task": "LaMP_2N", "user": "u", "items": 3,
                "tokens_per_epoch": 500, "threads": 2, "device": "cpu", "fingerprint": "f",
                "flops": (7 if which == "reference" else 3) * 10**12 if counting else None,
                "matmul_peak": None}

    monkeypatch.setattr(bench, "_run_child", fake_child)
    monkeypatch.setattr(bench, "print_table", lambda result: None)
    result = bench.main(["--repeats", "2", "--out", str(tmp_path / "b.json")])
    assert calls == [("reference", False), ("optimized", False)] * 2 + [
        ("reference", True), ("optimized", True)]
    assert result["wall_speedup"] == 4.0  # from the uncounted runs only
    assert result["reference"]["flops"] == 7 * 10**12
    assert result["optimized"]["gflop"] == 3000.0


def test_flop_counter_counts_cpu_flash_attention_as_torch_counts_any_attention():
    import torch
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    from oppu.simulations.bench_flops import counted_flops

    q = torch.randn(2, 9, 40, 64, requires_grad=True)
    k = torch.randn(2, 3, 40, 64, requires_grad=True)
    v = torch.randn(2, 3, 40, 64, requires_grad=True)
    mask = torch.ones(40, 40, dtype=torch.bool).tril()
    with counted_flops() as flops:
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                               enable_gqa=True)
        out.sum().backward()
    expected = (sdpa_flop_count(q.shape, k.shape, v.shape)
                + sdpa_backward_flop_count(out.shape, q.shape, k.shape, v.shape))
    assert flops["total"] == expected > 0


def test_matmul_peak_is_measured_on_the_given_shapes():
    from oppu.simulations.bench_flops import flop_rates, matmul_peak_gflops

    peak = matmul_peak_gflops(64, 128, rows=(32, 64), seconds=0.01)
    assert peak["gflops"] > 0 and peak["shape"][0] in (32, 64)
    assert sorted(peak["shape"][1:]) == [64, 128]
    assert flop_rates(int(4e9), 2.0, 4.0) == {"gflops_per_second": 2.0, "peak_fraction": 0.5}


def test_the_lean_counter_counts_what_torchs_per_module_counter_counts() -> None:
    import torch

    from oppu.simulations.bench_flops import counted_flops

    layer = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.SiLU(), torch.nn.Linear(32, 4))
    x = torch.randn(8, 16)
    totals = []
    for per_module in (False, True):
        with counted_flops(per_module=per_module) as flops:
            layer(x).sum().backward()
        totals.append(flops["total"])
    assert totals[0] == totals[1] == 3 * 2 * 8 * (16 * 32 + 32 * 4) - 2 * 8 * 16 * 32
