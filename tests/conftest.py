"""Shared fixtures: the embedded base model, loaded once per session, and a private user dir.

The model is cached (converted from its GGUF once) under a repo-local OPPU_HOME,
``.oppu-home/`` (git-ignored); set ``OPPU_TEST_HOME`` to use another cache.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from hypothesis import HealthCheck, settings

# Set before torch starts its OpenMP pool: on a shared, loaded CPU the default spin-wait
# makes ops several times slower (see FACTS.md). An explicit setting is respected.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Hypothesis profiles: ``fast`` for the default suite; ``deep`` (``--hypothesis-profile=deep``)
# for the fuzzing benchmark, tests/test_fuzz_depth.py. No example database: a run is what it
# generates, not what an earlier run on this machine found.
settings.register_profile("fast", max_examples=120, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.data_too_large])
settings.register_profile("deep", settings.get_profile("fast"), max_examples=1000)
settings.load_profile("fast")

TEST_HOME = Path(os.environ.get("OPPU_TEST_HOME", Path(__file__).parent.parent / ".oppu-home"))


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``./run.sh test`` uses two workers), convert the embedded model
    once here in the controller, before any worker starts: two workers converting it at once
    would swap the cache directory under each other's feet."""
    if hasattr(config, "workerinput") or not config.getoption("numprocesses", default=None):
        return
    from oppu.shared.llm.model import resolve_model_source

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPPU_HOME", str(TEST_HOME))
        resolve_model_source(None)


class Base(NamedTuple):
    model: Any
    tokenizer: Any
    source: str  # the converted model's directory: load_base_model(source) loads another copy


@pytest.fixture(scope="session")
def base() -> Base:
    """The embedded SmolLM2-135M on CPU, frozen, in eval mode, loaded once per session.

    Shared by every model test: each must hand it back clean (adapters detached), as
    ``personalize_user`` does.
    """
    from oppu.shared.llm.model import load_base_model, resolve_model_source

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPPU_HOME", str(TEST_HOME))
        source = resolve_model_source(None)
    model, tokenizer, _plan = load_base_model(source, device="cpu")
    return Base(model, tokenizer, source)


@pytest.fixture
def user_dir(tmp_path: Path) -> Path:
    """An empty private directory for one synthetic user's adapters."""
    path = tmp_path / "user"
    path.mkdir()
    return path
