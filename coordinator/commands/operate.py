"""``oppu-coordinator round|status|publish``: drive a running coordinator (``start``).

They talk to its Operator service on 127.0.0.1 with the token from its state dir, so they
run on the coordinator's machine, as its operator.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from oppu.coordinator import operator_client
from oppu.coordinator.state import StateDir
from oppu.shared.cli_support import console, friendly_errors
from oppu.shared.errors import ConfigError, OppuError
from oppu.shared.paths import oppu_home

StateDirOpt = Annotated[Path | None, typer.Option(
    "--state-dir", help="The running coordinator's state dir (default: "
    "$OPPU_HOME/coordinator).")]


def _state(state_dir: Path | None) -> StateDir:
    return StateDir(state_dir if state_dir is not None else oppu_home() / "coordinator")


@friendly_errors
def round_(
    run_config: Annotated[list[str] | None, typer.Option(
        "--run-config", help="Settings for this round, as `flwr run --run-config`: "
        "'k=1 suite=\"base-k0,oppu-k1\"' (keys as in pyproject's [tool.flwr.app.config] "
        "and RoundKey); the rest as the coordinator was started.")] = None,
    state_dir: StateDirOpt = None,
) -> None:
    """Run one round now (after a round in progress) and print its table."""
    from click import ClickException
    from flwr.common.config import parse_config_args

    try:
        overrides = parse_config_args(run_config)
    except (ValueError, ClickException) as exc:  # Flower's parser raises the latter
        message = exc.format_message() if isinstance(exc, ClickException) else str(exc)
        raise ConfigError(f"--run-config: {message}") from None
    state = _state(state_dir)
    console.print(f"Asking the coordinator of {state.root} for a round"
                  f"{' with ' + json.dumps(overrides) if overrides else ''}...", highlight=False)
    reply = operator_client.run_round(state, overrides)
    if reply.status != "done":
        raise OppuError(f"Round (run {reply.run_id or '-'}) failed: {reply.error}")
    typer.echo(reply.table)


@friendly_errors
def status(
    state_dir: StateDirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw status.")] = False,
) -> None:
    """Connected and enrolled nodes, the schedule, the rounds run and how they ended."""
    info = operator_client.status(_state(state_dir))
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    online = [n for n in info["nodes"] if n.get("status") == "online"]
    schedule = info["schedule"]
    lines = [f"Coordinator at {info['address']}; bases: "
             + ", ".join(f"{n} {v[:12]}" for n, v in info["bases"].items()),
             f"Nodes: {len(online)} online of {len(info['nodes'])} known; "
             f"{len(info['enrolled'])} keys enrolled.",
             f"Schedule: {schedule['scheduled_done']} of "
             f"{schedule['rounds'] or 'unlimited'} rounds done, every {schedule['every']:.0f} s "
             f"with at least {schedule['min_clients']} clients; {info['queued']} queued."]
    for entry in info["rounds"]:
        lines.append(f"  round {entry['number']:>3} {entry['source']:<9} {entry['status']:<11} "
                     f"run {entry['run_id'] or '-':<20} clients {entry['clients']}"
                     + (f"  {entry['error'][:80]}" if entry["error"] else ""))
    typer.echo("\n".join(lines))


@friendly_errors
def publish(
    base: Annotated[Path, typer.Argument(help="A base artifact dir (`oppu-coordinator adapt`) "
                                        "on this machine.")],
    state_dir: StateDirOpt = None,
) -> None:
    """Serve a new base version: clients fetch and verify it at their next round."""
    reply = operator_client.publish(_state(state_dir), str(base.expanduser().resolve()))
    console.print(f"Serving the {reply.name} base {reply.version[:12]} from the next round.",
                  highlight=False)
