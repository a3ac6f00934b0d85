"""Enrolled SuperNode keys: which clients this coordinator's SuperLink admits.

Node authentication admits only SuperNodes whose public keys the operator enrolled
(``oppu-coordinator enroll``). The keys live in the state dir; ``sync_registrations`` makes
the running SuperLink's registered keys equal them through ``coordinator/node_registry.py``,
which runs in a child process under the flwr CLI's ``FLWR_HOME``.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

from oppu.coordinator.state import StateDir
from oppu.coordinator.superlink import CONNECTION, json_tail
from oppu.shared.atomic import write_text_atomic
from oppu.shared.errors import OppuError
from oppu.shared.federation.processes import flower_env

log = logging.getLogger(__name__)

ENROLLED_DIR = "enrolled"
"""``keys/enrolled/<name>.pub``: the SuperNode public keys this coordinator accepts."""


def enrolled_dir(state: StateDir) -> Path:
    return state.root / "keys" / ENROLLED_DIR


def enrolled_keys(state: StateDir) -> dict[str, bytes]:
    """Name -> OpenSSH public key line, for every enrolled SuperNode key."""
    from oppu.shared.federation.node_auth import PUBLIC_SUFFIX, read_public_key

    folder = enrolled_dir(state)
    if not folder.is_dir():
        return {}
    return {p.name.removesuffix(PUBLIC_SUFFIX): read_public_key(p)
            for p in sorted(folder.glob(f"*{PUBLIC_SUFFIX}"))}


def enroll_key(state: StateDir, public_key: str | Path | bytes, *,
               name: str | None = None) -> tuple[str, str]:
    """Accept a SuperNode's public key: returns (name, fingerprint). Idempotent per key."""
    from oppu.shared.federation.node_auth import (
        PUBLIC_SUFFIX,
        check_node_name,
        default_node_name,
        fingerprint,
        read_public_key,
    )

    line = read_public_key(public_key)
    name = check_node_name(name or default_node_name(line))
    for other, other_line in enrolled_keys(state).items():
        if other_line == line and other != name:
            raise OppuError(f"This key is already enrolled as {other!r}.")
        if other == name and other_line != line:
            raise OppuError(f"{name!r} is enrolled with another key; remove it first "
                            f"(`oppu-coordinator enroll --remove {name}`).")
    path = enrolled_dir(state) / f"{name}{PUBLIC_SUFFIX}"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, f"{line.decode()} {name}\n")
    return name, fingerprint(line)


def remove_key(state: StateDir, name: str) -> bool:
    """Forget an enrolled key (the SuperLink drops it at the next ``sync_registrations``)."""
    from oppu.shared.federation.node_auth import PUBLIC_SUFFIX, check_node_name

    path = enrolled_dir(state) / f"{check_node_name(name)}{PUBLIC_SUFFIX}"
    if not path.is_file():
        return False
    path.unlink()
    return True


def node_statuses(state: StateDir) -> list[dict]:
    """Every node the running SuperLink knows: ``{"node_id", "name", "status"}`` each
    (status ``online`` while it heartbeats)."""
    return list(_node_registry(state, "list the SuperLink's nodes", "--list")["nodes"])


def _node_registry(state: StateDir, doing: str, *args: str, stdin: str = "") -> dict:
    """Run ``oppu.coordinator.node_registry`` against the running SuperLink; its JSON."""
    proc = subprocess.run([sys.executable, "-m", "oppu.coordinator.node_registry", CONNECTION,
                           *args], input=stdin, env=flower_env(state.flwr_home), text=True,
                          capture_output=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise OppuError(f"Could not {doing}:\n{(proc.stdout + proc.stderr)[-2000:]}")
    return json_tail(proc.stdout)


def sync_registrations(state: StateDir) -> dict[str, int]:
    """Make the running SuperLink's registered keys equal the enrolled ones.

    Registers each enrolled key it does not hold and unregisters named nodes no longer
    enrolled (``coordinator/node_registry.py``, one Control API connection for all keys);
    returns {name: node id} of the keys registered now. A key unregistered since this
    SuperLink started stays out of it (Flower keeps the key of an unregistered node
    unique); the next start, on a fresh SuperLink, registers it (``_revoked_until_restart``).
    """
    enrolled = {name: line.decode() for name, line in enrolled_keys(state).items()}
    result = _node_registry(state, "update the SuperLink's SuperNode keys",
                            stdin=json.dumps(enrolled))
    if result["removed"]:
        log.info("Unregistered SuperNodes no longer enrolled: %s", ", ".join(result["removed"]))
    if result["revoked"]:
        log.warning(_revoked_until_restart(result["revoked"]))
    return {name: int(node_id) for name, node_id in result["nodes"].items()}


def _revoked_until_restart(names: list[str]) -> str:
    """What to tell the operator of keys enrolled again after a removal."""
    return (f"{', '.join(names)} was removed since this coordinator started: the running "
            "SuperLink keeps a removed key out, so it is admitted again from the coordinator's "
            "next start (which registers every enrolled key into a fresh SuperLink).")
