"""Smoke test of the CPU speed benchmark: both pipelines, each in its own process."""

from __future__ import annotations

import json

import pytest

from oppu.simulations.bench_personalize import JSON_PREFIX, main
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
