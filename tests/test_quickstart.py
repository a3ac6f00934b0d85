"""The README's main job, shrunk: task adaptation, personalization and the table, end to end."""

from __future__ import annotations

import json

import pytest

from oppu.client.peft_methods import PeftSettings
from oppu.client.personalize import PersonalizeSettings
from oppu.coordinator.adapt import AdaptSettings
from oppu.shared.base_artifact import verify_artifact
from oppu.shared.training import TrainSettings
from oppu.simulations.quickstart import QuickstartSettings, run_quickstart

pytestmark = pytest.mark.slow


def test_quickstart_runs_end_to_end_on_the_bundled_sample(base, tmp_path, monkeypatch):
    monkeypatch.setenv("OPPU_HOME", str(tmp_path / "home"))
    settings = QuickstartSettings(
        users=1,
        max_history=6,
        adapt=AdaptSettings(max_examples=8, train=TrainSettings(lr=5e-4, epochs=1,
                                                                 batch_size=8)),
        personal=PersonalizeSettings(peft=PeftSettings(alpha=16),
                                     train=TrainSettings(lr=1e-3, epochs=1, batch_size=8)),
    )
    out = tmp_path / "results.json"
    results = run_quickstart(base_model=base.source, settings=settings, out=out, device="cpu")

    assert json.loads(out.read_text()) == results
    assert results["task"] == "LaMP_2N" and results["queries"] == 3
    expected_rows = {
        "base, untuned (k=0)", "task-adapted, non-personalized (k=0)",
        "task-adapted + random history (k=1)", "task-adapted + RAG (k=1)",
        "trivial: user's majority label", "OPPU: personal LoRA (k=0)",
    }
    assert set(results["rows"]) == expected_rows
    for row in results["rows"].values():
        assert row["count"] == 3
        assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["f1"] <= 1.0
    artifact = tmp_path / "home" / "bases" / "quickstart-LaMP_2N-plain"
    manifest = verify_artifact(artifact)
    assert manifest.version == results["base_version"]
    assert manifest.training["examples"] == 8
