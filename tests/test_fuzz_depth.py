"""Fuzzing at depth (a ``benchmark``): the readers and the received messages under the deep
hypothesis profile, every generated case counted from hypothesis's own observations.

    pytest -m benchmark tests/test_fuzz_depth.py -s

runs ``test_fuzz_inputs.py`` and ``test_fuzz_messages.py`` with ``--hypothesis-profile=deep``
in a child pytest, reads the test-case observations hypothesis writes (its observability
JSONL), prints ``FUZZ_JSON`` (cases per test, by status) and requires at least 10,000
executed cases and not one failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

HERE = Path(__file__).parent
MODULES = ("test_fuzz_inputs.py", "test_fuzz_messages.py")
MIN_CASES = 10_000


def _observations(storage: Path) -> list[dict]:
    """Every test-case observation hypothesis wrote under ``storage``."""
    return [record for path in sorted((storage / "observed").glob("*testcases*.jsonl"))
            for line in path.read_text().splitlines()
            if (record := json.loads(line)).get("type") == "test_case"]


@pytest.mark.benchmark
def test_deep_fuzzing_runs_ten_thousand_cases_without_a_crash(tmp_path: Path) -> None:
    env = {**os.environ, "HYPOTHESIS_STORAGE_DIRECTORY": str(tmp_path),
           "HYPOTHESIS_EXPERIMENTAL_OBSERVABILITY": "1",
           "HYPOTHESIS_EXPERIMENTAL_OBSERVABILITY_NOCOVER": "1"}
    started = time.monotonic()
    child = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
         "--hypothesis-profile=deep", *(str(HERE / m) for m in MODULES)],
        env=env, capture_output=True, text=True)
    seconds = time.monotonic() - started
    cases = _observations(tmp_path)
    by_status = Counter(case["status"] for case in cases)
    by_test = Counter(case["property"] for case in cases if case["status"] != "gave_up")
    executed = by_status["passed"] + by_status["failed"]
    print("FUZZ_JSON " + json.dumps({
        "profile": "deep", "executed_cases": executed, "by_status": dict(by_status),
        "by_test": dict(sorted(by_test.items())), "seconds": round(seconds, 1),
        "pytest_exit": child.returncode}))
    assert child.returncode == 0, child.stdout[-4000:] + child.stderr[-2000:]
    assert by_status["failed"] == 0
    assert executed >= MIN_CASES, by_test
