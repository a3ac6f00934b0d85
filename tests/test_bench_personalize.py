"""Smoke test of the CPU speed benchmark: both pipelines, each in its own process."""

from __future__ import annotations

import json

import pytest

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


def test_repeated_runs_report_each_pipelines_median_run():
    def run(which: str, seconds: float) -> dict:
        return {"pipeline": which, "seconds": seconds, "tokens_per_second": 1000 / seconds,
                "peak_rss_mb": 100.0, "task": "LaMP_2N", "user": "u", "items": 3,
                "tokens_per_epoch": 500, "threads": 2, "device": "cpu", "fingerprint": "f"}

    refs = [run("reference", s) for s in (300.0, 240.0, 260.0)]  # drifting machine
    opts = [run("optimized", s) for s in (50.0, 80.0, 60.0)]
    result = summarize(refs, opts, parse_args(["--repeats", "3"]))
    assert result["reference"]["seconds"] == 260.0 and result["optimized"]["seconds"] == 60.0
    assert result["ratio"] == pytest.approx(260.0 / 60.0)
    assert result["runs"]["wall_speedups"] == pytest.approx([6.0, 3.0, 260.0 / 60.0])
