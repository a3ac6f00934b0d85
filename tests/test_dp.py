"""Differential privacy: contribution bounds, Skellam noise, accounting, budget, noisy results.

Fast: no model, no Flower round (the end-to-end round is ``test_dp_federation.py``).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import dp_accounting
import numpy as np
import pytest
from flwr.app import Context, RecordDict

from oppu.client.client_app import upload_vector
from oppu.coordinator import server_app
from oppu.coordinator.dp_budget import BudgetExceeded, charge, read_ledger, total_epsilon
from oppu.coordinator.dp_round import plan_dp_round
from oppu.coordinator.state import StateDir
from oppu.shared.block_metric import BlockMetric
from oppu.shared.dp_bounds import bound_contribution, contribution_bounds
from oppu.shared.errors import ConfigError
from oppu.shared.federation.dp_mechanism import (
    RDP_ORDERS,
    grid_scale,
    integer_sensitivities,
    min_survivors,
)
from oppu.shared.federation.dp_noise import privatize, skellam
from oppu.shared.federation.dp_options import DpSettings, dp_run_config
from oppu.shared.federation.keys import RoundKey, RunKey, SimKey
from oppu.shared.federation.round_config import RoundConfig
from oppu.shared.federation.secagg_encoding import encode_stats, secagg_shares
from oppu.shared.metrics import make_metric
from oppu.shared.noisy_stats import primary_noise_std, widened_interval
from oppu.shared.paired_stats import PairMetric

LABELS = tuple(f"label{i}" for i in range(25))  # the LaMP-2N-like cohort's 25 categories
TINY = Path(__file__).parent / "fixtures" / "lamp2n_tiny"


def _round(**fields) -> RoundConfig:
    return RoundConfig(task="LaMP_2N", labels=LABELS, **fields)


def _user_vector(rng: np.random.Generator, metric, queries: int) -> list[float]:
    golds = rng.choice(LABELS, queries).tolist()
    predictions = [g if rng.random() < 0.6 else str(rng.choice(LABELS)) for g in golds]
    return metric.to_vector(metric.stats_for(predictions, golds))


# ---- DP off: nothing changes ---------------------------------------------------------------
def test_dp_off_leaves_round_and_vectors_as_they_were():
    cfg = _round()
    assert plan_dp_round({}, cfg, "secagg", 5) == (cfg, None)
    assert dp_run_config(DpSettings()) == {}
    vector = _user_vector(np.random.default_rng(0), cfg.metric(), 7)
    assert upload_vector(vector, cfg, sealed=True) is vector
    assert upload_vector(vector, cfg, sealed=False) == encode_stats(vector, cfg.stat_bound,
                                                                    cfg.clip)
    assert RoundConfig.from_config(cfg.to_config()) == cfg


# ---- contribution bounds -------------------------------------------------------------------
def test_bounding_caps_queries_keeps_the_users_accuracy_and_the_l2_sensitivity():
    rng = np.random.default_rng(1)
    metric = make_metric("classification", LABELS)
    bounds = contribution_bounds(metric, 4)
    assert bounds.l2 == pytest.approx(math.sqrt(6) * 4)  # replace-one, sqrt(2) * sqrt(3) m
    vectors = [bound_contribution(metric, _user_vector(rng, metric, int(q)), 4)
               for q in rng.integers(0, 20, 200)]
    for raw_queries in (9, 17):
        raw = _user_vector(rng, metric, raw_queries)
        kept = dict(zip(metric.stat_names(), bound_contribution(metric, raw, 4), strict=True))
        before = metric.compute(dict(zip(metric.stat_names(), raw, strict=True)))
        assert kept["count"] == pytest.approx(4)
        assert metric.compute(kept)["accuracy"] == pytest.approx(before["accuracy"])
    worst = max(np.linalg.norm(np.subtract(a, b)) for a in vectors for b in vectors[:40])
    assert worst <= bounds.l2 + 1e-9
    assert max(max(v) for v in vectors) <= 4 + 1e-9


def test_a_suite_bounds_every_block_and_its_pairs():
    inner = make_metric("classification", LABELS)
    metric = BlockMetric(inner, ("a", "b"), ("a vs b",))
    bounds = contribution_bounds(metric, 3)
    pair = contribution_bounds(PairMetric(inner), 3)
    assert bounds.l2 == pytest.approx(math.sqrt(2 * (math.sqrt(6) * 3) ** 2 + pair.l2 ** 2))
    assert len(bounds.per_stat) == len(metric.stat_names())


# ---- noise ---------------------------------------------------------------------------------
def test_skellam_noise_has_the_configured_variance():
    draws = skellam(np.random.default_rng(2), 2500.0, 400_000)
    assert draws.dtype == np.int64
    assert abs(draws.mean()) < 5 * 50 / math.sqrt(len(draws))
    assert draws.var() == pytest.approx(2500.0, rel=0.02)


@pytest.mark.parametrize("clients", [3, 7, 11, 30])
def test_surviving_clients_carry_at_least_the_target_noise(clients: int):
    """Each client adds variance/share; any sum Flower still unmasks has >= variance."""
    cfg = _round(dp_max_queries=4, dp_variance=4.0e6, dp_share=min_survivors(clients))
    rng = np.random.default_rng(clients)
    zero = [0.0] * len(cfg.metric().stat_names())
    scale = grid_scale(cfg.stat_bound)
    survivors = min_survivors(clients)
    sums = np.array([np.sum([privatize(zero, cfg, sealed=False, rng=rng)
                             for _ in range(survivors)], axis=0) for _ in range(120)]) * scale
    assert sums.var() == pytest.approx(cfg.dp_variance, rel=0.05)
    sealed = np.array([privatize(zero, cfg, sealed=True, rng=rng) for _ in range(120)]) * scale
    assert sealed.var() == pytest.approx(cfg.dp_variance, rel=0.05)  # local DP: all of it


@pytest.mark.parametrize("clients", [3, 5, 11, 12, 40, 101])
def test_min_survivors_is_the_fewest_flower_unmasks(clients: int):
    """Flower's ring: every node needs ``threshold`` live neighbours (itself included)."""
    shares, threshold = secagg_shares(clients)
    half = shares // 2
    fewest = min_survivors(clients)
    # Survivors spread evenly round the ring meet every node's threshold ...
    alive = {int(i * clients / fewest) for i in range(fewest)}
    live_neighbours = [sum((n + o) % clients in alive for o in range(-half, half + 1))
                       for n in range(clients)]
    assert len(alive) == fewest and min(live_neighbours) >= threshold
    # ... and fewer never can: the neighbourhoods count each survivor `shares` times.
    assert (fewest - 1) * shares < clients * threshold


def test_the_grid_noise_is_integer_steps():
    cfg = _round(dp_max_queries=4, dp_variance=1.0e4, dp_share=2)
    noisy = np.array(privatize([0.5] * len(cfg.metric().stat_names()), cfg, sealed=False,
                               rng=np.random.default_rng(3))) * grid_scale(cfg.stat_bound)
    assert np.allclose(noisy, np.round(noisy))


# ---- accounting ----------------------------------------------------------------------------
def _direct_epsilon(variance: float, l2: float, l1: float, delta: float, rounds: int) -> float:
    """The Skellam bound as zCDP, composed by dp-accounting directly."""
    rho = l2 ** 2 / (2 * variance) + l2 ** 2 / (2 * variance ** 2)
    xi = max(0.0, (6 * l1 - l2 ** 2) / (4 * variance ** 2))
    accountant = dp_accounting.rdp.RdpAccountant(
        orders=RDP_ORDERS, neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
    accountant.compose(dp_accounting.ZCDpEvent(rho, xi), rounds)
    return accountant.get_epsilon(delta)


def test_planned_epsilon_and_ledger_match_dp_accounting(tmp_path: Path):
    cfg = _round(dp_max_queries=4)
    planned, plan = plan_dp_round({RunKey.DP_EPSILON: 1.0, RunKey.DP_DELTA: 1e-6}, cfg,
                                  "secagg", 10)
    assert plan is not None and plan.share == min_survivors(10) == planned.dp_share
    l2, l1 = integer_sensitivities(contribution_bounds(cfg.metric(), 4), planned.stat_bound)
    direct = _direct_epsilon(planned.dp_variance, l2, l1, 1e-6, 1)
    assert plan.epsilon == pytest.approx(direct, rel=1e-12)
    assert 0.999 < plan.epsilon <= 1.0
    state = StateDir(tmp_path)
    for run in range(3):
        spent = charge(state, str(run), plan, {RunKey.DP_DELTA: 1e-6})
    assert spent.rounds == 3 and len(read_ledger(state)) == 3
    assert spent.total_epsilon == pytest.approx(_direct_epsilon(planned.dp_variance, l2, l1,
                                                                1e-6, 3), rel=1e-12)
    assert total_epsilon(read_ledger(state), 1e-6) == pytest.approx(spent.total_epsilon)


def test_a_noise_multiplier_plans_that_noise_and_stat_bound_grows_to_fit_it():
    _, plan = plan_dp_round({RunKey.DP_NOISE_MULTIPLIER: 3.0}, _round(), "sealed", 2)
    assert plan is not None and plan.noise_multiplier == pytest.approx(3.0)
    planned, plan = plan_dp_round({RunKey.DP_EPSILON: 0.02}, _round(), "sealed", 2)
    assert plan is not None and planned.stat_bound > 4096  # far more noise than 4096 fits
    with pytest.raises(ConfigError, match="stat-bound"):  # the same noise on half the range
        replace(planned, stat_bound=planned.stat_bound / 2, dp_variance=planned.dp_variance * 4)
    with pytest.raises(ConfigError, match="dp-epsilon"):
        plan_dp_round({RunKey.DP_EPSILON: 1.0, RunKey.DP_NOISE_MULTIPLIER: 1.0}, _round(),
                      "sealed", 2)


class _NoClientsMayTrain:
    """A Grid with three nodes that fails the test if any message is ever sent."""

    def __init__(self):
        self.sent = 0

    def get_node_ids(self):
        return [11, 12, 13]

    def _refuse(self, *args, **kwargs):
        self.sent += 1
        raise AssertionError("a client was asked to train")

    send_and_receive = push_messages = pull_messages = create_message = _refuse


def test_a_round_over_budget_is_refused_before_any_client_trains(tmp_path: Path):
    state = StateDir(tmp_path / "state")
    run_config = {RunKey.STATE_DIR: str(state.root), RunKey.MIN_CLIENTS: 3,
                  RunKey.AGGREGATION: "secagg", RunKey.TIMEOUT: 5.0, SimKey.DATA: str(TINY),
                  RoundKey.TASK: "LaMP_2N", RunKey.DP_EPSILON: 1.0,
                  RunKey.DP_BUDGET_EPSILON: 1.2}  # two rounds of 1 compose to ~1.46
    cfg = server_app.round_config(run_config, None, "secagg", state)
    _, plan = plan_dp_round(run_config, cfg, "secagg", 3)
    charge(state, "earlier", plan, run_config)  # one round of epsilon 1 already spent
    grid = _NoClientsMayTrain()
    context = Context(run_id=7, node_id=0, node_config={}, state=RecordDict(),
                      run_config=run_config)
    with pytest.raises(BudgetExceeded, match="Refused before any client trained"):
        server_app.main(grid, context)  # type: ignore[arg-type]
    assert grid.sent == 0
    assert [r["run_id"] for r in read_ledger(state)] == ["earlier"]
    assert not state.results.exists()


# ---- honest noisy results ------------------------------------------------------------------
def test_noise_std_of_accuracy_matches_draws_and_the_interval_widens():
    metric = make_metric("classification", LABELS)
    rng = np.random.default_rng(4)
    exact = metric.new_stats()
    exact.update({"count": 400.0, "correct": 240.0})
    noise_std = 20.0
    draws = [(exact["correct"] + rng.normal(0, noise_std))
             / (exact["count"] + rng.normal(0, noise_std)) for _ in range(20_000)]
    assert np.std(draws) == pytest.approx(primary_noise_std(metric, exact, noise_std), rel=0.05)
    plain = metric.interval(exact)
    low, high = widened_interval(metric, exact, noise_std)
    assert low < plain[0] and high > plain[1]
    assert widened_interval(metric, exact, 0.0) == pytest.approx(plain)
