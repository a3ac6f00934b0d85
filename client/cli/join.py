"""``oppu-client join``: take part in a coordinator's rounds; only metric statistics leave.

Starts a Flower SuperNode connected to the coordinator's SuperLink and waits for rounds. For
each round the ClientApp (``oppu.client.client_app``) trains this user's adapter on the
history named here and sends back encrypted statistics; the history path, the adapter and
any profile stay on this machine (they sit in the SuperNode's node config and data dir).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from oppu.client.cli import app
from oppu.client.cli.options import DataDirOpt, DeviceOpt, UserOpt
from oppu.shared.cli_support import console, friendly_errors, stop_cleanly_on_sigterm
from oppu.shared.errors import OppuError
from oppu.shared.federation import (
    NodeKey,
    flower_env,
    free_port,
    launch,
    node_config_arg,
    stop,
)
from oppu.shared.paths import user_dir


def supernode_command(coordinator: str, *, history: Path, data_dir: Path, port: int,
                      ca: Path | None = None, insecure: bool = False,
                      coordinator_key: Path | None = None, base_store: str | None = None,
                      base_cache: Path | None = None, audit_log: Path | None = None,
                      device: str = "auto") -> list[str]:
    """The ``flower-supernode`` command line for one user (tests start it the same way)."""
    if insecure and ca is not None:
        raise OppuError("Pass either --ca (TLS, the default) or --insecure, not both.")
    node: dict[str, str | bool] = {NodeKey.HISTORY_PATH: str(history.resolve()),
                                   NodeKey.DATA_DIR: str(data_dir.resolve()),
                                   NodeKey.DEVICE: device}
    if insecure:
        node[NodeKey.INSECURE] = True
    optional = {NodeKey.CA_PATH: ca, NodeKey.COORDINATOR_KEY: coordinator_key,
                NodeKey.BASE_CACHE: base_cache, NodeKey.AUDIT_LOG: audit_log}
    node.update({key: str(Path(value).resolve()) for key, value in optional.items() if value})
    if base_store:
        node[NodeKey.BASE_ADDRESS] = base_store
    cmd = ["flower-supernode", "--superlink", coordinator, "--port", str(port),
           "--node-config", node_config_arg(node)]
    if insecure:
        return [*cmd, "--insecure"]
    return [*cmd, "--root-certificates", str(ca.resolve())] if ca else cmd


@app.command()
@friendly_errors
def join(
    history: Annotated[Path, typer.Option("--history", help="Your history (JSONL); stays here.")],
    coordinator: Annotated[str, typer.Option(
        "--coordinator", help="The coordinator's SuperLink, HOST:PORT.")],
    ca: Annotated[Path | None, typer.Option(
        "--ca", help="The coordinator's CA certificate (ca.pem) for TLS.")] = None,
    insecure: Annotated[bool, typer.Option(
        "--insecure", help="No TLS (only against a coordinator started with --insecure).")
    ] = False,
    coordinator_key: Annotated[Path | None, typer.Option(
        "--coordinator-key", help="Pin the coordinator's signing key (signing_key.pem.pub); "
        "default: trust the key the round names, over TLS.")] = None,
    base_store: Annotated[str | None, typer.Option(
        "--base-store", help="Where to fetch the base, HOST:PORT (default: as the round "
        "says).")] = None,
    task: Annotated[str | None, typer.Option(
        "--task", help="Check the history against this task before joining.")] = None,
    user: UserOpt = "default",
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "auto",
    port: Annotated[int, typer.Option(
        "--port", help="Local port for the SuperNode's ClientApp API (0: any free).")] = 0,
    audit: Annotated[bool, typer.Option(
        "--audit/--no-audit", help="Log every reply this client sends to DATA_DIR/sent.jsonl."
    )] = True,
) -> None:
    """Join a federation: train your adapter each round, share only encrypted metrics."""
    if not history.is_file():
        raise OppuError(f"No history file at {history}.")
    if not insecure and ca is None:
        console.print("[yellow]No --ca given: the coordinator's certificate must be trusted "
                      "by this system's roots.[/]")
    if task is not None:
        from oppu.shared.data import read_history
        from oppu.shared.tasks import get_task

        items = read_history(history, get_task(task))
        console.print(f"{len(items)} history items are valid for {task}.")
    data = data_dir if data_dir is not None else user_dir(user)
    data.mkdir(parents=True, exist_ok=True)
    cmd = supernode_command(coordinator, history=history, data_dir=data,
                            port=port or free_port(), ca=ca, insecure=insecure,
                            coordinator_key=coordinator_key, base_store=base_store,
                            audit_log=data / "sent.jsonl" if audit else None, device=device)
    log_path = data / "supernode.log"
    stop_cleanly_on_sigterm()
    proc = launch(cmd, log_path=log_path, env=flower_env(data / "flwr"))
    console.print(f"Joined {coordinator}; waiting for rounds (Ctrl-C to leave). "
                  f"Log: {log_path}")
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        console.print("Leaving the federation...")
        stop(proc)
        raise typer.Exit(130) from None
    finally:
        if proc.poll() is None:
            stop(proc)
    if code != 0:
        raise OppuError(f"The SuperNode stopped ({code}); see {log_path}.")

