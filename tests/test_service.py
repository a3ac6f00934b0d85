"""The coordinator as a long-running service: its round log and checks (fast), publishing a
base while it runs, then end to end on loopback (real SuperLink, real SuperNodes, TLS, node
authentication): three rounds run unattended on a schedule, a client that joins after round 1
takes part in round 2, a client whose history grew continues its adapter on the new items, the
operator's commands over the real Operator service, and a coordinator killed between rounds
restarts on its state dir, re-admits the nodes and finishes its schedule.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
from fault_harness import kill_tree
from helpers import make_history
from test_federation import FAST_ROUND, base_artifact

from oppu.coordinator import operator_client
from oppu.coordinator.coordinator import Coordinator
from oppu.coordinator.enrollment import remove_key, sync_registrations
from oppu.coordinator.operator_server import OperatorServer, operator_file
from oppu.coordinator.round_log import RoundLog, Schedule
from oppu.coordinator.service import CoordinatorService, RoundOutcome, checked_run_config
from oppu.coordinator.state import FederationInfo, StateDir
from oppu.shared.errors import ConfigError, OppuError
from oppu.shared.federation.aggregation_modes import SEALED
from oppu.shared.federation.keys import RoundKey, RunKey
from oppu.shared.federation.node_auth import load_or_create_node_key
from oppu.shared.federation.processes import free_port
from oppu.shared.llm.base_artifact import write_manifest
from oppu.simulations.load.supernode import SuperNode, wait_online

DEFAULTS = {RoundKey.TASK: "LaMP_2N", RunKey.MIN_CLIENTS: 2, RunKey.TIMEOUT: 300.0}


# ---- the round log and the operator's settings (fast) ---------------------------------------
def test_a_restart_settles_the_rounds_a_dead_coordinator_left_running(tmp_path: Path):
    state = StateDir(tmp_path)
    log = RoundLog.open(state)
    schedule = Schedule(rounds=3, every=100.0, min_clients=2)
    first = log.update(log.begin("schedule", now=1000.0), run_id="11", status="done")
    assert log.next_due(schedule) == 1100.0 and not log.finished(schedule)
    finished_unrecorded = log.update(log.begin("schedule"), run_id="12")  # result written
    state.results.mkdir()
    state.result_path("12").write_text("{}")
    log.update(log.begin("operator"), run_id="13")  # died mid-round: no result
    reopened = RoundLog.open(state)
    statuses = {e.run_id: e.status for e in reopened.entries}
    assert statuses == {"11": "done", "12": "done", "13": "interrupted"}
    assert reopened.scheduled_done() == 2 and reopened.next_number() == 3
    assert reopened.next_due(schedule) == finished_unrecorded.started + 100.0
    assert first.number == 1 and finished_unrecorded.number == 2
    failed_at = time.time() + 10_000  # later than the last done round's next due time
    failed = reopened.update(reopened.begin("schedule"), status="failed", ended=failed_at)
    assert reopened.next_due(schedule) == failed_at + schedule.retry  # a failed round re-runs
    assert reopened.next_number() == 4 and failed.number == 3
    reopened.update(reopened.begin("schedule"), status="done", run_id="14")
    assert RoundLog.open(state).finished(schedule)


@pytest.mark.parametrize(("overrides", "named"), [
    ({"suite": "base-k0,no-such-variant"}, "no-such-variant"),
    ({"peft-method": "adapterdrop"}, "peft-method"),
    ({"task": "LaMP_99"}, "LaMP_99"),
    ({"lr": -1.0}, "lr"),
    ({"min-clients": 0}, "min-clients"),
    ({"timeout": "soon"}, "timeout"),
    ({"aggregation": "plaintext"}, "aggregation"),
    ({"sealing-key": "x"}, "sealing-key"),  # the coordinator's own
    ({"lrr": 0.1}, "lrr"),
])
def test_an_operator_round_with_bad_settings_is_refused_naming_them(overrides, named):
    with pytest.raises(ConfigError, match=named):
        checked_run_config(DEFAULTS, overrides)
    assert checked_run_config(DEFAULTS, {"k": 1, "min-clients": 3})["k"] == 1


def _artifact(root: Path, variant: str, k: int | None, marker: str) -> Path:
    root.mkdir(parents=True)
    (root / "model.safetensors").write_bytes(os.urandom(2000) + marker.encode())
    training = {} if k is None else {"k": k}
    write_manifest(root, model_id="test/tiny", task="LaMP_2N", variant=variant,
                   training=training)
    return root


def test_publishing_a_base_serves_it_from_the_next_round(tmp_path: Path):
    """The BaseStore keeps serving the old version (a client mid-fetch finishes); the round
    config names the new one; a damaged artifact changes nothing."""
    plain = _artifact(tmp_path / "plain-1", "plain", 0, "one")
    coordinator = Coordinator(tmp_path / "state", plain, host="127.0.0.1", port=free_port(),
                              base_port=0, insecure=True, simulation=True)
    with coordinator:
        first = FederationInfo.read(coordinator.state.root).base_version
        name, version = coordinator.publish(_artifact(tmp_path / "plain-2", "plain", 0, "two"))
        info = FederationInfo.read(coordinator.state.root)
        assert name == "plain" and info.base_version == version != first
        served = {m.version for m in coordinator.base_server.manifests}
        assert {first, version} <= served
        rag_name, rag = coordinator.publish(_artifact(tmp_path / "rag", "rag", 1, "rag"))
        assert rag_name == "rag-k1"
        assert FederationInfo.read(coordinator.state.root).bases == {"plain": version,
                                                                     "rag-k1": rag}
        damaged = _artifact(tmp_path / "plain-3", "plain", 0, "three")
        (damaged / "model.safetensors").write_bytes(b"changed after hashing")
        with pytest.raises(OppuError, match="does not match"):
            coordinator.publish(damaged)
        assert FederationInfo.read(coordinator.state.root).bases == {"plain": version,
                                                                     "rag-k1": rag}


# ---- end to end -----------------------------------------------------------------------------
@pytest.mark.slow
def test_a_coordinator_serves_rounds_unattended_and_resumes_after_a_restart(tmp_path: Path):
    port = free_port()
    state_dir = tmp_path / "coordinator"
    run_config = {**FAST_ROUND, RunKey.MIN_CLIENTS: 2, RunKey.AGGREGATION: SEALED}

    def new_coordinator() -> Coordinator:
        return Coordinator(state_dir, base_artifact(), host="127.0.0.1", port=port,
                           base_port=0)

    nodes = [SuperNode.create(tmp_path, f"user{u}", make_history(u),
                              base_cache=tmp_path / "base-cache") for u in range(3)]
    late = nodes[2]
    coordinator = new_coordinator()
    for node in nodes:
        node.enroll(coordinator)
    outcomes: list[RoundOutcome] = []

    grown = nodes[0]

    def after_round(outcome: RoundOutcome) -> None:
        outcomes.append(outcome)
        if len(outcomes) == 1:  # a client joins after round 1; another's history grows
            late.start(coordinator, enroll=False)
            more = make_history(0, items=8)[6:]
            with grown.history_path.open("a") as fh:
                fh.writelines(json.dumps(item) + "\n" for item in more)
            wait_online(coordinator, 3, timeout=180.0)

    try:
        with coordinator:
            for node in nodes[:2]:
                node.start(coordinator, enroll=False)
            service = CoordinatorService(coordinator, Schedule(rounds=3, every=0.0,
                                                               min_clients=2),
                                         run_config, round_timeout=900, poll_seconds=1.0,
                                         on_round=after_round)
            with OperatorServer(service):
                serving = threading.Thread(target=service.serve)
                serving.start()
                state = coordinator.state
                with pytest.raises(ConfigError, match="nope"):
                    operator_client.run_round(state, {"suite": "base-k0,nope"})
                while not outcomes:
                    time.sleep(1.0)
                reply = operator_client.run_round(state, {RoundKey.SEED: 5})
                status = operator_client.status(state)
                serving.join(timeout=1200)
                assert not serving.is_alive()
            # user2's key is removed and enrolled again: the running SuperLink keeps it out,
            # the restarted one (a fresh, in-memory SuperLink) lets it back in.
            remove_key(coordinator.state, late.name)
            sync_registrations(coordinator.state)
            coordinator.enroll(load_or_create_node_key(late.data_dir)[0].public, name=late.name)
            assert late.name not in sync_registrations(coordinator.state)
            kill_tree(coordinator.superlink)  # killed between rounds: SuperLink, all
        assert not operator_file(state).exists()
        # A new coordinator on the same state dir and port.
        restarted = new_coordinator()
        with restarted:  # a fresh SuperLink: each SuperNode starts over, as `join` does
            wait_online(restarted, 3, timeout=300.0, keep=nodes)
            resumed = CoordinatorService(restarted, Schedule(rounds=4, every=0.0,
                                                             min_clients=3),
                                         run_config, round_timeout=900, poll_seconds=1.0,
                                         on_round=outcomes.append)
            resumed.serve()
    finally:
        for node in nodes:
            node.stop()

    assert reply.status == "done" and "accuracy" in reply.table
    assert sorted(status["enrolled"]) == ["user0", "user1", "user2"]
    assert sum(n["status"] == "online" for n in status["nodes"]) == 3
    entries = RoundLog.open(StateDir(state_dir)).entries
    assert [e.number for e in entries] == [1, 2, 3, 4, 5]
    assert all(e.status == "done" for e in entries)
    assert sorted(e.source for e in entries) == ["operator", *["schedule"] * 4]
    assert len({e.run_id for e in entries}) == 5
    results = [json.loads(StateDir(state_dir).result_path(e.run_id).read_text())
               for e in entries]
    assert [r["round"] for r in results] == [1, 2, 3, 4, 5]
    assert [r["clients"] for r in results] == [2, 3, 3, 3, 3]  # the late client from round 2
    for node in nodes[:2]:
        assert all(node.records(e.run_id) for e in entries)
    assert not late.records(entries[0].run_id) and all(
        late.records(e.run_id) for e in entries[1:])
    # The grown history: round 1 trained on items 1-4 (5-6 held out); the next scheduled
    # round continues that adapter on 5-6 only (7-8 are its held-out queries).
    first, second = (json.loads(grown.records(e.run_id)[0].read_text()) for e in entries[:2])
    assert (first["continued"], first["train_items"], first["evaluated"]) == (False, 4, 2)
    assert (second["train_items"], second["evaluated"]) == (6, 2)
    # (Too few items for local selection: each round trains with the round's recipe.)
    assert list(first["trained_examples"].values()) == [4]
    assert second["continued"] and list(second["trained_examples"].values()) == [2]
    print("service rounds: " + ", ".join(f"{o.entry.number} {o.entry.source} "
                                         f"{o.result.seconds:.0f} s" for o in outcomes
                                         if o.result))


def test_operator_commands_without_a_running_coordinator_say_so(tmp_path: Path):
    from typer.testing import CliRunner

    from oppu.coordinator.cli import app

    for args in (["status"], ["round", "--run-config", "k=1"], ["publish", str(tmp_path)]):
        result = CliRunner().invoke(app, [*args, "--state-dir", str(tmp_path)])
        assert result.exit_code != 0 and "No coordinator is running" in result.output, args
    result = CliRunner().invoke(app, ["round", "--run-config", "suite=base-k0", "--state-dir",
                                      str(tmp_path)])
    assert result.exit_code != 0 and "--run-config" in result.output
