"""Every coordinator option and run-config key reaches what it configures on the client.

The chain is the real one: command-line options (or ``[tool.flwr.app.config]``) -> the run
config -> the ServerApp's ``RoundConfig`` -> the wire (``to_config``/``from_config``) -> the
client's recipe -> a private adapter attached to a (tiny) model. The coordinator process and
the simulation engine are the only parts replaced, by recorders that stop the command once it
has handed over its settings, so nothing starts a SuperLink here. A new option that maps
nowhere fails ``test_every_start_option_reaches_*`` / ``..._simulate_...`` by name.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import pytest
import tomllib
from typer.testing import CliRunner

from oppu.coordinator.cli import app as coordinator_app
from oppu.coordinator.round_log import Schedule
from oppu.coordinator.server_app import round_config
from oppu.coordinator.state import StateDir
from oppu.shared.federation.aggregation_modes import SECAGG
from oppu.shared.federation.keys import (
    DEFAULT_ROUND_TIMEOUT,
    DEFAULT_STAGE_TIMEOUT,
    RoundKey,
    RunKey,
    SimKey,
    key_names,
)
from oppu.shared.federation.round_config import (
    RECIPE_KEYS,
    RoundConfig,
    run_config_overrides,
)
from oppu.shared.personal.private_adapter import fresh_adapter
from oppu.shared.personal.recipe import PersonalizeSettings

ROOT = Path(__file__).resolve().parents[1]

# Every recipe option at a value no default has, and what the client must end up with.
DP_ARGS = ["--dp-epsilon", "0.5", "--dp-delta", "1e-6", "--dp-budget-epsilon", "3",
           "--dp-budget-delta", "1e-5", "--dp-max-queries", "6"]
DP_OPTIONS = {"dp_epsilon", "dp_delta", "dp_noise_multiplier", "dp_budget_epsilon",
              "dp_budget_delta", "dp_max_queries"}
DP_EXPECTED = {RunKey.DP_EPSILON: 0.5, RunKey.DP_DELTA: 1e-6, RunKey.DP_BUDGET_EPSILON: 3.0,
               RunKey.DP_BUDGET_DELTA: 1e-5, RunKey.DP_NOISE_MULTIPLIER: 0.0,
               RoundKey.DP_MAX_QUERIES: 6}


def _assert_dp(run_config: dict, client: RoundConfig) -> None:
    """The DP flags reach the ServerApp's run config, the query cap the client's round."""
    assert {k: run_config[k] for k in DP_EXPECTED} == DP_EXPECTED
    assert client.dp_max_queries == 6


RECIPE_ARGS = ["--peft", "ia3", "--lora-r", "4", "--lora-alpha", "12", "--k", "2",
               "--profile", "pag", "--epochs", "5", "--lr", "0.003", "--batch-size", "3",
               "--max-steps", "7", "--seed", "11"]
RECIPE_OPTIONS = {"peft": "ia3", "lora_r": 4, "lora_alpha": 12, "k": 2, "profile": "pag",
                  "epochs": 5, "lr": 0.003, "batch_size": 3, "max_steps": 7, "seed": 11}


class _Stop(Exception):
    """Raised by the recorders once the command has handed over its settings."""


def _client_recipe(run_config: dict, tmp_path: Path) -> tuple[RoundConfig, PersonalizeSettings]:
    """What a client reads from this run config: through the ServerApp and the wire."""
    server_side = round_config(run_config, None, SECAGG, StateDir(tmp_path / "state"))
    on_the_wire = json.loads(json.dumps(server_side.to_config(), default=str))
    client_side = RoundConfig.from_config({**on_the_wire, RoundKey.SEALING_KEY: b""})
    return client_side, client_side.recipe()


def _assert_recipe(recipe: PersonalizeSettings, expected: dict) -> None:
    assert recipe.peft.method == expected["peft"]
    assert (recipe.peft.r, recipe.peft.alpha) == (expected["lora_r"], expected["lora_alpha"])
    assert (recipe.k, recipe.profile) == (expected["k"], expected["profile"])
    train = recipe.train
    assert (train.epochs or 0, train.lr, train.batch_size, train.max_steps or 0, train.seed) == (
        expected["epochs"], expected["lr"], expected["batch_size"], expected["max_steps"],
        expected["seed"])


def _tiny_llama():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64))


def test_the_round_recipe_shapes_the_adapter_the_client_trains(tmp_path) -> None:
    """``--lora-r 4 --lora-alpha 12`` yields a rank-4 LoRA with alpha 12 on the client."""
    run_config = {RoundKey.TASK: "LaMP_2N", RoundKey.PEFT_METHOD: "lora", RoundKey.LORA_R: 4,
                  RoundKey.LORA_ALPHA: 12, RoundKey.SEED: 3}
    _, recipe = _client_recipe(run_config, tmp_path)
    with fresh_adapter(_tiny_llama(), recipe.peft, seed=recipe.train.seed) as model:
        config = model.active_peft_config
        assert (config.r, config.lora_alpha) == (4, 12)
        lora_a = [p for n, p in model.named_parameters() if "lora_A" in n]
        assert lora_a and all(p.shape[0] == 4 for p in lora_a)


class _RecordingCoordinator:
    """Stands in for the coordinator process: records its options and the round's config."""

    seen: ClassVar[dict] = {}

    def __init__(self, state_dir, base_dir, **kwargs) -> None:
        type(self).seen = {"state_dir": state_dir, "base_dir": base_dir, **kwargs}
        # What ``start`` prints while it waits for clients.
        self.client_address = "recorded:0"
        manifest = SimpleNamespace(version="0" * 64, variant="plain", training={})
        self.base_server = SimpleNamespace(manifest=manifest, manifests=[manifest], port=0)
        self.state = StateDir(state_dir)

    def online_nodes(self) -> int:  # the schedule's first round starts at once
        return 10**6

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def run_round(self, run_config, **kwargs):
        type(self).seen["run_config"] = dict(run_config)
        type(self).seen["round_kwargs"] = kwargs
        raise _Stop


class _RecordingOperator:
    """Stands in for the operator's gRPC service: records where it would listen."""

    def __init__(self, service, *, port: int) -> None:
        _RecordingCoordinator.seen.update(schedule=service.schedule, operator_port=port)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None


def test_every_start_option_reaches_the_coordinator_or_the_client(tmp_path,
                                                                   monkeypatch) -> None:
    from oppu.coordinator.commands import start as start_module

    monkeypatch.setattr(start_module, "Coordinator", _RecordingCoordinator)
    monkeypatch.setattr(start_module, "join_instructions", lambda coordinator: "")
    monkeypatch.setattr(start_module, "OperatorServer", _RecordingOperator)
    process = {"base": tmp_path / "base", "state_dir": tmp_path / "state",
               "host": "127.0.0.2", "public_host": "oppu.example", "port": 9001,
               "base_port": 9002, "insecure": True, "node_auth": False}
    args = ["start", "--task", "LaMP_2M", "--base", str(process["base"]),
            "--base", str(tmp_path / "rag-base"), "--state-dir",
            str(process["state_dir"]), "--host", "127.0.0.2", "--public-host", "oppu.example",
            "--port", "9001", "--base-port", "9002", "--insecure", "--no-node-auth",
            "--min-clients", "5", "--aggregation", "sealed", "--holdout", "3",
            "--stat-bound", "99", "--timeout", "77", "--stage-timeout", "33", "--rounds", "4",
            "--every", "60",
            "--operator-port", "9003", *RECIPE_ARGS, *DP_ARGS]
    result = CliRunner().invoke(coordinator_app, args)
    assert isinstance(result.exception, _Stop), result.output

    seen = _RecordingCoordinator.seen
    assert seen["state_dir"] == process["state_dir"] and seen["base_dir"] == process["base"]
    assert list(seen["extra_bases"]) == [tmp_path / "rag-base"]
    for name in ("host", "public_host", "port", "base_port", "insecure", "node_auth"):
        assert seen[name] == process[name], name
    assert seen["schedule"] == Schedule(rounds=4, every=60.0, min_clients=5)
    assert seen["operator_port"] == 9003 and seen["run_config"][RoundKey.ROUND] == 1
    run_config = seen["run_config"]
    assert (run_config[RunKey.MIN_CLIENTS], run_config[RunKey.AGGREGATION],
            run_config[RunKey.TIMEOUT], run_config[RunKey.STAGE_TIMEOUT]) == (5, "sealed",
                                                                            77.0, 33.0)
    client, recipe = _client_recipe(run_config, tmp_path)
    assert (client.task, client.holdout_value, client.stat_bound) == ("LaMP_2M", 3, 99.0)
    _assert_recipe(recipe, RECIPE_OPTIONS)
    _assert_dp(run_config, client)
    multiplier = [*args[:args.index("--dp-epsilon")], "--dp-noise-multiplier", "2"]
    result = CliRunner().invoke(coordinator_app, multiplier)
    assert isinstance(result.exception, _Stop), result.output
    assert _RecordingCoordinator.seen["run_config"][RunKey.DP_NOISE_MULTIPLIER] == 2.0

    covered = {*process, "task", "min_clients", "aggregation", "holdout", "stat_bound",
               "timeout", "stage_timeout", "rounds", "every", "operator_port", *RECIPE_OPTIONS,
               *DP_OPTIONS}
    options = set(inspect.signature(start_module.start).parameters)
    assert options == covered, f"options with no test of where they go: {options - covered}"


def test_every_simulate_option_reaches_the_simulation_or_the_client(tmp_path,
                                                                    monkeypatch) -> None:
    from oppu.shared.data.cohort import load_cohort
    from oppu.simulations import simulate as simulation
    from oppu.simulations.commands import simulate as simulate_command
    from oppu.simulations.quickstart import sample_dir
    from oppu.simulations.simulate import SimulationSettings

    seen: ClassVar[dict] = {}

    def recording_run(data, out, settings, *, base=None, plots=True):
        seen.update(data=data, out=out, settings=settings, base=base, plots=plots)
        raise _Stop

    monkeypatch.setattr(simulation, "run_simulation", recording_run)
    data, out, base = sample_dir(), tmp_path / "out", tmp_path / "base"
    simulate_args = {"lr": "0.003", "lora-r": "4", "lora-alpha": "12", "epochs": "5",
                     "batch-size": "3", "max-steps": "7", "seed": "11"}
    args = ["simulate", "--data", str(data), "--task", "LaMP_2N", "--users", "3", "--suite",
            "base-k0,oppu-k1", "--max-history", "9", "--history-shift", "0.5", "--base",
            str(base), "--adapt-examples", "21", "--out", str(out), "--base-model", "tiny",
            "--num-cpus", "1", "--num-gpus", "0.5", "--insecure", "--no-plots", "--one-base",
            *DP_ARGS]
    for name, value in simulate_args.items():
        args += [f"--{name}", value]
    result = CliRunner().invoke(coordinator_app, args)
    assert isinstance(result.exception, _Stop), result.output

    settings = seen["settings"]
    assert (seen["data"], seen["out"], seen["base"], seen["plots"]) == (data, out, base, False)
    assert (settings.users, settings.suite, settings.max_history, settings.history_shift,
            settings.adapt.max_examples, settings.base_model, settings.task, settings.num_cpus,
            settings.num_gpus, settings.insecure, settings.one_base) == (
        3, ("base-k0", "oppu-k1"), 9, 0.5, 21, "tiny", "LaMP_2N", 1, 0.5, True, True)
    assert settings.recipe_from_base is False  # --lr given: not the base users' choice
    cohort = load_cohort(data, "LaMP_2N")
    run_config = simulation.simulation_run_config(data, out, cohort.dataset.spec, cohort,
                                                  settings.suite, settings, None)
    client, recipe = _client_recipe(run_config, tmp_path)
    assert client.suite == "base-k0,oppu-k1"
    expected = {**RECIPE_OPTIONS, "peft": "lora", "k": 0, "profile": "none"}  # per variant
    _assert_recipe(recipe, expected)
    assert (run_config[SimKey.MAX_HISTORY], run_config[SimKey.SHIFT]) == (9, 0.5)
    _assert_dp(run_config, client)
    no_dp = simulation.simulation_run_config(data, out, cohort.dataset.spec, cohort,
                                             settings.suite, SimulationSettings(), None)
    assert not {k for k in no_dp if k.startswith("dp-")}  # DP off: the run config as before
    seen.clear()
    multiplier = [*args[:args.index("--dp-epsilon")], "--dp-noise-multiplier", "2"]
    assert isinstance(CliRunner().invoke(coordinator_app, multiplier).exception, _Stop)
    assert seen["settings"].dp.noise_multiplier == 2.0

    covered = {"data", "task", "users", "suite", "max_history", "history_shift", "base",
               "adapt_examples", "out", "base_model", "num_cpus", "num_gpus", "insecure",
               "plots", "one_base", *(name.replace("-", "_") for name in simulate_args),
               *DP_OPTIONS}
    options = set(inspect.signature(simulate_command.simulate).parameters)
    assert options == covered, f"options with no test of where they go: {options - covered}"


def _app_config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]


def test_app_config_keys_are_known_and_defaults_agree() -> None:
    """``flwr run`` users set the same keys, with the same defaults, as the CLIs."""
    config = _app_config()
    run_keys = set(key_names(RunKey))
    sim_keys = {v for k, v in vars(SimKey).items() if k.isupper()}
    round_keys = {f.metadata["key"]: f for f in fields(RoundConfig)}
    unknown = set(config) - run_keys - sim_keys - set(round_keys)
    assert not unknown, f"app config keys nothing reads: {unknown}"
    missing = set(RECIPE_KEYS.values()) - set(config)
    assert not missing, f"recipe keys a `flwr run` user cannot set: {missing}"
    assert config[RunKey.TIMEOUT] == DEFAULT_ROUND_TIMEOUT
    assert config[RunKey.STAGE_TIMEOUT] == DEFAULT_STAGE_TIMEOUT
    for key, value in config.items():
        if key in round_keys and key not in run_keys and key != RoundKey.TASK:
            assert value == round_keys[key].default, key


@pytest.mark.parametrize("key", sorted(set(RECIPE_KEYS.values())))
def test_each_app_config_recipe_key_reaches_the_client(key: str, tmp_path) -> None:
    changed = {RoundKey.PEFT_METHOD: "prompt_tuning", RoundKey.LORA_R: 4,
               RoundKey.LORA_ALPHA: 12, RoundKey.K: 3, RoundKey.PROFILE_MODE: "gpg",
               RoundKey.EPOCHS: 5, RoundKey.LR: 0.003, RoundKey.BATCH_SIZE: 3,
               RoundKey.MAX_STEPS: 7, RoundKey.SEED: 11}[key]
    run_config = {**_app_config(), key: changed}
    default_recipe = _client_recipe(_app_config(), tmp_path)[1]
    _, recipe = _client_recipe(run_config, tmp_path)
    assert recipe != default_recipe, key
    option = next(name for name, k in RECIPE_KEYS.items() if k == key)
    from oppu.shared.personal.recipe import recipe_options

    assert recipe_options(recipe)[option] == changed


def test_a_round_with_unknown_names_is_refused_naming_the_key() -> None:
    for key, value in ((RoundKey.PEFT_METHOD, "lorax"), (RoundKey.PROFILE_MODE, "bio"),
                       (RoundKey.SUITE, "base-k0,oppu-kx")):
        with pytest.raises(ValueError, match=f"'{key}'"):
            RoundConfig(**run_config_overrides({RoundKey.TASK: "LaMP_2N", key: value}))
