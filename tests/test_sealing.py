"""Sealed metrics (X25519 + HKDF + ChaCha20-Poly1305): only the coordinator opens them, and
only for the run, round and node they were sealed for."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from oppu.shared.federation.sealing import (
    SealingError,
    load_or_create_sealing_key,
    load_sealing_key,
    open_vector,
    public_bytes,
    seal_vector,
)
from oppu.shared.proto.v1 import metrics_pb2

VECTOR = [5.0, 3.0, 0.0, 1.0, 2.5, 1e-9, 4096.0]
WHERE = {"run_id": 1234567890123, "round_": 1, "node_id": 987654321}


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    return tmp_path / "coordinator" / "sealing_key.pem"


def test_round_trip_is_exact(key_path: Path) -> None:
    key = load_or_create_sealing_key(key_path)
    sealed = seal_vector(VECTOR, public_bytes(key), **WHERE)
    assert open_vector(sealed, load_sealing_key(key_path), **WHERE) == VECTOR
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600


def test_plaintext_is_not_on_the_wire(key_path: Path) -> None:
    import struct

    key = load_or_create_sealing_key(key_path)
    sealed = seal_vector(VECTOR, public_bytes(key), **WHERE)
    for value in VECTOR[:5]:
        assert struct.pack("<d", value) not in sealed or value == 0.0
    # Two seals of the same vector share nothing but the routing fields.
    again = seal_vector(VECTOR, public_bytes(key), **WHERE)
    first, second = metrics_pb2.SealedMetrics(), metrics_pb2.SealedMetrics()
    first.ParseFromString(sealed)
    second.ParseFromString(again)
    assert first.ciphertext != second.ciphertext
    assert first.ephemeral_public_key != second.ephemeral_public_key


@pytest.mark.parametrize("field,value", [("run_id", 1), ("round_", 2), ("node_id", 42)])
def test_wrong_run_round_or_node_is_refused(key_path: Path, field: str, value: int) -> None:
    key = load_or_create_sealing_key(key_path)
    sealed = seal_vector(VECTOR, public_bytes(key), **WHERE)
    with pytest.raises(SealingError, match=r"(?i)refused"):
        open_vector(sealed, key, **{**WHERE, field: value})


def test_relabelled_routing_fields_do_not_decrypt(key_path: Path) -> None:
    """Editing the clear routing fields to match another slot still fails the AEAD check."""
    key = load_or_create_sealing_key(key_path)
    message = metrics_pb2.SealedMetrics()
    message.ParseFromString(seal_vector(VECTOR, public_bytes(key), **WHERE))
    message.node_id = "42"
    with pytest.raises(SealingError, match="do not decrypt"):
        open_vector(message.SerializeToString(), key, **{**WHERE, "node_id": 42})


@pytest.mark.parametrize("part", ["ciphertext", "nonce", "ephemeral_public_key"])
def test_tampering_is_refused(key_path: Path, part: str) -> None:
    key = load_or_create_sealing_key(key_path)
    message = metrics_pb2.SealedMetrics()
    message.ParseFromString(seal_vector(VECTOR, public_bytes(key), **WHERE))
    data = bytearray(getattr(message, part))
    data[len(data) // 2] ^= 0x01
    setattr(message, part, bytes(data))
    with pytest.raises(SealingError):
        open_vector(message.SerializeToString(), key, **WHERE)


def test_another_coordinators_key_cannot_open(tmp_path: Path, key_path: Path) -> None:
    key = load_or_create_sealing_key(key_path)
    other = load_or_create_sealing_key(tmp_path / "other.pem")
    sealed = seal_vector(VECTOR, public_bytes(key), **WHERE)
    with pytest.raises(SealingError, match="do not decrypt"):
        open_vector(sealed, other, **WHERE)


def test_garbage_is_refused(key_path: Path) -> None:
    key = load_or_create_sealing_key(key_path)
    with pytest.raises(SealingError):
        open_vector(b"\xff\x00not a proto", key, **WHERE)


def test_key_readable_by_others_is_refused(key_path: Path) -> None:
    from oppu.shared.errors import OppuError

    load_or_create_sealing_key(key_path)
    key_path.chmod(0o644)
    with pytest.raises(OppuError, match="chmod 600"):
        load_sealing_key(key_path)
