"""``oppu-coordinator enroll``: accept a client's SuperNode key (node authentication).

A coordinator started with node authentication (the default) lets in only SuperNodes whose
public keys are enrolled here: files under ``STATE_DIR/keys/enrolled/``, registered with the
SuperLink through Flower's Control API (what ``flwr supernode register`` does) when it
starts, or at once if it is running. Removing a key unregisters it the same way; Flower
never accepts an unregistered key again in that SuperLink's database. Check the
fingerprint with the key's owner over a channel you trust before enrolling: the key file
itself proves nothing about who sent it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from oppu.coordinator.enrollment import (
    enroll_key,
    enrolled_keys,
    remove_key,
    sync_registrations,
)
from oppu.coordinator.state import StateDir
from oppu.coordinator.superlink import superlink_running
from oppu.shared.cli_support import console, friendly_errors
from oppu.shared.errors import OppuError
from oppu.shared.paths import oppu_home


@friendly_errors
def enroll(
    public_key: Annotated[Path | None, typer.Argument(
        help="A client's public key file (supernode_key.pub from `oppu-client keygen`).")
    ] = None,
    name: Annotated[str | None, typer.Option(
        "--name", help="Name for this SuperNode (default: from its key's fingerprint).")
    ] = None,
    remove: Annotated[str | None, typer.Option(
        "--remove", help="Revoke the key enrolled under this name.")] = None,
    list_keys: Annotated[bool, typer.Option("--list", help="List the enrolled keys.")] = False,
    state_dir: Annotated[Path | None, typer.Option(
        "--state-dir", help="The coordinator's state dir (default: $OPPU_HOME/coordinator).")
    ] = None,
) -> None:
    """Enroll (or --remove, --list) the SuperNode keys this coordinator accepts."""
    from oppu.shared.federation.node_auth import fingerprint

    state = StateDir(state_dir if state_dir is not None else oppu_home() / "coordinator")
    if sum([public_key is not None, remove is not None, list_keys]) != 1:
        raise OppuError("Give one of: a public key file, --remove NAME, or --list.")
    if list_keys:
        keys = enrolled_keys(state)
        for key_name, line in keys.items():
            typer.echo(f"{key_name}  {fingerprint(line)}")
        console.print(f"{len(keys)} enrolled in {state.root}.")
        return
    added = None
    if remove is not None:
        if not remove_key(state, remove):
            raise OppuError(f"No key is enrolled as {remove!r} in {state.root}.")
        console.print(f"Removed {remove}.")
    else:
        added, fp = enroll_key(state, public_key, name=name)
        console.print(f"Enrolled {added} ({fp}). Compare this fingerprint with its owner.",
                      highlight=False)
    if not superlink_running(state):
        console.print("Takes effect when `oppu-coordinator start` next starts the SuperLink.")
        return
    registered = sync_registrations(state)
    if added is not None and added not in registered:
        return  # sync_registrations has warned that it is admitted from the next start
    console.print("The running SuperLink is up to date.")
