"""Sealed metrics: a client encrypts its statistics vector so only the coordinator can read it.

Used where SecAgg+ cannot run (fewer than three clients, or switched off). Each message is
sealed to the coordinator's X25519 public key with a fresh ephemeral key pair (ECIES-style):
``key = HKDF-SHA256(X25519(ephemeral, coordinator), info=ephemeral_pub || coordinator_pub)``,
then ChaCha20-Poly1305. The associated data binds the run id, round and node id, so a sealed
vector cannot be replayed into another run, round or node's slot; the SuperLink and anyone on
the path see only ciphertext. The coordinator still sees each client's vector once it opens
it (it keeps only the sum): that is why SecAgg+ is the default from three clients on.

Wire format: ``oppu.v1.SealedMetrics`` (``protos/oppu/v1/metrics.proto``); the plaintext is
``MAGIC || uint32 n || n float64`` little-endian.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from oppu.shared.errors import OppuError
from oppu.shared.federation.signing import check_owner_only, write_private_bytes

MAGIC = b"OPPUSTAT1"
NONCE_BYTES = 12
KEY_BYTES = 32
_HKDF_SALT = b"oppu sealed metrics v1"
_MAX_STATS = 1 << 16


class SealingError(OppuError):
    """A sealed vector that is not for this run, round or node, or was changed in transit."""


def generate_sealing_key(path: str | Path) -> X25519PrivateKey:
    """A new X25519 key at ``path`` (PKCS#8 PEM, owner-only)."""
    key = X25519PrivateKey.generate()
    write_private_bytes(Path(path), key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return key


def load_sealing_key(path: str | Path) -> X25519PrivateKey:
    path = Path(path)
    check_owner_only(path)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, X25519PrivateKey):
        raise OppuError(f"{path} holds a {type(key).__name__}, not an X25519 key.")
    return key


def load_or_create_sealing_key(path: str | Path) -> X25519PrivateKey:
    return load_sealing_key(path) if Path(path).exists() else generate_sealing_key(path)


def public_bytes(key: X25519PrivateKey | X25519PublicKey) -> bytes:
    """The raw 32-byte public key that clients seal to."""
    public = key.public_key() if isinstance(key, X25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def associated_data(run_id: int | str, round_: int, node_id: int | str) -> bytes:
    return f"oppu-sealed-metrics/v1|run={run_id}|round={int(round_)}|node={node_id}".encode()


def _derive(shared: bytes, ephemeral_pub: bytes, recipient_pub: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=_HKDF_SALT,
                info=ephemeral_pub + recipient_pub).derive(shared)


def _pack(vector: Sequence[float]) -> bytes:
    if len(vector) > _MAX_STATS:
        raise ValueError(f"{len(vector)} statistics is more than a sealed vector holds.")
    return MAGIC + struct.pack(f"<I{len(vector)}d", len(vector), *map(float, vector))


def _unpack(plain: bytes) -> list[float]:
    head = len(MAGIC) + 4
    if not plain.startswith(MAGIC) or len(plain) < head:
        raise SealingError("The sealed metrics are not in oppu's format.")
    (count,) = struct.unpack("<I", plain[len(MAGIC):head])
    if len(plain) != head + 8 * count:
        raise SealingError("The sealed metrics have the wrong length.")
    return list(struct.unpack(f"<{count}d", plain[head:]))


def seal_vector(vector: Sequence[float], recipient: bytes | X25519PublicKey, *,
                run_id: int | str, round_: int, node_id: int | str) -> bytes:
    """A serialized ``SealedMetrics`` that only ``recipient``'s private key opens."""
    from oppu.shared.proto.v1 import metrics_pb2

    public = recipient if isinstance(recipient, X25519PublicKey) else (
        X25519PublicKey.from_public_bytes(recipient))
    ephemeral = X25519PrivateKey.generate()
    ephemeral_pub = public_bytes(ephemeral)
    key = _derive(ephemeral.exchange(public), ephemeral_pub, public_bytes(public))
    nonce = os.urandom(NONCE_BYTES)
    ciphertext = ChaCha20Poly1305(key).encrypt(
        nonce, _pack(vector), associated_data(run_id, round_, node_id))
    return metrics_pb2.SealedMetrics(
        ephemeral_public_key=ephemeral_pub, nonce=nonce, ciphertext=ciphertext,
        run_id=str(run_id), round=int(round_), node_id=str(node_id)).SerializeToString()


def open_vector(sealed: bytes, private_key: X25519PrivateKey, *, run_id: int | str,
                round_: int, node_id: int | str) -> list[float]:
    """The vector inside ``sealed``, if it was sealed for this run, round and node."""
    from google.protobuf.message import DecodeError

    from oppu.shared.proto.v1 import metrics_pb2

    message = metrics_pb2.SealedMetrics()
    try:
        message.ParseFromString(sealed)
    except DecodeError as exc:
        raise SealingError(f"Not a SealedMetrics message: {exc}") from None
    claimed = (message.run_id, message.round, message.node_id)
    if claimed != (str(run_id), int(round_), str(node_id)):
        raise SealingError(
            f"Sealed metrics for run {claimed[0]}, round {claimed[1]}, node {claimed[2]} "
            f"arrived in run {run_id}, round {round_} from node {node_id}: refused.")
    if len(message.ephemeral_public_key) != KEY_BYTES or len(message.nonce) != NONCE_BYTES:
        raise SealingError("The sealed metrics carry a malformed key or nonce.")
    ephemeral = X25519PublicKey.from_public_bytes(message.ephemeral_public_key)
    key = _derive(private_key.exchange(ephemeral), message.ephemeral_public_key,
                  public_bytes(private_key))
    try:
        plain = ChaCha20Poly1305(key).decrypt(
            message.nonce, message.ciphertext, associated_data(run_id, round_, node_id))
    except InvalidTag:
        raise SealingError(
            "Sealed metrics do not decrypt: sealed to another coordinator key, for another "
            "run/round/node, or changed in transit. Refused.") from None
    return _unpack(plain)
