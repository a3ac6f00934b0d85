"""The GPU check (``python -m oppu.simulations.gpu_check``): its refusal without CUDA, its CUDA
path where a GPU is (skipped elsewhere), and a tiny CPU smoke run of every phase (benchmark)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import TEST_HOME

from oppu.simulations import gpu_check
from oppu.simulations.quickstart import sample_dir

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

FIELDS = {
    "device": {"device", "name", "torch", "cuda_runtime", "cpu_count"},
    "sizes": {"items", "queries", "users", "max_history", "adapt_examples", "max_length",
              "epochs", "num_cpus", "num_gpus"},
    "training": {"user", "items", "examples", "epochs", "steps", "tokens", "wall_seconds",
                 "loop_seconds", "tokens_per_second", "first_loss", "final_loss", "dtype",
                 "autocast_bf16", "model_gpu_memory_mb", "peak_gpu_memory_mb"},
    "first_step": {"device_loss", "cpu_fp32_loss", "relative_difference", "tolerance",
                   "passed"},
    "label_scoring": {"task", "queries", "labels_per_query_max", "seconds_total",
                      "seconds_per_query"},
    "simulation": {"users", "suite", "max_history", "num_cpus", "num_gpus",
                   "clients_at_once_max", "workers", "aggregation", "round_seconds",
                   "seconds_total", "users_per_hour", "users_per_hour_per_worker",
                   "user_seconds_median", "accuracy"},
    "phase_seconds": {"training", "label_scoring", "simulation"},
}
TOP_LEVEL = {*FIELDS, "data", "seconds_total", "passed", "complete"}


def test_without_cuda_it_exits_2_with_a_clear_message_and_loads_no_model(
        monkeypatch, tmp_path, capsys):
    def no_model(*_args, **_kwargs):
        raise AssertionError("the check loaded a model without CUDA or --allow-cpu")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("oppu.shared.llm.model.load_base_model", no_model)
    monkeypatch.setattr("oppu.shared.llm.model.resolve_model_source", no_model)
    out = tmp_path / "gpu_check.json"
    with pytest.raises(SystemExit) as exited:
        gpu_check.main(["--out", str(out), "--work", str(tmp_path / "work")])
    assert exited.value.code == 2
    message = " ".join(capsys.readouterr().err.split())
    assert "no CUDA GPU" in message and "--allow-cpu" in message
    assert not out.exists() and not (tmp_path / "work").exists()


# ---- the CUDA path (where a GPU is) ---------------------------------------------------------
@pytest.fixture(scope="module")
def cuda_user():
    """A sample user's LoRA trained on the GPU at small sizes, plus its CPU fp32 first step."""
    from oppu.shared.personal.private_adapter import detach_adapter
    from oppu.simulations.bench_recipe import choose_user

    sizes = replace(gpu_check.CUDA_SIZES, items=16, max_length=256, epochs=1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPPU_HOME", str(TEST_HOME))
        bench = choose_user(sample_dir(), sizes.items)
        measured, model, tokenizer = gpu_check.train_on_device(bench, sizes, device="cuda")
        cpu_loss = gpu_check.cpu_fp32_first_loss(bench, sizes)
    yield measured, model, tokenizer, cpu_loss
    detach_adapter(model)


@needs_cuda
@pytest.mark.slow
def test_cuda_training_reports_memory_and_its_first_step_matches_cpu_fp32(cuda_user):
    measured, model, _tokenizer, cpu_loss = cuda_user
    assert next(model.parameters()).device.type == "cuda"
    bf16 = torch.cuda.is_bf16_supported()
    assert measured["dtype"] == ("bfloat16" if bf16 else "float32")
    assert measured["autocast_bf16"] is bf16
    assert measured["peak_gpu_memory_mb"] >= measured["model_gpu_memory_mb"] > 0
    assert measured["steps"] >= 1 and measured["tokens_per_second"] > 0
    check = gpu_check.compare_first_step(measured["first_loss"], cpu_loss, 0.05)
    assert check["passed"], check


@needs_cuda
@pytest.mark.slow
def test_cuda_label_scoring_times_the_queries_together(cuda_user):
    from oppu.shared.data import load_lamp

    _measured, model, tokenizer, _cpu_loss = cuda_user
    scoring = gpu_check.time_label_scoring(model, tokenizer, load_lamp(sample_dir()), 5)
    assert scoring["queries"] == 5 and scoring["labels_per_query_max"] == 25
    assert 0 < scoring["seconds_per_query"] * 5 == pytest.approx(scoring["seconds_total"], rel=1e-2)


def test_first_step_comparison_passes_only_within_tolerance():
    assert gpu_check.compare_first_step(2.02, 2.0, 0.05)["passed"]
    failed = gpu_check.compare_first_step(2.2, 2.0, 0.05)
    assert not failed["passed"] and failed["relative_difference"] == pytest.approx(0.1)


# ---- the whole command ---------------------------------------------------------------------
def run_check(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> dict:
    """Run the command in its own process; return its JSON (checked against --out)."""
    out = tmp_path / "gpu_check.json"
    done = subprocess.run(
        [sys.executable, "-m", "oppu.simulations.gpu_check", "--data", str(sample_dir()),
         "--out", str(out), "--work", str(tmp_path / "work"), *args],
        env={**os.environ, "OPPU_HOME": str(TEST_HOME), **(env or {})},
        capture_output=True, text=True, timeout=1800, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    printed = [line for line in done.stdout.splitlines() if line.startswith(gpu_check.JSON_PREFIX)]
    assert len(printed) == 1, done.stdout[-2000:]
    result = json.loads(printed[0][len(gpu_check.JSON_PREFIX):])
    assert json.loads(out.read_text()) == result
    for phase in ("phase 1/3", "phase 2/3", "phase 3/3"):
        assert f"{phase}:" in done.stderr and "done in" in done.stderr
    assert set(result) == TOP_LEVEL
    for section, names in FIELDS.items():
        assert names <= set(result[section]), (section, names - set(result[section]))
    return result


@pytest.mark.benchmark
def test_cpu_smoke_run_reports_every_field(tmp_path):
    result = run_check(tmp_path, "--allow-cpu", env={"CUDA_VISIBLE_DEVICES": ""})
    assert result["device"]["device"] == "cpu" and result["passed"] and result["complete"]
    assert result["training"]["tokens_per_second"] > 0
    assert result["training"]["peak_gpu_memory_mb"] is None
    assert result["first_step"]["relative_difference"] <= result["first_step"]["tolerance"]
    assert result["label_scoring"]["queries"] == gpu_check.CPU_SIZES.queries
    assert result["label_scoring"]["seconds_per_query"] > 0
    assert result["simulation"]["users"] == gpu_check.CPU_SIZES.users
    assert result["simulation"]["num_gpus"] == 0 and result["simulation"]["users_per_hour"] > 0


@needs_cuda
@pytest.mark.benchmark
def test_cuda_run_at_small_sizes_shares_the_gpu(tmp_path):
    result = run_check(tmp_path, "--items", "16", "--queries", "5", "--users", "4",
                       "--max-history", "8", "--adapt-examples", "32", "--num-gpus", "0.25")
    assert result["device"]["device"] == "cuda" and result["passed"]
    assert result["training"]["peak_gpu_memory_mb"] > 0
    assert result["simulation"]["num_gpus"] == 0.25 and result["simulation"]["users"] == 4
