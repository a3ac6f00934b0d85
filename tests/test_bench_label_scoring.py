"""The label-scoring benchmark runs on the sample data and reports every k it was asked."""

from __future__ import annotations

import json

import pytest

from oppu.simulations import bench_label_scoring
from oppu.simulations.quickstart import sample_dir


@pytest.mark.slow
def test_benchmark_reports_each_k_together_and_alone(capsys):
    result = bench_label_scoring.main(["--data", str(sample_dir()), "--queries", "2",
                                       "--k", "0,1"])
    printed = capsys.readouterr().out.splitlines()[-1]
    assert json.loads(printed.removeprefix(bench_label_scoring.JSON_PREFIX)) == result
    assert set(result["by_k"]) == {"0", "1"}
    for row in result["by_k"].values():
        assert row["labels"] == 25 and row["seconds_per_query_together"] > 0
    assert (result["by_k"]["1"]["prompt_tokens_median"]
            > result["by_k"]["0"]["prompt_tokens_median"])
