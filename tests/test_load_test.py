"""The load test script: three real SuperNodes join a real coordinator at once (SecAgg+, TLS,
the tiny base), all are served, the report is complete and its times are ordered; and an N
that cannot fit in memory is refused before anything starts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from oppu.shared.resources import descendants
from oppu.simulations.load.report import JSON_PREFIX
from oppu.simulations.load_test import main

TEST_HOME = Path(os.environ.get("OPPU_TEST_HOME", Path(__file__).parent.parent / ".oppu-home"))


def test_an_n_beyond_memory_is_refused_with_the_estimate(monkeypatch, capsys):
    monkeypatch.setenv("OPPU_HOME", str(TEST_HOME))
    with pytest.raises(SystemExit) as exit_info:
        main(["--clients", "100000"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "100000 clients need about" in err and "--force" in err


def _check_report(report: dict, out: Path, capsys, aggregation: str, messages: int) -> None:
    assert json.loads(out.read_text()) == report
    printed = [line for line in capsys.readouterr().out.splitlines()
               if line.startswith(JSON_PREFIX)]
    assert [json.loads(line[len(JSON_PREFIX):]) for line in printed] == [report]
    assert report["failures"] == 0, report["failure_details"]
    assert (report["joined"], report["served"], report["finished_locally"]) == (3, 3, 3)
    assert report["aggregation"] == aggregation
    times = report["times_s"]
    for key in ("launch_to_all_connected_s", "submit_to_first_result_s",
                "submit_to_last_result_s", "submit_to_last_reply_s", "round_wall_s"):
        assert times[key] >= 0, key
    assert times["launch_to_first_connected_s"] <= times["launch_to_all_connected_s"]
    assert times["submit_to_first_result_s"] <= times["submit_to_last_result_s"] \
        <= times["round_wall_s"]
    memory = report["memory_mb"]
    assert memory["clientapp_processes"] >= 3 * messages
    assert memory["peak_tree"] > memory["coordinator_peak"] > 0
    assert memory["peak_tree"] > memory["clientapp_peak_max"] > memory["node_idle_median"] > 0
    assert report["cpu_s"]["clientapps_per_client"] > 0
    assert report["budget"]["max_clients_estimate_now"] >= 3
    assert [len(c["replies_s"]) for c in report["per_client"]] == [messages] * 3
    assert not [pid for pid in descendants(os.getpid()) if b"flwr" in _cmdline(pid)
                or b"flower" in _cmdline(pid)]


@pytest.mark.slow
def test_three_clients_join_at_once_and_are_all_served(tmp_path: Path, monkeypatch, capsys):
    """Sealed metrics: one message per client, so this stays near a minute."""
    monkeypatch.setenv("OPPU_HOME", str(TEST_HOME))
    out = tmp_path / "load.json"
    report = main(["--clients", "3", "--aggregation", "sealed", "--out", str(out),
                   "--work-dir", str(tmp_path / "work")])
    _check_report(report, out, capsys, "sealed", messages=1)


@pytest.mark.benchmark
def test_three_clients_secagg_round(tmp_path: Path, monkeypatch, capsys):
    """SecAgg+ (what ``auto`` picks for 3): four ClientApp processes per client, each
    importing torch, ~2-3.5 minutes on 2 shared cores; so outside the default suite."""
    monkeypatch.setenv("OPPU_HOME", str(TEST_HOME))
    out = tmp_path / "load.json"
    report = main(["--clients", "3", "--out", str(out), "--work-dir", str(tmp_path / "work")])
    _check_report(report, out, capsys, "secagg", messages=4)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


@pytest.mark.benchmark
def test_a_soak_of_rounds_with_clients_leaving_joining_and_restarting(tmp_path: Path,
                                                                      monkeypatch):
    """``python -m oppu.simulations.load.soak``, shortened: every change happens once."""
    from oppu.simulations.load.soak import main as soak

    monkeypatch.setenv("OPPU_HOME", str(TEST_HOME))
    report = soak(["--rounds", "4", "--out", str(tmp_path / "soak.json"),
                   "--work-dir", str(tmp_path / "work")])
    assert report["rounds_done"] == 4 and not report["lost"]
    assert report["clients_per_round"] == report["clients_expected"] == [4, 3, 4, 4]
    assert [r.get("then") for r in report["per_round"]] == ["leave", "join", "restart", None]
    assert json.loads((tmp_path / "soak.json").read_text())["rounds"] == 4
