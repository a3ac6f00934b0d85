"""The memory benchmark measures a command's whole process tree and refuses a failed run."""

from __future__ import annotations

import sys

import pytest

from oppu.simulations.bench_memory import measured_run

HOLD = ("import sys, time\n"
        "block = bytearray(int(sys.argv[1]) * 2**20)\n"
        "block[::4096] = b'x' * len(block[::4096])  # touch every page: resident, not reserved\n"
        "time.sleep(1.0)\n")


def test_peak_covers_what_a_grandchild_holds() -> None:
    """``oppu-client`` may start helpers; their memory is the command's too."""
    spawn = (f"import subprocess, sys; subprocess.run([sys.executable, '-c', {HOLD!r}, '300'], "
             "check=True)")
    run = measured_run([sys.executable, "-c", spawn], interval=0.05)
    assert run["peak_rss_mb"] >= 300
    assert run["seconds"] >= 1.0


def test_a_failed_command_is_an_error_with_its_output() -> None:
    with pytest.raises(RuntimeError, match="boom"):
        measured_run([sys.executable, "-c", "import sys; sys.exit('boom')"])


def test_a_chatty_command_does_not_block_on_its_own_output() -> None:
    """oppu-client writes progress to stderr; more than a pipe holds must not stall it."""
    chatty = "import sys; sys.stderr.write('x' * 300_000)"
    assert measured_run([sys.executable, "-c", chatty], interval=0.05)["seconds"] < 60
