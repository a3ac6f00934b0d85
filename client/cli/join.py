"""``oppu-client join``: take part in a coordinator's rounds; only metric statistics leave.

Starts a Flower SuperNode connected to the coordinator's SuperLink and waits for rounds. For
each round the ClientApp (``oppu.client.client_app``) trains this user's adapter on the
history named here and sends back encrypted statistics; the history path, the adapter and
any profile stay on this machine (they sit in the SuperNode's node config and data dir).

Trust (SECURITY.md): the SuperNode proves itself with this user's node key (``oppu-client
keygen``; the coordinator's operator enrolls its public half), and runs only oppu's own app
bundle, signed by the coordinator's pinned key (``oppu.shared.federation.fab_trust``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from oppu.client.cli.options import DataDirOpt, DeviceOpt, UserOpt
from oppu.client.rejoin import Rejoin, auth_refusal, exit_reason
from oppu.shared.cli_support import console, friendly_errors, stop_cleanly_on_sigterm
from oppu.shared.errors import OppuError
from oppu.shared.federation.keys import NodeConfigKey
from oppu.shared.federation.node_config import node_config_arg
from oppu.shared.federation.processes import flower_env, free_port, launch, log_since, stop
from oppu.shared.paths import user_dir

ROUND_POLL_S = 2.0
"""How often ``join`` looks for a round the client finished, to show its results."""


def supernode_command(coordinator: str, *, history: Path, data_dir: Path, port: int,
                      ca: Path | None = None, insecure: bool = False,
                      coordinator_key: Path | None = None, base_store: str | None = None,
                      base_cache: Path | None = None, audit_log: Path | None = None,
                      device: str = "auto", auth_key: Path | None = None,
                      fab_gate: bool = True) -> list[str]:
    """The SuperNode command line for one user (tests start it the same way).

    ``auth_key``: the node's private key (``--auth-supernode-private-key``), checked
    owner-only. ``fab_gate``: run ``flower-supernode`` through oppu's FAB gate, which
    refuses app bundles that carry code or (with ``coordinator_key``) lack its signature.
    """
    if insecure and ca is not None:
        raise OppuError("Pass either --ca (TLS, the default) or --insecure, not both.")
    if insecure and auth_key is not None:
        raise OppuError("SuperNode authentication needs TLS: drop --insecure, or join "
                        "with --no-node-auth.")
    node: dict[str, str | bool] = {NodeConfigKey.HISTORY_PATH: str(history.resolve()),
                                   NodeConfigKey.DATA_DIR: str(data_dir.resolve()),
                                   NodeConfigKey.DEVICE: device}
    if insecure:
        node[NodeConfigKey.INSECURE] = True
    optional = {NodeConfigKey.CA_PATH: ca, NodeConfigKey.COORDINATOR_KEY: coordinator_key,
                NodeConfigKey.BASE_CACHE: base_cache, NodeConfigKey.AUDIT_LOG: audit_log}
    node.update({key: str(Path(value).resolve()) for key, value in optional.items() if value})
    if base_store:
        node[NodeConfigKey.BASE_ADDRESS] = base_store
    args = ["--superlink", coordinator, "--port", str(port),
            "--node-config", node_config_arg(node)]
    if auth_key is not None:
        from oppu.shared.federation.node_auth import check_node_key

        args += ["--auth-supernode-private-key", str(check_node_key(auth_key).private.resolve())]
    if insecure:
        args.append("--insecure")
    elif ca:
        args += ["--root-certificates", str(ca.resolve())]
    if not fab_gate:
        return ["flower-supernode", *args]
    from oppu.shared.federation.fab_trust import launch_command

    return launch_command("flower-supernode", args, trusted_key=coordinator_key)


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
        "--coordinator-key", help="Pin the coordinator's signing key (signing_key.pem.pub): "
        "the base and every app bundle must carry its signature. Default: trust the key the "
        "round names, over TLS, and accept unsigned (code-free) app bundles.")] = None,
    node_auth: Annotated[bool | None, typer.Option(
        "--node-auth/--no-node-auth", help="Authenticate this SuperNode with your node key "
        "(made on first use, see `oppu-client keygen`); default: on unless --insecure.")
    ] = None,
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
    if insecure and ca is not None:
        raise OppuError("Pass either --ca (TLS, the default) or --insecure, not both.")
    if node_auth and insecure:
        raise OppuError("SuperNode authentication needs TLS: drop --insecure or --node-auth.")
    if not insecure and ca is None:
        console.print("[yellow]No --ca given: the coordinator's certificate must be trusted "
                      "by this system's roots.[/]")
    if coordinator_key is None:
        console.print("[yellow]No --coordinator-key: app bundles are checked for code but "
                      "not for the coordinator's signature.[/]")
    if task is not None:
        from oppu.shared.data import read_history
        from oppu.shared.tasks import get_task

        items = read_history(history, get_task(task))
        console.print(f"{len(items)} history items are valid for {task}.")
    data = data_dir if data_dir is not None else user_dir(user)
    data.mkdir(parents=True, exist_ok=True)
    auth_key = None
    if node_auth if node_auth is not None else not insecure:
        from oppu.shared.federation.node_auth import load_or_create_node_key

        key, created = load_or_create_node_key(data)
        auth_key = key.private
        if created:
            console.print(f"Made your node key; the coordinator's operator must enroll its "
                          f"public half before you can take part:\n  {key.public}  "
                          f"(fingerprint {key.fingerprint})\nThey run: oppu-coordinator "
                          f"enroll {key.public.name} --name {user}")
    cmd = supernode_command(coordinator, history=history, data_dir=data,
                            port=port or free_port(), ca=ca, insecure=insecure,
                            coordinator_key=coordinator_key, base_store=base_store,
                            audit_log=data / "sent.jsonl" if audit else None, device=device,
                            auth_key=auth_key)
    log_path = data / "supernode.log"
    stop_cleanly_on_sigterm()
    env = flower_env(data / "flwr")
    console.print(f"Joining {coordinator} (Ctrl-C to leave). Log: {log_path}")
    rejoin = Rejoin()
    while True:
        mark = log_path.stat().st_size if log_path.is_file() else 0
        code = _run_supernode(cmd, log_path, env, data / "federation")
        this_run = log_since(log_path, mark)
        refused = auth_refusal(this_run)
        wait = rejoin.after_exit(this_run)
        if wait is None:
            break
        # Flower keeps a session of this node that failed or crashed online for up to two
        # 30 s heartbeats and refuses its key meanwhile; a restarted SuperLink drops it.
        console.print(f"[yellow]The SuperNode exited ({refused or f'code {code}'}); "
                      f"starting it again in {wait:.0f} s.[/]")
        time.sleep(wait)
    if refused and auth_key:
        raise OppuError(f"The coordinator refused this node's key ({refused}). Send "
                        f"{auth_key}.pub to its operator to enroll (`oppu-coordinator "
                        "enroll`), or join with --no-node-auth if it runs without node "
                        "authentication.")
    reason = exit_reason(this_run) or (f"exit status {code}, not back in within "
                                       f"{rejoin.window_s:.0f} s")
    raise OppuError(f"The SuperNode stopped ({reason}); see {log_path}.")


def _run_supernode(cmd: list[str], log_path: Path, env: dict[str, str],
                   records: Path) -> int:
    """Run the SuperNode until it exits, showing each round's own results as it ends;
    Ctrl-C stops it and leaves the federation."""
    proc = launch(cmd, log_path=log_path, env=env)
    shown = set(records.glob("run-*.json"))
    try:
        while proc.poll() is None:
            time.sleep(ROUND_POLL_S)
            shown |= show_new_rounds(records, shown)
        show_new_rounds(records, shown)
        return proc.returncode
    except KeyboardInterrupt:
        console.print("Leaving the federation...")
        stop(proc)
        raise typer.Exit(130) from None
    finally:
        if proc.poll() is None:
            stop(proc)


def show_new_rounds(records: Path, shown: set[Path]) -> set[Path]:
    """Print the rounds this client finished since ``shown`` (its own records, which never
    leave the machine); the record files printed."""
    new = sorted(set(records.glob("run-*.json")) - shown, key=lambda p: p.stat().st_mtime)
    for path in new:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        metrics = record.get("metrics", {})
        shown_metrics = "; ".join(
            f"{name}: {_numbers(values)}" for name, values in metrics.items()
            if isinstance(values, dict)) or _numbers(metrics)
        trained = sum((record.get("trained_examples") or {}).values())
        console.print(
            f"Round {record.get('round')} done (run {record.get('run_id')}): {shown_metrics} on "
            f"your {record.get('evaluated')} newest items; trained on {trained} example(s)"
            f"{', continuing your adapter' if record.get('continued') else ''}. Only encrypted "
            "statistics left this machine.", highlight=False)
    return set(new)


def _numbers(values: dict) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in values.items()
                     if isinstance(v, int | float) and k != "count")

