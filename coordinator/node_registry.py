"""Make the SuperLink's registered SuperNode keys equal oppu's enrolled ones, in one process.

``flwr supernode register/unregister/list`` do this one call per process (a few seconds each
on a small machine) and ``list --format json`` leaves out the keys. This module makes the same
Control API calls the ``flwr supernode`` commands make (``flwr/cli/supernode/register.py``:
``init_http_client_from_connection`` + ``RegisterNode``; ``ListNodes``; ``UnregisterNode``)
over one connection. ``sync_registrations`` in ``coordinator/enrollment.py`` runs it as
``python -m oppu.coordinator.node_registry CONNECTION`` with ``FLWR_HOME`` set to the
coordinator's flwr home, the enrolled keys as JSON ``{name: "ecdsa-sha2-... AAAA..."}`` on
stdin; it prints ``{"nodes": {name: node_id}, "removed": [...], "revoked": [...]}``. With
``--list`` it changes nothing and prints ``{"nodes": [{"node_id", "name", "status"}]}``
(status: Flower's registered, online, offline or unregistered).

Flower keeps an unregistered node's row, and its public key stays unique in the database, so a
revoked key cannot be registered again there: such names come back under ``revoked``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping

UNREGISTERED = "unregistered"
"""Flower's status of a revoked node (``flwr/supercore/constant.py``: ``NodeStatus``)."""


def spki_pem(openssh_line: str) -> bytes:
    """The key as Flower stores it (``public_key_to_bytes``: SubjectPublicKeyInfo PEM)."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_ssh_public_key(openssh_line.encode())
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def reconcile(client, enrolled: Mapping[str, str]) -> dict:
    """Register enrolled keys the SuperLink lacks; unregister named ones no longer enrolled.

    Nodes without a name (self-registered when node authentication is off) are left alone.
    """
    from flwr.proto.control_pb2 import (
        ListNodesRequest,
        RegisterNodeRequest,
        UnregisterNodeRequest,
    )

    wanted = {spki_pem(line): name for name, line in enrolled.items()}
    live: dict[bytes, int] = {}
    revoked_keys: set[bytes] = set()
    removed: list[str] = []
    for info in client.ListNodes(ListNodesRequest()).nodes_info:
        key = bytes(info.public_key)
        if info.status == UNREGISTERED:
            revoked_keys.add(key)
        elif key in wanted:
            live[key] = info.node_id
        elif info.HasField("name"):
            client.UnregisterNode(UnregisterNodeRequest(node_id=info.node_id))
            removed.append(info.name)
    nodes: dict[str, int] = {}
    revoked: list[str] = []
    for key, name in wanted.items():
        if key in live:
            nodes[name] = live[key]
        elif key in revoked_keys:
            revoked.append(name)
        else:
            nodes[name] = client.RegisterNode(
                RegisterNodeRequest(public_key=key, name=name)).node_id
    return {"nodes": nodes, "removed": removed, "revoked": revoked}


def listing(client) -> dict:
    """Every node the SuperLink knows, with its status; nothing changes."""
    from flwr.proto.control_pb2 import ListNodesRequest

    return {"nodes": [{"node_id": info.node_id, "status": info.status,
                       "name": info.name if info.HasField("name") else ""}
                      for info in client.ListNodes(ListNodesRequest()).nodes_info]}


def main(argv: list[str] | None = None) -> None:
    from flwr.cli.flower_config import read_superlink_connection
    from flwr.cli.utils import init_http_client_from_connection

    argv = sys.argv[1:] if argv is None else argv
    list_only = "--list" in argv
    connection = next(a for a in argv if a != "--list")
    enrolled = {} if list_only else json.loads(sys.stdin.read() or "{}")
    client = init_http_client_from_connection(read_superlink_connection(connection))
    try:
        result = listing(client) if list_only else reconcile(client, enrolled)
    finally:
        client.close()
    print("\n" + json.dumps(result))


if __name__ == "__main__":
    main()
