"""The federation: its pure parts (round config over Flower, SecAgg+ encoding, results), then
end to end on loopback: a real SuperLink, real SuperNodes, TLS, the embedded model.

In the end-to-end runs each client personalizes on a tiny LaMP_2N history (6 items: 4 train,
2 held out, one optimizer step) and writes its own statistics to its data dir; the
coordinator must end up with exactly their sum, having seen only masked (SecAgg+) or sealed
vectors. Flower polls every 3 s and starts a fresh ClientApp process per message, so
SecAgg+'s four stages cost ~45 s on top of the model work (~95 s for the SecAgg+ run, ~60 s
for the sealed one on 2 shared CPU cores). ``test_privacy.py`` reuses both runs.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pytest
import tomllib
from helpers import make_history

from oppu.coordinator.coordinator import Coordinator
from oppu.coordinator.results import CohortResult
from oppu.shared.federation.aggregation_modes import SEALED, SECAGG, choose_aggregation
from oppu.shared.federation.keys import RoundKey, RunKey
from oppu.shared.federation.node_config import node_config_arg
from oppu.shared.federation.processes import free_port
from oppu.shared.federation.round_config import RoundConfig, run_config_overrides
from oppu.shared.federation.secagg_encoding import (
    MODULUS_RANGE,
    QUANTIZATION_RANGE,
    decode_mean,
    encode_stats,
    secagg_max_error,
    secagg_shares,
    snap_whole,
)
from oppu.shared.llm.base_artifact import verify_artifact, write_manifest
from oppu.shared.metrics import make_metric
from oppu.shared.tasks import get_task
from oppu.simulations.load.round import FAST_ROUND as ONE_STEP_ROUND
from oppu.simulations.load.supernode import SuperNode

TEST_HOME = Path(os.environ.get("OPPU_TEST_HOME", Path(__file__).parent.parent / ".oppu-home"))
FAST_ROUND = {**ONE_STEP_ROUND, RunKey.TIMEOUT: 600.0}


def base_artifact() -> Path:
    """The embedded model as a BaseStore artifact, hard-linked once into the test cache."""
    from oppu.shared.llm.model import resolve_model_source

    target = TEST_HOME / "federation-base"
    if (target / "oppu_manifest.json").is_file():
        return target
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPPU_HOME", str(TEST_HOME))
        source = Path(resolve_model_source(None))
    scratch = TEST_HOME / f".federation-base-{os.getpid()}"
    scratch.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.is_file() and not path.name.startswith("oppu-"):
            try:
                os.link(path, scratch / path.name)
            except OSError:
                (scratch / path.name).write_bytes(path.read_bytes())
    write_manifest(scratch, model_id="embedded:smollm2-135m-instruct", task="LaMP_2N",
                   variant="plain")
    verify_artifact(scratch)
    try:
        scratch.rename(target)
    except OSError:  # another test session made it first
        shutil.rmtree(scratch, ignore_errors=True)
    return target


class RecordRequests(grpc.ServerInterceptor):
    """Keeps every request message the BaseStore receives (serialized), for privacy checks."""

    def __init__(self):
        self.requests: list[tuple[str, bytes]] = []

    def intercept_service(self, continuation, details):
        handler = continuation(details)
        if handler is None:
            return None
        method = details.method

        def wrap(behaviour):
            def recorded(request, context):
                self.requests.append((method, request.SerializeToString()))
                return behaviour(request, context)
            return recorded

        if handler.unary_unary is not None:
            return handler._replace(unary_unary=wrap(handler.unary_unary))
        if handler.unary_stream is not None:
            return handler._replace(unary_stream=wrap(handler.unary_stream))
        return handler


@dataclass
class ClientRun:
    data_dir: Path
    history: list[dict]
    record: dict
    sent: list[dict]  # audit log entries: what this client's replies contained

    def sent_bytes(self) -> bytes:
        return b"".join(base64.b64decode(e["content_b64"]) for e in self.sent)


@dataclass
class FederationRun:
    result: CohortResult
    clients: list[ClientRun]
    base_requests: list[tuple[str, bytes]]
    seconds: float
    logs: dict[str, str] = field(default_factory=dict)


_RUNS: dict[tuple, FederationRun] = {}


def run_federation(root: Path, users: int, aggregation: str, *, insecure: bool = False,
                   **round_fields) -> FederationRun:
    """One round with ``users`` local SuperNodes; memoized so both test modules share it."""
    key = (users, aggregation, insecure, tuple(sorted(round_fields.items())))
    if key not in _RUNS:
        _RUNS[key] = _run(root, users, aggregation, insecure, round_fields)
    return _RUNS[key]


def _run(root: Path, users: int, aggregation: str, insecure: bool,
         round_fields: dict) -> FederationRun:
    started = time.perf_counter()
    recorder = RecordRequests()
    coordinator = Coordinator(root / "coordinator", base_artifact(), host="127.0.0.1",
                              port=free_port(), base_port=0, insecure=insecure,
                              base_interceptors=[recorder])
    nodes = [SuperNode.create(root, f"user{user}", make_history(user),
                              base_cache=root / "base-cache") for user in range(users)]
    for node in nodes:  # each client makes its node key; the coordinator enrolls it
        node.enroll(coordinator)
    with coordinator:
        try:
            for node in nodes:
                node.start(coordinator, insecure=insecure, enroll=False)
            result = coordinator.run_round(
                {**FAST_ROUND, **round_fields, RunKey.MIN_CLIENTS: users,
                 RunKey.AGGREGATION: aggregation}, timeout=600)
        finally:
            for node in nodes:
                node.stop()
    logs = {node.name: node.log_text() for node in nodes}
    runs = []
    for node in nodes:
        records = node.records(result.run_id)
        assert len(records) == 1, logs[node.name][-3000:]
        runs.append(ClientRun(node.data_dir, node.history, json.loads(records[0].read_text()),
                              node.sent()))
    return FederationRun(result, runs, recorder.requests, time.perf_counter() - started, logs)


def _expected_sum(run: FederationRun) -> list[float]:
    vectors = [c.record["vector"] for c in run.clients]
    return [sum(column) for column in zip(*vectors, strict=True)]


def secagg_federation(factory: pytest.TempPathFactory) -> FederationRun:
    """Three clients: SecAgg+."""
    return run_federation(factory.mktemp("fed-secagg"), 3, SECAGG)


def sealed_federation(factory: pytest.TempPathFactory) -> FederationRun:
    """Two clients (auto picks sealed metrics), each with a generated PAG profile."""
    return run_federation(factory.mktemp("fed-sealed"), 2, "auto",
                          **{RoundKey.PROFILE_MODE: "pag"})


@pytest.fixture(scope="module")
def secagg_run(tmp_path_factory: pytest.TempPathFactory) -> FederationRun:
    return secagg_federation(tmp_path_factory)


@pytest.mark.slow
def test_secagg_cohort_sum_equals_the_clients_local_statistics(secagg_run: FederationRun):
    result = secagg_run.result
    assert result.aggregation == SECAGG and result.clients == 3
    assert result.failures == 0
    assert result.sums == _expected_sum(secagg_run)  # exact: classification counts
    metric = make_metric(get_task("LaMP_2N").kind, result.config["labels"])
    assert result.stat_names == metric.stat_names()
    assert result.metrics["count"] == 6  # 2 held-out items per user
    assert result.metrics == pytest.approx(metric.compute(result.sum_stats()), nan_ok=True)
    for client in secagg_run.clients:
        assert client.record["stat_names"] == result.stat_names
        assert client.record["evaluated"] == 2
    print(f"SecAgg+ round with 3 clients: {secagg_run.seconds:.0f} s end to end, "
          f"{result.seconds:.0f} s in the ServerApp")


@pytest.mark.slow
def test_result_is_stored_in_the_state_dir(secagg_run: FederationRun, tmp_path: Path):
    from oppu.coordinator.results import format_table

    stored = list(Path(secagg_run.clients[0].data_dir.parent / "coordinator" / "results")
                  .glob("run-*.json"))
    assert [p.name for p in stored] == [f"run-{secagg_run.result.run_id}.json"]
    table = format_table(secagg_run.result)
    assert "3 clients aggregated with secagg" in table and "accuracy" in table


@pytest.mark.slow
def test_sealed_small_cohort_sum(tmp_path_factory: pytest.TempPathFactory):
    """Two clients: too few for SecAgg+, so each seals its vector to the coordinator."""
    run = sealed_federation(tmp_path_factory)
    assert run.result.aggregation == SEALED and run.result.clients == 2
    assert run.result.rejected == 0 and run.result.failures == 0
    assert run.result.sums == _expected_sum(run)
    print(f"Sealed round with 2 clients: {run.seconds:.0f} s end to end")



# ---- pure parts (fast) ---------------------------------------------------------------------
def _round(**overrides) -> RoundConfig:
    fields = {"task": "LaMP_2N", "labels": ("a, b", "c", "d & e"), "lr": 3e-3,
              "max_steps": 2, "holdout": 2.0, "base_version": "f" * 64,
              "base_address": "localhost:9095", "base_key": "-----BEGIN PUBLIC KEY-----\nx",
              "aggregation": SEALED, "sealing_key": bytes(range(32))}
    return RoundConfig(**{**fields, **overrides})


def test_round_config_survives_flowers_legacy_fitins_path():
    """SecAgg+ sends the config as FitIns.config, which takes scalars only."""
    from flwr.common import FitIns, ndarrays_to_parameters
    from flwr.compat.common import recorddict_compat as compat

    cfg = _round()
    content = compat.fitins_to_recorddict(
        FitIns(ndarrays_to_parameters([np.zeros(3)]), cfg.to_config()), keep_input=True)
    back = compat.recorddict_to_fitins(content, keep_input=True)
    assert RoundConfig.from_config(back.config) == cfg
    assert RoundConfig.from_config(cfg.to_config_record()) == cfg
    assert cfg.holdout_value == 2 and isinstance(cfg.holdout_value, int)
    assert _round(holdout=0.25).holdout_value == 0.25


def test_round_config_refuses_a_newer_format_and_ignores_unknown_keys():
    config = {**_round().to_config(), "from-the-future": 1}
    assert RoundConfig.from_config(config) == _round()
    with pytest.raises(ValueError, match="update oppu"):
        RoundConfig.from_config({**config, RoundKey.FORMAT: 99})


def test_run_config_overrides_read_labels_and_skip_coordinator_only_fields():
    fields = run_config_overrides({"task": "LaMP_3", "labels": "1, 2,3", "lr": 0.5,
                                   "sealing-key": "x", "state-dir": "/s"})
    assert fields == {"task": "LaMP_3", "labels": ("1", "2", "3"), "lr": 0.5}
    assert run_config_overrides({"labels": '["a, b"]'})["labels"] == ("a, b",)


def test_aggregation_choice():
    assert choose_aggregation("auto", 2) == SEALED
    assert choose_aggregation("auto", 3) == SECAGG
    with pytest.raises(ValueError, match="at least 3"):
        choose_aggregation(SECAGG, 2)


@pytest.mark.parametrize("clients", [3, 4, 5, 10, 11, 12, 100, 1023])
def test_secagg_shares_are_what_flower_accepts(clients: int):
    from flwr.server.workflow import SecAggPlusWorkflow

    shares, threshold = secagg_shares(clients)
    assert shares == clients or shares % 2 == 1  # else Flower bumps it after sending it
    assert 2 <= threshold < shares <= clients
    SecAggPlusWorkflow(num_shares=shares, reconstruction_threshold=threshold)


def _secagg_arithmetic(vectors: list[list[float]], bound: float, clip: float) -> list[float]:
    """What Flower's SecAgg+ client and server compute, minus the masks (which cancel)."""
    from flwr.common.secure_aggregation.quantization import dequantize, quantize

    q = QUANTIZATION_RANGE
    total = sum(quantize([np.asarray(encode_stats(v, bound, clip))], clip, q)[0]
                .astype(np.int64) for v in vectors) % MODULUS_RANGE
    # Server: dequantize, remove the n-1 extra offsets, divide by the summed weights (n).
    mean = (dequantize([total], clip, q)[0] - (len(vectors) - 1) * clip) / len(vectors)
    return decode_mean(list(mean), len(vectors), bound, clip)


def test_secagg_encoding_recovers_exact_counts():
    metric = make_metric("classification", ("x", "y", "z"))
    rng = np.random.default_rng(0)
    per_client = []
    for _ in range(50):
        stats = metric.stats_for(list(rng.choice(["x", "y", "q"], 40)),
                                 list(rng.choice(["x", "y", "z"], 40)))
        per_client.append(metric.to_vector(stats))
    decoded = _secagg_arithmetic(per_client, 4096.0, 8.0)
    exact = [sum(col) for col in zip(*per_client, strict=True)]
    assert max(abs(a - b) for a, b in zip(decoded, exact, strict=True)) < \
        secagg_max_error(50, 4096.0)
    snapped = snap_whole(metric, dict(zip(metric.stat_names(), decoded, strict=True)),
                         secagg_max_error(50, 4096.0))
    assert metric.to_vector(snapped) == exact
    metric.validate_stats(snapped)


def test_secagg_encoding_refuses_values_over_the_bound():
    with pytest.raises(ValueError, match="raise stat-bound"):
        encode_stats([1.0, 5000.0], 4096.0, 8.0)


def test_snap_whole_leaves_real_valued_sums_alone():
    metric = make_metric("rating")
    snapped = snap_whole(metric, {"count": 9.9999, "abs_err": 3.4999, "sq_err": -0.0001},
                         0.01)
    assert snapped == {"count": 10.0, "abs_err": 3.4999, "sq_err": 0.0}


def test_node_config_string_reads_back_with_flowers_parser(tmp_path: Path):
    from flwr.common.config import parse_config_args

    odd = tmp_path / "my history (2024)" / "h.jsonl"
    arg = node_config_arg({"history-path": str(odd), "insecure": True, "n": 3})
    assert parse_config_args([arg]) == {"history-path": str(odd), "insecure": True, "n": 3}
    with pytest.raises(ValueError, match="single quote"):
        node_config_arg({"history-path": "it's.jsonl"})


def test_results_round_trip_and_table(tmp_path: Path):
    from oppu.coordinator.results import format_table, read_result, write_result
    from oppu.coordinator.state import StateDir

    metric = make_metric("classification", ("x", "y"))
    sums = metric.stats_for(["x", "y", "y"], ["x", "y", "x"])
    result = CohortResult(run_id="7", round=1, task="LaMP_2N", aggregation=SECAGG, clients=3,
                          stat_names=metric.stat_names(), sums=metric.to_vector(sums),
                          metrics=metric.compute(sums))
    state = StateDir(tmp_path)
    write_result(state, result)
    assert read_result(state, "7") == result
    empty = CohortResult(run_id="8", round=1, task="t", aggregation=SEALED, clients=1,
                         stat_names=["count"], sums=[0.0],
                         metrics={"accuracy": float("nan"), "count": 0.0})
    write_result(state, empty)
    assert "n/a" in format_table(read_result(state, "8"))
    table = format_table(result)
    assert "3 clients aggregated with secagg" in table and "0.6667" in table


def test_generated_app_is_a_valid_flower_app(tmp_path: Path):
    from flwr.cli.build import build_fab_from_disk
    from flwr.common.config import validate_config

    from oppu.coordinator.state import StateDir
    from oppu.coordinator.superlink import write_app

    app_dir = write_app(StateDir(tmp_path), {RoundKey.TASK: "LaMP_2N", RoundKey.LR: 1e-3,
                                             RunKey.MIN_CLIENTS: 3})
    config = tomllib.loads((app_dir / "pyproject.toml").read_text())
    valid, errors, _ = validate_config(config, check_module=True)
    assert valid, errors
    assert config["tool"]["flwr"]["app"]["config"]["state-dir"] == str(tmp_path)
    assert len(build_fab_from_disk(app_dir)) < 10_000


def test_join_refuses_ca_with_insecure(tmp_path: Path):
    from typer.testing import CliRunner

    import oppu.client.cli.join  # noqa: F401  (registers the command)
    from oppu.client.cli import app

    history = tmp_path / "h.jsonl"
    history.write_text(json.dumps(make_history(0)[0]) + "\n")
    result = CliRunner().invoke(app, ["join", "--history", str(history), "--coordinator",
                                      "localhost:1", "--ca", str(history), "--insecure",
                                      "--data-dir", str(tmp_path / "d")])
    assert result.exit_code == 2
    assert "not both" in result.output


def test_coordinator_refuses_a_busy_port_and_leaves_nothing_running(tmp_path: Path):
    import socket

    from oppu.shared.errors import OppuError

    artifact = tmp_path / "base"
    artifact.mkdir()
    (artifact / "config.json").write_text("{}")
    write_manifest(artifact, model_id="tiny", task="LaMP_2N", variant="plain")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        coordinator = Coordinator(tmp_path / "state", artifact, host="127.0.0.1",
                                  port=busy.getsockname()[1], base_port=0)
        with pytest.raises(OppuError, match="already in use"), coordinator:
            pass
    assert coordinator.base_server is None and coordinator.superlink is None


@pytest.mark.slow
def test_a_suite_round_sums_every_variant_of_real_clients(tmp_path_factory):
    """Deployment with a suite: each SuperNode scores several variants on its held-out items;
    the coordinator's SecAgg+ sum holds every variant's block, equal to the clients' own."""
    suite = "base-k0,majority,oppu-k0"
    run = run_federation(tmp_path_factory.mktemp("fed-suite"), 3, SECAGG,
                         **{RoundKey.SUITE: suite})
    result = run.result
    assert result.clients == 3 and result.failures == 0
    assert list(result.variants) == suite.split(",")
    assert result.sums == _expected_sum(run)
    for metrics in result.variants.values():
        assert metrics["count"] == 6  # 2 held-out items per user
    for client in run.clients:
        assert client.record["stat_names"] == result.stat_names
        assert set(client.record["metrics"]) == set(suite.split(","))
