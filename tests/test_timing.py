"""The time split: phases add up to the whole, nested phases count once, and nothing is
recorded outside a split."""

from __future__ import annotations

import time

import pytest

from oppu.shared.timing import UNMARKED, phase, time_split


def test_nested_phases_are_exclusive_and_add_up_to_the_whole() -> None:
    started = time.perf_counter()
    with time_split() as split:
        with phase("training"):
            time.sleep(0.05)
            with phase("evaluation"):  # choosing an epoch inside training
                time.sleep(0.05)
            time.sleep(0.02)
        with phase("evaluation"):
            time.sleep(0.03)
        time.sleep(0.01)
    whole = time.perf_counter() - started
    assert split["training"] == pytest.approx(0.07, abs=0.03)
    assert split["evaluation"] == pytest.approx(0.08, abs=0.03)
    assert split[UNMARKED] >= 0.01
    assert sum(split.values()) <= whole + 0.005
    assert sum(split.values()) >= whole - 0.01


def test_a_phase_outside_a_split_records_nothing_and_splits_do_not_leak() -> None:
    with phase("training"):
        pass
    with time_split() as first, phase("profile"):
        pass
    with time_split() as second:
        pass
    assert "profile" in first and "profile" not in second
