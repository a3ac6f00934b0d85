"""The coordinator's Ed25519 signing key: it signs each base manifest, clients pin its public key.

The private key is a PKCS#8 PEM file readable by its owner only (created so, and refused when
group or others can read it, as ssh does). The public key travels to clients out of band (a
PEM file or its ``key_id`` fingerprint, checked by a person); a client verifies every
manifest against that pinned key before it downloads or uses a byte of the base.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from oppu.shared.atomic import write_bytes_atomic
from oppu.shared.errors import OppuError

PUBLIC_SUFFIX = ".pub"
"""The public key is written beside the private one: ``signing_key.pem.pub``."""

PublicKeyLike = Ed25519PublicKey | bytes | str | Path


class SignatureError(OppuError):
    """A signature that does not verify, or a key that is not what was expected."""


def generate_signing_key(path: str | Path) -> Ed25519PrivateKey:
    """Create a new key at ``path`` (owner-only) and its public key at ``path`` + ``.pub``."""
    path = Path(path)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    write_private_bytes(path, pem)
    write_bytes_atomic(public_key_path(path), public_key_pem(key.public_key()))
    return key


def load_signing_key(path: str | Path) -> Ed25519PrivateKey:
    """Read the private key at ``path``; refuse one that others can read."""
    path = Path(path)
    if not path.is_file():
        raise OppuError(f"No signing key at {path}; create one with generate_signing_key.")
    check_owner_only(path)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise OppuError(f"{path} is not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise OppuError(f"{path} holds a {type(key).__name__}, not an Ed25519 key.")
    return key


def load_or_create_signing_key(path: str | Path) -> Ed25519PrivateKey:
    """The key at ``path``, generated on first use."""
    return load_signing_key(path) if Path(path).exists() else generate_signing_key(path)


def public_key_path(private_path: str | Path) -> Path:
    private_path = Path(private_path)
    return private_path.with_name(private_path.name + PUBLIC_SUFFIX)


def public_key_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def load_public_key(key: PublicKeyLike) -> Ed25519PublicKey:
    """A public key from a key object, PEM bytes/text, 32 raw bytes, or a PEM file path."""
    if isinstance(key, Ed25519PublicKey):
        return key
    if isinstance(key, Path):
        key = key.read_bytes()
    elif isinstance(key, str):
        key = key.encode() if key.lstrip().startswith("-----BEGIN") else Path(key).read_bytes()
    if len(key) == 32:
        return Ed25519PublicKey.from_public_bytes(key)
    try:
        loaded = serialization.load_pem_public_key(key)
    except ValueError as exc:
        raise OppuError(f"Not a PEM public key: {exc}") from exc
    if not isinstance(loaded, Ed25519PublicKey):
        raise OppuError(f"Expected an Ed25519 public key, got {type(loaded).__name__}.")
    return loaded


def key_id(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """Short fingerprint of a public key (sha256 of its raw bytes, 16 hex digits)."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign(key: Ed25519PrivateKey, data: bytes) -> bytes:
    return key.sign(data)


def verify(public_key: PublicKeyLike, data: bytes, signature: bytes, *, what: str) -> None:
    """Raise :class:`SignatureError` naming ``what`` unless ``signature`` is ``data``'s."""
    public = load_public_key(public_key)
    try:
        public.verify(signature, data)
    except InvalidSignature:
        raise SignatureError(
            f"The signature on {what} does not verify with the pinned key {key_id(public)}: "
            "it was signed by another key or changed in transit. Refusing to use it."
        ) from None


def write_private_bytes(path: Path, data: bytes) -> None:
    """Write secret material atomically with mode 0600 (never readable by others)."""
    write_bytes_atomic(path, data)  # mkstemp creates the file 0600 before any byte is written
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)


def check_owner_only(path: Path) -> None:
    if os.name == "posix" and path.stat().st_mode & 0o077:
        raise OppuError(f"{path} is readable by other users; run: chmod 600 {path}")
