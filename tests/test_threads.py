"""CPU defaults: oppu's choices apply only where the user has not set the variable."""

from __future__ import annotations

import os

import pytest

from oppu.shared.llm.threads import CACHE_VARIABLES, SHAPE_CACHE, apply_cpu_defaults

VARIABLES = ("OMP_WAIT_POLICY", "TOKENIZERS_PARALLELISM", *CACHE_VARIABLES)


def test_defaults_fill_what_is_unset(monkeypatch: pytest.MonkeyPatch):
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    apply_cpu_defaults()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    assert os.environ["TOKENIZERS_PARALLELISM"] == "false"
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == str(SHAPE_CACHE)
    assert os.environ["LRU_CACHE_CAPACITY"] == str(SHAPE_CACHE)


def test_the_users_settings_win(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "1024")
    monkeypatch.setenv("LRU_CACHE_CAPACITY", "64")
    apply_cpu_defaults()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "1024"
    assert os.environ["LRU_CACHE_CAPACITY"] == "64"
