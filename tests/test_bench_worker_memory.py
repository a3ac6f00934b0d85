"""The worker-memory probe: the per-user pipeline run as a worker runs it, user after user."""

from __future__ import annotations

import json

from oppu.simulations import bench_worker_memory
from oppu.simulations.quickstart import sample_dir


def test_users_in_one_process_leave_no_tensor_behind(capsys):
    result = bench_worker_memory.main(["--data", str(sample_dir()), "--users", "2",
                                       "--max-history", "4", "--suite", "base-k0,oppu-k0"])
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(printed.removeprefix(bench_worker_memory.JSON_PREFIX)) == result
    first, second = result["users"]
    assert [first["user"], second["user"]] == [0, 1]
    assert first["rss_mb"] > first["anon_mb"] > 0
    # Each user trains and drops a private adapter: the live tensors are the base's again.
    assert first["tensor_mb"] == second["tensor_mb"] > 0
