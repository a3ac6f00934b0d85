"""Faults, for real: clients killed or hung mid-round, a SecAgg+ dropout after key sharing, a
client rejoining, the coordinator crashing mid-round, the BaseStore restarting mid-transfer.

Every fault is a real process fault (SIGKILL or SIGSTOP of a SuperNode's whole process tree,
SIGKILL of the SuperLink, of a BaseStore process) on loopback with TLS, and every wait polls
a file or log with a deadline. Clients run the embedded model on tiny histories (one
optimizer step), as in ``test_federation.py``.

Flower decides a silent node is gone when it misses its heartbeats: the SuperNode sends one
every ~20 s and the SuperLink waits 2 x 30 s from the last, so a round with a killed or hung
client ends up to ~60 s after the fault, with an error reply for that node (well within the
round's timeout). That wait dominates the time of these tests.
"""

from __future__ import annotations

import json
import os
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fault_harness import (
    TRAINING_LINE,
    FaultClient,
    count_in,
    digests,
    kill_tree,
    make_client,
    size_of,
    start_base_server,
    tail,
    wait_until,
)
from helpers import make_history
from test_federation import FAST_ROUND, TEST_HOME, base_artifact

from oppu.client.base_fetch import PART_SUFFIX, fetch_base
from oppu.client.rejoin import CONNECTED_MARK
from oppu.coordinator.base_server import CHUNK_SIZE, BaseStoreServer
from oppu.coordinator.coordinator import Coordinator
from oppu.coordinator.results import CohortResult, format_table, read_result
from oppu.coordinator.superlink import submit_run, write_app
from oppu.shared.errors import OppuError
from oppu.shared.federation.aggregation_modes import SEALED, SECAGG
from oppu.shared.federation.keys import RunKey
from oppu.shared.federation.processes import free_port
from oppu.shared.federation.secagg_encoding import secagg_shares
from oppu.shared.federation.signing import generate_signing_key, public_key_path
from oppu.shared.federation.tls import ensure_tls_material
from oppu.shared.llm.base_artifact import verify_artifact, write_manifest

TASK = "LaMP_2N"
TIMEOUT = 240.0
"""The round's own timeout (run config): a fault must not hold the round longer."""
FAULT_ROUND = {**FAST_ROUND, RunKey.TIMEOUT: TIMEOUT}
WAIT = 600.0
"""How long the test waits for a round's result (the ServerApp gives up at ``TIMEOUT``)."""


def _round(min_clients: int, aggregation: str) -> dict:
    return {**FAULT_ROUND, RunKey.MIN_CLIENTS: min_clients, RunKey.AGGREGATION: aggregation}


def _exact_sum(records: list[dict]) -> list[float]:
    return [sum(column) for column in zip(*(r["vector"] for r in records), strict=True)]


def train_previous_adapter(client: FaultClient) -> None:
    """The user's own ``oppu-client train`` run: the adapter a later fault must not touch."""
    from typer.testing import CliRunner

    import oppu.client.cli.train  # noqa: F401  (registers the command)
    from oppu.client.adapter_store import AdapterStore
    from oppu.client.cli import app

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPPU_HOME", str(TEST_HOME))
        result = CliRunner().invoke(app, [
            "train", "--history", str(client.history_path), "--task", TASK, "--data-dir",
            str(client.data_dir), "--device", "cpu", "--epochs", "1", "--batch-size", "4",
            "--lr", "3e-3"])
    assert result.exit_code == 0, result.output
    assert AdapterStore(client.data_dir).exists(TASK)


def _clients(root: Path, count: int) -> list[FaultClient]:
    base = base_artifact()
    return [make_client(root, f"user{i}", make_history(i), base) for i in range(count)]


def _stop_all(clients: list[FaultClient]) -> None:
    for client in clients:
        kill_tree(client.proc)  # stopped (SIGSTOP) processes die on SIGKILL too


def _diagnose(clients: list[FaultClient], state_root: Path | None = None) -> str:
    parts = [f"--- {c.name} supernode.log ---\n{tail(c.log, 2500)}" for c in clients]
    if state_root is not None:
        parts.append(f"--- superlink.log ---\n{tail(state_root / 'superlink' / 'superlink.log')}")
    return "\n".join(parts)


# ---- BaseStore restarted mid-transfer --------------------------------------------------------
def test_base_fetch_resumes_across_a_base_store_restart(tmp_path: Path):
    """The BaseStore process is SIGKILLed mid-file; a new one starts on the same port (as a
    restarted coordinator would, ~1 s later); the same fetch call resumes from the byte it
    had, and the file is sent once in all."""
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    (artifact / "model.safetensors").write_bytes(os.urandom(6 * CHUNK_SIZE + 77))
    (artifact / "config.json").write_text("{}")
    write_manifest(artifact, model_id="test/tiny", task="LaMP_2N", variant="plain")
    key = tmp_path / "keys" / "signing_key.pem"
    generate_signing_key(key)
    tls = ensure_tls_material(tmp_path / "tls")
    port = free_port()
    requests = tmp_path / "requests.jsonl"
    cache = tmp_path / "cache"
    first = start_base_server(artifact, key, tmp_path / "tls", port, log=tmp_path / "a.log",
                              requests=requests, chunk_delay=0.3)
    second = None
    outcome: dict = {}

    def fetch() -> None:
        try:
            outcome["result"] = fetch_base(f"localhost:{port}", coordinator_public_key=
                                           public_key_path(key), cache_root=cache,
                                           root_cert=tls.ca_cert, progress=False)
        except Exception as exc:  # reported by the assertions below
            outcome["error"] = exc

    worker = threading.Thread(target=fetch)
    try:
        worker.start()
        version = wait_until(lambda: next((p.name for p in cache.glob("*") if p.is_dir()),
                                          None), timeout=30, what="the fetch to start")
        part = cache / version / ("model.safetensors" + PART_SUFFIX)
        wait_until(lambda: size_of(part) >= 2 * CHUNK_SIZE, timeout=30,
                   what="two chunks of model.safetensors", diagnose=lambda: tail(
                       tmp_path / "a.log"))
        kill_tree(first)  # the coordinator's BaseStore crashes mid-file
        held = size_of(part)
        assert held < 6 * CHUNK_SIZE + 77, "the transfer ended before the crash"
        second = start_base_server(artifact, key, tmp_path / "tls", port,
                                   log=tmp_path / "b.log", requests=requests)
        worker.join(timeout=120)
        assert not worker.is_alive(), "the fetch hangs after the BaseStore restart"
    finally:
        kill_tree(first)
        kill_tree(second)
        worker.join(timeout=30)
    assert "error" not in outcome, f"the fetch gave up: {outcome.get('error')}"
    result = outcome["result"]
    verify_artifact(result.path)
    assert result.bytes_downloaded == 6 * CHUNK_SIZE + 77 + 2  # config.json is "{}"
    served = [json.loads(line) for line in requests.read_text().splitlines()]
    by_second = [r for r in served if r["pid"] == second.pid and
                 r["path"] == "model.safetensors"]
    assert by_second and by_second[0]["offset"] >= held, served  # resumed, not restarted
    assert count_in(tmp_path / "b.log", "Traceback") == 0, tail(tmp_path / "b.log")



def test_a_second_base_store_on_a_busy_port_is_refused(tmp_path: Path):
    """gRPC shares a port between servers by default (SO_REUSEPORT): a stale coordinator
    and a new one would then split the clients between them. Ours refuses instead."""
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    (artifact / "config.json").write_text("{}")
    write_manifest(artifact, model_id="test/tiny", task=TASK, variant="plain")
    key = generate_signing_key(tmp_path / "key.pem")
    tls = ensure_tls_material(tmp_path / "tls")
    with BaseStoreServer(artifact, key, port=0, tls=tls) as first, \
            pytest.raises(OppuError, match="Cannot listen"):
        BaseStoreServer(artifact, key, port=first.port, tls=tls).start()


# ---- clients fail, rejoin; the coordinator crashes (one sealed federation, four users) ----
@dataclass
class Step:
    """One stage of the scenario: its result, or why it could not be had."""

    run_id: str = ""
    result: CohortResult | None = None
    error: str = ""
    seconds: float = 0.0
    facts: dict = field(default_factory=dict)


@dataclass
class Scenario:
    clients: list[FaultClient]
    state_root: Path
    new_coordinator: Callable[[], Coordinator]
    """A coordinator on the scenario's state dir and port (the restart makes a second one)."""
    running: list[Coordinator] = field(default_factory=list)
    steps: dict[str, Step] = field(default_factory=dict)

    def step(self, name: str) -> Step:
        """The step's outcome; the calling test fails with its error if it had one."""
        step = self.steps.get(name)
        if step is None:
            pytest.fail(f"step {name!r} did not run (an earlier step failed: "
                        f"{[n for n, s in self.steps.items() if s.error]})")
        if step.error:
            pytest.fail(f"step {name!r} failed:\n{step.error}")
        return step


def _run_step(scenario: Scenario, name: str, body: Callable[[Step], None]) -> bool:
    step = scenario.steps[name] = Step()
    started = time.perf_counter()
    try:
        body(step)
    except Exception:
        step.error = (traceback.format_exc()[-4000:] + "\n"
                      + _diagnose(scenario.clients, scenario.state_root))
    step.seconds = time.perf_counter() - started
    print(f"scenario step {name}: {step.seconds:.0f} s")
    return not step.error


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    """Four users on one coordinator (sealed metrics, min-clients 2 then 3):

    1. ``faults``: user2 is SIGKILLed and user3 SIGSTOPped while their ClientApps train; the
       round must finish with user0 and user1.
    2. ``rejoin``: user3 is killed for good, user2 restarts on the same data dir and takes
       part in the next round.
    3. ``restart`` (run by its own benchmark test, on what is left running here): see
       ``_restart``.
    """
    root = tmp_path_factory.mktemp("faults")
    clients = _clients(root, 4)
    _u0, _u1, u2, u3 = clients
    for client in (u2, u3):
        train_previous_adapter(client)
    state_root = root / "coordinator"
    port = free_port()
    scene = Scenario(clients, state_root, lambda: Coordinator(
        state_root, base_artifact(), host="127.0.0.1", port=port, base_port=0))
    try:
        scene.running.append(scene.new_coordinator().start())
        for client in clients:
            client.start(scene.running[-1])
        for client in clients:
            client.wait_registered()

        def faults(step: Step) -> None:
            step.facts["before"] = {c.name: c.private_digests() for c in (u2, u3)}
            for client in clients:
                client.mark_round()
            with ThreadPoolExecutor(1) as pool:
                future = pool.submit(scene.running[-1].run_round, _round(2, SEALED),
                                     timeout=WAIT)
                try:
                    # Each fault as soon as that client starts training (polled together:
                    # the two start within seconds of each other).
                    pending = [(u2, u2.kill),  # killed mid-training
                               (u3, u3.freeze)]  # hangs: never answers, never hangs up

                    def inject() -> bool:
                        for client, fault in list(pending):
                            if client.lines_since_round(TRAINING_LINE):
                                fault()
                                pending.remove((client, fault))
                        return not pending

                    wait_until(inject, timeout=WAIT, what="user2 and user3 to start training",
                               diagnose=lambda: _diagnose(clients, state_root))
                    step.result = future.result(timeout=WAIT)
                except BaseException:
                    scene.running[-1].stop()  # unblocks run_round
                    raise
            step.run_id = step.result.run_id
            step.facts["after"] = {c.name: c.private_digests() for c in (u2, u3)}
            step.facts["table"] = format_table(step.result)

        def rejoin(step: Step) -> None:
            u3.kill()  # the hung client is gone for good (killed while still stopped)
            step.facts["u3_after_kill"] = u3.private_digests()
            u2.start(scene.running[-1])  # same data dir, same history: a rejoining user
            u2.wait_registered()
            for client in clients:
                client.mark_round()
            step.result = scene.running[-1].run_round(_round(3, SEALED), timeout=WAIT)
            step.run_id = step.result.run_id

        for name, body in (("faults", faults), ("rejoin", rejoin)):
            if not _run_step(scene, name, body):
                break
        yield scene
    finally:
        _stop_all(clients)
        for each in scene.running:
            each.stop()


def _restart(scene: Scenario, step: Step) -> None:
    """Mid-round (user0 and user2 replied, user1 frozen mid-training) the SuperLink and its
    ServerApp are SIGKILLed; a new coordinator starts on the same state dir and port; the
    clients get in again (their SuperNodes started over, as `join` does); the round is
    submitted again."""
    u0, u1, u2, _u3 = scene.clients
    live = (u0, u1, u2)
    for client in live:
        client.mark_round()
    cfg = _round(3, SEALED)
    first = scene.running[-1]
    step.facts["interrupted_run"] = run_a = submit_run(first.state, write_app(first.state, cfg))
    u1.wait_busy()
    u1.freeze()  # so the round cannot finish before the crash
    for client in (u0, u2):
        client.wait_sent()
    assert read_result(first.state, run_a) is None, "the round ended before the crash"
    results = first.state.results
    step.facts["results_before"] = digests([results])
    marks = {c.name: size_of(c.log) for c in live}
    kill_tree(first.superlink)  # the coordinator crashes: SuperLink, ServerApp, all
    first.stop()
    scene.running.append(scene.new_coordinator().start())  # same state dir, same port
    step.facts["results_after_restart"] = digests([results])
    u1.thaw()
    # The new SuperLink starts empty (Flower's in-memory state) with the enrolled keys
    # registered again: each SuperNode is turned away and starts over, as `join` does.
    step.result = scene.running[-1].run_round(
        cfg, timeout=WAIT, on_poll=lambda: [client.keep_in() for client in live])
    step.run_id = step.result.run_id
    step.facts["reconnected"] = {
        c.name: count_in(c.log, CONNECTED_MARK, after=marks[c.name]) for c in live}
    step.facts["interrupted_result"] = read_result(scene.running[-1].state, run_a)
    step.facts["u1_ignored"] = u1.lines_since_round("is not in `RUNNING` status")


@pytest.mark.slow
def test_a_killed_and_a_hung_client_do_not_stop_the_round(scenario: Scenario):
    step = scenario.step("faults")
    u0, u1, u2, u3 = scenario.clients
    result = step.result
    assert result.aggregation == SEALED
    assert (result.clients, result.asked, result.failures, result.rejected) == (2, 4, 2, 0)
    assert result.seconds < TIMEOUT  # within the round's own timeout
    records = [u0.record(step.run_id), u1.record(step.run_id)]
    assert None not in records
    assert result.sums == _exact_sum(records)
    assert result.metrics["count"] == 4  # 2 held-out items each, from the two survivors
    assert u2.record(step.run_id) is None and u3.record(step.run_id) is None
    assert "2 of 4 clients aggregated with sealed, 2 failed or dropped out" in step.facts[
        "table"]
    print(f"round with a killed and a hung client: {result.seconds:.0f} s in the ServerApp, "
          f"{step.seconds:.0f} s in all")


@pytest.mark.slow
def test_faults_leave_the_clients_adapter_and_history_untouched(scenario: Scenario):
    step = scenario.step("faults")
    before, after = step.facts["before"], step.facts["after"]
    for name in ("user2", "user3"):
        assert any("/adapters/" in path for path in before[name])  # there was one to keep
        assert after[name] == before[name], f"{name}'s private files changed"
    rejoin = scenario.step("rejoin")
    assert rejoin.facts["u3_after_kill"] == before["user3"]


@pytest.mark.slow
def test_a_dropped_client_rejoins_and_finishes_a_later_round(scenario: Scenario):
    step = scenario.step("rejoin")
    u0, u1, u2, _u3 = scenario.clients
    result = step.result
    assert (result.clients, result.asked, result.failures) == (3, 3, 0)
    records = [c.record(step.run_id) for c in (u0, u1, u2)]
    assert None not in records, "user2 did not finish the round after rejoining"
    assert result.sums == _exact_sum(records)
    assert u2.starts == 2
    ids = [line.split("SuperNode ID:")[1].strip() for line in
           u2.log.read_text(errors="replace").splitlines() if "SuperNode ID:" in line]
    assert len(ids) == 2 and ids[0] == ids[1]  # its node key makes it the same node again
    print(f"round after the rejoin: {result.seconds:.0f} s in the ServerApp, {step.seconds:.0f}"
          " s in all")


@pytest.mark.benchmark
def test_a_coordinator_crash_mid_round_loses_no_result_and_counts_each_client_once(
        scenario: Scenario):
    """Slow by nature (~2 min on top of the scenario: the frozen client finishes the dead
    round before the new one, Flower's reconnect backoff reaches ~20 s): a benchmark."""
    scenario.step("rejoin")  # runs on what the earlier steps left
    if "restart" not in scenario.steps:
        _run_step(scenario, "restart", lambda step: _restart(scenario, step))
    step = scenario.step("restart")
    u0, u1, u2, _u3 = scenario.clients
    assert step.facts["results_after_restart"] == step.facts["results_before"]
    assert len(step.facts["results_before"]) == 2  # the two finished rounds, kept
    result = step.result
    assert (result.clients, result.asked, result.failures) == (3, 3, 0)
    assert result.metrics["count"] == 6  # one contribution (2 held-out items) per client
    records = [c.record(step.run_id) for c in (u0, u1, u2)]
    assert None not in records
    assert result.sums == _exact_sum(records)
    # The SuperNodes got into the new SuperLink (started over by the harness, as by `join`).
    assert step.facts["reconnected"]["user0"] >= 1 and step.facts["reconnected"]["user2"] >= 1
    interrupted = step.facts["interrupted_result"]
    assert interrupted is None, f"the crashed run published a result: {interrupted}"
    print(f"crash, restart and re-run: {step.seconds:.0f} s in all, the re-run "
          f"{result.seconds:.0f} s in the ServerApp; reconnections {step.facts['reconnected']};"
          f" user1's late reply to the dead run ignored: {step.facts['u1_ignored']}")


# ---- SecAgg+: a client drops out after the key sharing -----------------------------------
def _secagg_round_with_a_fault(root: Path, clients: list[FaultClient], round_cfg: dict, *,
                               victim: FaultClient, stage: str, replies: int,
                               fault: Callable[[], None], wait: float = WAIT,
                               round_wait: float = WAIT) -> tuple[CohortResult, float]:
    """A real coordinator and ``clients``; one round with ``round_cfg`` (its result awaited
    up to ``round_wait``), and ``fault`` done once ``victim`` has delivered its reply to
    SecAgg+'s ``stage`` (its ``replies``-th; awaited up to ``wait``). The result, and the
    seconds from the fault to it."""
    coordinator = Coordinator(root / "coordinator", base_artifact(), host="127.0.0.1",
                              port=free_port(), base_port=0)
    with coordinator:
        try:
            for client in clients:
                client.start(coordinator)
            for client in clients:
                client.wait_registered()
                client.mark_round()
            with ThreadPoolExecutor(1) as pool:
                future = pool.submit(coordinator.run_round, round_cfg, timeout=round_wait)
                try:
                    wait_until(lambda: any(e["stage"] == stage for e in victim.sent()),
                               timeout=wait, what=f"{victim.name}'s {stage} reply", poll=0.2,
                               diagnose=lambda: _diagnose(clients))
                    victim.wait_sent(replies=replies)  # delivered to the SuperLink
                    fault()
                    faulted_at = time.perf_counter()
                    return future.result(timeout=round_wait), time.perf_counter() - faulted_at
                except BaseException:
                    coordinator.stop()  # unblocks run_round
                    raise
        finally:
            _stop_all(clients)


@pytest.mark.slow
def test_secagg_survives_a_dropout_after_key_sharing(tmp_path: Path):
    """Four clients, reconstruction threshold 3: user3 is SIGKILLed right after it sent its
    share-keys reply (the others hold shares of its keys, its pairwise masks are in their
    vectors). The server must reconstruct those masks from the survivors' shares and
    return exactly the three survivors' sum."""
    shares, threshold = secagg_shares(4)
    assert (shares, threshold) == (4, 3)
    clients = _clients(tmp_path, 4)
    dropout = clients[3]
    train_previous_adapter(dropout)
    before = dropout.private_digests()
    started = time.perf_counter()
    result, _ = _secagg_round_with_a_fault(
        tmp_path, clients, _round(3, SECAGG), victim=dropout, stage="share_keys", replies=2,
        fault=dropout.kill)
    survivors = clients[:3]
    records = [c.record(result.run_id) for c in survivors]
    assert None not in records
    assert (result.aggregation, result.clients, result.asked, result.failures) == (
        SECAGG, 3, 4, 1)
    assert result.sums == _exact_sum(records)  # exact: the dropout's masks all cancelled
    assert result.metrics["count"] == 6
    assert dropout.record(result.run_id) is None
    assert [e["stage"] for e in dropout.sent()] == ["setup", "share_keys"]
    for client in survivors:  # each answered the unmask stage (shares of user3's key)
        assert [e["stage"] for e in client.sent()][-1] == "unmask"
    assert dropout.private_digests() == before
    print(f"SecAgg+ round with a dropout after key sharing: {time.perf_counter() - started:.0f}"
          f" s end to end, {result.seconds:.0f} s in the ServerApp")


@pytest.mark.slow
def test_a_reply_lost_mid_secagg_ends_its_stage_within_the_stage_timeout(tmp_path: Path):
    """Four clients; right after user3 answered SecAgg+'s setup, its ClientApps stop (its
    SuperNode still heartbeats: Flower keeps it online). The key-sharing stage must give up
    on it after ``stage-timeout``, not after the training stage's ``timeout``, and the round
    finish with the other three (threshold 3)."""
    # A ClientApp starts cold for every SecAgg+ stage (~10-30 s on a loaded 2-core machine):
    # a stage timeout of 60 s still lets each survivor answer key sharing and unmasking.
    stage_timeout, train_timeout = 60.0, 400.0
    clients = _clients(tmp_path, 4)
    lost = clients[3]
    result, after_freeze = _secagg_round_with_a_fault(
        tmp_path, clients, {**_round(3, SECAGG), RunKey.TIMEOUT: train_timeout,
                            RunKey.STAGE_TIMEOUT: stage_timeout},
        victim=lost, stage="setup", replies=1, fault=lost.freeze_apps,
        round_wait=WAIT + train_timeout)
    survivors = clients[:3]
    records = [c.record(result.run_id) for c in survivors]
    assert None not in records
    assert (result.clients, result.asked, result.failures) == (3, 4, 1)
    assert result.sums == _exact_sum(records)
    assert [e["stage"] for e in lost.sent()] == ["setup"]
    # Waiting the training stage's timeout in key sharing alone would have taken 400 s.
    assert after_freeze < train_timeout - 20, after_freeze
    print(f"SecAgg+ round with a reply lost in key sharing: result {after_freeze:.0f} s after "
          f"the loss (stage timeout {stage_timeout:.0f} s, training timeout "
          f"{train_timeout:.0f} s)")


# ---- a crashed client restarts at once ------------------------------------------------------
@pytest.mark.slow
def test_a_crashed_client_rejoins_at_once_with_oppu_client_join(tmp_path: Path):
    """The user's `oppu-client join` is SIGKILLed (say the machine rebooted) and started again
    right away, with the same data dir and so the same node key: it must get back in.

    Flower 1.42 keeps the crashed node online for up to 2 x 30 s heartbeats and refuses its
    key meanwhile ([code: 2004]); ``join`` retries through that window."""
    import sys

    from oppu.shared.federation.node_auth import load_or_create_node_key
    from oppu.shared.federation.processes import flower_env, launch

    data = tmp_path / "user0"
    data.mkdir()
    history = data / "history.jsonl"
    history.write_text("".join(json.dumps(i) + "\n" for i in make_history(0)))
    log = data / "supernode.log"
    with Coordinator(tmp_path / "coordinator", base_artifact(), host="127.0.0.1",
                     port=free_port(), base_port=0) as coordinator:
        key, _ = load_or_create_node_key(data)
        coordinator.enroll(key.public, name="user0")
        cmd = [str(Path(sys.executable).parent / "oppu-client"), "join", "--history",
               str(history), "--coordinator", coordinator.client_address, "--ca",
               str(coordinator.state.tls / "ca.pem"), "--coordinator-key",
               str(public_key_path(coordinator.state.signing_key)), "--data-dir", str(data),
               "--device", "cpu"]
        joins = []
        try:
            for attempt in range(2):
                mark, join_log = size_of(log), tmp_path / f"join{attempt}.log"
                joins.append(launch(cmd, log_path=join_log, env=flower_env(data / "flwr")))

                def registered(proc=joins[-1], mark=mark, join_log=join_log) -> int:
                    if proc.poll() is not None:
                        raise AssertionError(f"`oppu-client join` exited ({proc.returncode}):"
                                             f"\n{tail(join_log)}\n{tail(log)}")
                    return count_in(log, "SuperNode ID:", after=mark)

                wait_until(registered, timeout=150, what="the SuperNode to register")
                if attempt == 0:
                    kill_tree(joins[-1])  # a crash: nothing deactivates the node
        finally:
            for proc in joins:
                kill_tree(proc)
