"""SuperNode authentication keys: a client's identity towards the coordinator's SuperLink.

How Flower 1.42 does it (``flwr/superlink/routers/fleet/node_auth.py``,
``flwr/supernode/node_auth_http_interceptor.py``, ``flwr/cli/supernode/register.py``):

- every SuperNode signs each Fleet request: headers carry its public key and an ECDSA
  signature over a fresh timestamp; the SuperLink checks the signature, the time window and
  that the key belongs to the node id the request names;
- ``flower-superlink --enable-supernode-auth`` (needs TLS) turns off self-registration: only
  public keys registered beforehand through the Control API (``flwr supernode register
  KEY.pub``) can activate a node;
- ``flower-supernode --auth-supernode-private-key KEY`` names the node's private key
  (OpenSSH format, a NIST EC curve); without it the SuperNode makes a throw-away key and
  tries to self-register, which such a SuperLink refuses.

Here the client generates its own key pair (``oppu-client keygen``, or on first ``join``);
the private key never leaves its data dir and is owner-only (refused otherwise, as ssh does);
the public key, one ``ecdsa-sha2-nistp384 ...`` line, goes to the coordinator's operator, who
enrolls it (``oppu-coordinator enroll``). Compare fingerprints over another channel.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from oppu.shared.atomic import write_bytes_atomic
from oppu.shared.errors import OppuError
from oppu.shared.federation.signing import check_owner_only, write_private_bytes

NODE_KEY_DIR = "node_auth"
"""Folder under a client's data dir that holds its SuperNode key pair."""
NODE_KEY = "supernode_key"
"""Private key file name (OpenSSH format, 0600); the public key is ``supernode_key.pub``."""
PUBLIC_SUFFIX = ".pub"
CURVE = ec.SECP384R1
"""P-384, the curve Flower's documentation uses (any NIST curve is accepted)."""
NIST_CURVES = ("secp256r1", "secp384r1", "secp521r1")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class NodeKey:
    """Where one client's key pair lives, and the public key's fingerprint."""

    private: Path
    public: Path
    fingerprint: str


def node_key_path(data_dir: str | Path) -> Path:
    """The private key's path for a client data dir."""
    return Path(data_dir) / NODE_KEY_DIR / NODE_KEY


def public_path(private: str | Path) -> Path:
    private = Path(private)
    return private.with_name(private.name + PUBLIC_SUFFIX)


def generate_node_key(private: str | Path) -> NodeKey:
    """A fresh P-384 key pair: private key 0600 (OpenSSH PEM), public key one OpenSSH line."""
    private = Path(private)
    key = ec.generate_private_key(CURVE())
    write_private_bytes(private, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption()))
    line = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                         serialization.PublicFormat.OpenSSH)
    write_bytes_atomic(public_path(private), line + b" oppu-supernode\n")
    return NodeKey(private, public_path(private), fingerprint(line))


def load_or_create_node_key(data_dir: str | Path) -> tuple[NodeKey, bool]:
    """The data dir's key pair (checked), generated when missing; True if it was just made."""
    private = node_key_path(data_dir)
    if private.exists():
        return check_node_key(private), False
    return generate_node_key(private), True


def check_node_key(private: str | Path) -> NodeKey:
    """Refuse a private key that is missing, readable by others or not what Flower takes."""
    private = Path(private)
    if not private.is_file():
        raise OppuError(f"No SuperNode key at {private}; create one with `oppu-client keygen`.")
    check_owner_only(private)
    try:
        key = serialization.load_ssh_private_key(private.read_bytes(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise OppuError(f"{private} is not an unencrypted OpenSSH private key: {exc}. "
                        "Create a new one with `oppu-client keygen --force`.") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name not in NIST_CURVES:
        raise OppuError(f"{private} is not an ECDSA key on a NIST curve (Flower needs one); "
                        "create a new one with `oppu-client keygen --force`.")
    line = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                         serialization.PublicFormat.OpenSSH)
    pub = public_path(private)
    if not pub.is_file() or read_public_key(pub) != line:
        write_bytes_atomic(pub, line + b" oppu-supernode\n")  # derived, so safe to rewrite
    return NodeKey(private, pub, fingerprint(line))


def read_public_key(source: str | Path | bytes) -> bytes:
    """The canonical ``ecdsa-sha2-nistp... AAAA...`` line (comment dropped), validated.

    ``source`` is a file path, or the key line itself (bytes or a str starting ``ecdsa-``).
    """
    if isinstance(source, bytes):
        data = source
    elif isinstance(source, str) and source.lstrip().startswith("ecdsa-"):
        data = source.encode()
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise OppuError(f"No public key file at {path}.")
        data = path.read_bytes()
    if b"PRIVATE KEY" in data:
        raise OppuError("That is a private key: send and enroll only the .pub file.")
    try:
        key = serialization.load_ssh_public_key(data.strip())
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise OppuError(f"Not an OpenSSH public key line: {exc}. Expected the contents of "
                        f"{NODE_KEY}{PUBLIC_SUFFIX} from `oppu-client keygen`.") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in NIST_CURVES:
        raise OppuError("Flower's SuperNode authentication needs an ECDSA key on a NIST "
                        "curve (ecdsa-sha2-nistp256/384/521); this is not one.")
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)


def fingerprint(public: bytes | str | Path) -> str:
    """``SHA256:...`` as ``ssh-keygen -lf`` prints it, for comparing keys by eye."""
    line = read_public_key(public)
    blob = base64.b64decode(line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def check_node_name(name: str) -> str:
    """A node name Flower and file systems accept (it names the enrolled key's file)."""
    if not NAME_PATTERN.match(name):
        raise OppuError(f"Invalid node name {name!r}: use 1-64 letters, digits, '.', '_' or "
                        "'-', starting with a letter or digit.")
    return name


def default_node_name(public: bytes | str | Path) -> str:
    """A stable name for a key the operator did not name: ``node-`` + fingerprint prefix."""
    digest = fingerprint(public).removeprefix("SHA256:")
    return "node-" + re.sub(r"[^A-Za-z0-9]", "", digest)[:12].lower()
