"""Differential privacy end to end: a real SecAgg+ round (3 SuperNodes, TLS, the embedded
model) with DP on. Each client records the exact statistics it computed; the coordinator
publishes only their noisy sum, whose error must match the noise it planned. One round of
``test_federation``'s harness (~100 s on 2 shared CPU cores).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from test_federation import _expected_sum, run_federation

from oppu.shared.federation.aggregation_modes import SECAGG
from oppu.shared.federation.keys import RoundKey, RunKey

DP_ROUND = {RunKey.DP_EPSILON: 2.0, RunKey.DP_DELTA: 1e-5, RunKey.DP_BUDGET_EPSILON: 5.0,
            RoundKey.DP_MAX_QUERIES: 1}


@pytest.mark.slow
def test_secagg_round_with_dp_returns_noisy_sums_within_the_predicted_scale(
        tmp_path_factory: pytest.TempPathFactory):
    run = run_federation(tmp_path_factory.mktemp("fed-dp"), 3, SECAGG, **DP_ROUND)
    result = run.result
    assert result.aggregation == SECAGG and result.clients == 3 and result.failures == 0
    dp = result.dp
    assert dp["epsilon"] == pytest.approx(2.0, rel=1e-3) and dp["epsilon"] <= 2.0
    assert dp["total_epsilon"] == pytest.approx(dp["epsilon"]) and dp["rounds_accounted"] == 1
    assert dp["share"] == 2  # 3 clients, threshold 2: the noise survives one dropout
    # No dropout: all three shares are in the sum, so its noise is sqrt(3/2) of the target.
    expected_std = math.sqrt(dp["variance"] * 3 / 2) * 2 * dp["stat_bound"] / (1 << 22)
    assert dp["noise_std"] == pytest.approx(expected_std)
    # Each client held out 2 queries and scored only its newest (dp-max-queries 1).
    assert [c.record["evaluated"] for c in run.clients] == [1, 1, 1]
    errors = [s - e for s, e in zip(result.sums, _expected_sum(run), strict=True)]
    assert max(abs(e) for e in errors) < 5.5 * expected_std
    mean_square = sum(e * e for e in errors) / len(errors)  # chi-square with 77 dof, over 77
    assert 0.5 < mean_square / expected_std ** 2 < 1.6
    state = Path(run.clients[0].data_dir).parent / "coordinator"
    ledger = json.loads((state / "dp_budget.json").read_text())
    assert [r["run_id"] for r in ledger["rounds"]] == [result.run_id]
    print(f"DP SecAgg+ round with 3 clients: {run.seconds:.0f} s; noise std {expected_std:.1f}, "
          f"RMS error {math.sqrt(mean_square):.1f}")
