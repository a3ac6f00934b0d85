"""``oppu-client keygen``: make (or show) this user's SuperNode key pair for node authentication.

The private key stays in the data dir (owner-only); the public key is what the coordinator's
operator enrolls with ``oppu-coordinator enroll``. Compare the fingerprint with them over a
channel you trust (phone, in person): that is what binds the key to you.
"""

from __future__ import annotations

from typing import Annotated

import typer

from oppu.client.cli.options import DataDirOpt, UserOpt
from oppu.shared.cli_support import console, friendly_errors
from oppu.shared.paths import user_dir


@friendly_errors
def keygen(
    user: UserOpt = "default",
    data_dir: DataDirOpt = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace an existing key (the coordinator must enroll the new one).")
    ] = False,
) -> None:
    """Make your SuperNode key pair (or show the existing one) and print what to send."""
    from oppu.shared.federation.node_auth import (
        generate_node_key,
        load_or_create_node_key,
        node_key_path,
    )

    data = data_dir if data_dir is not None else user_dir(user)
    if force and node_key_path(data).exists():
        key, created = generate_node_key(node_key_path(data)), True
    else:
        key, created = load_or_create_node_key(data)
    console.print(f"{'Made' if created else 'Existing'} node key: {key.private} (private, "
                  f"stays here)\nSend this public key file to the coordinator's operator:\n"
                  f"  {key.public}\nfingerprint {key.fingerprint} (read it to them over a "
                  f"channel you trust)\nThey run: oppu-coordinator enroll "
                  f"{key.public.name} --name {user}", highlight=False)
    typer.echo(key.public.read_text().strip())
