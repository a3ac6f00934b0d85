"""Adapters encrypted at rest with a passphrase, so a copied disk or backup does not leak them.

A private adapter is trained on the user's history and can leak it (memorized text, labels),
so a user may keep it encrypted. Layout of an encrypted directory:

- ``<relative path>.enc`` for every file: magic, 12-byte nonce, AES-256-GCM ciphertext+tag.
  The file's relative path is the associated data, so renaming or swapping files is caught.
- ``oppu_encryption.json``: format version, cipher, scrypt parameters and salt, the file
  list, and a key check (a GCM tag over the manifest itself): a wrong passphrase and an
  edited manifest are told apart from a damaged file.

The key comes from the passphrase via scrypt (memory-hard, salt per directory). Loading
decrypts into a fresh owner-only temporary directory that is removed afterwards; peft reads
the adapter from there. The passphrase is never logged nor put into an error message.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import secrets
import shutil
import tempfile
import unicodedata
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from oppu.shared.atomic import atomic_directory
from oppu.shared.errors import OppuError

log = logging.getLogger(__name__)

FORMAT = "oppu-encrypted-dir"
VERSION = 1
MANIFEST = "oppu_encryption.json"
SUFFIX = ".enc"
CIPHER = "AES-256-GCM"
MAGIC = b"OPPUENC1"
NONCE_BYTES = 12
SALT_BYTES = 16
KEY_BYTES = 32
SCRYPT_N = 2**17
"""scrypt cost (128 MiB with r=8, ~0.5 s): OWASP's recommended minimum for scrypt."""
SCRYPT_R = 8
SCRYPT_P = 1
_MAX_N = 2**20  # refuse manifests asking for absurd memory (1 GiB at r=8)
_MAX_FILE_BYTES = 2**31 - 1 - 64  # one-shot AES-GCM in cryptography takes < 2 GiB
_KEY_CHECK = b"oppu key check v1"


class DecryptionError(OppuError):
    """Wrong passphrase, or an encrypted file that was changed, damaged or removed."""


def _passphrase_bytes(passphrase: str | bytes) -> bytes:
    if isinstance(passphrase, bytes):
        data = passphrase
    else:  # the same passphrase typed on another system must give the same key
        data = unicodedata.normalize("NFC", passphrase).encode("utf-8")
    if not data:
        raise OppuError("the adapter passphrase is empty; choose a non-empty passphrase")
    return data


def derive_key(passphrase: str | bytes, salt: bytes, *, n: int = SCRYPT_N, r: int = SCRYPT_R,
               p: int = SCRYPT_P) -> bytes:
    """A 256-bit key from the passphrase (scrypt, so guessing passphrases is expensive)."""
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    return Scrypt(salt=salt, length=KEY_BYTES, n=n, r=r, p=p).derive(
        _passphrase_bytes(passphrase))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any, what: str, where: Path) -> bytes:
    try:
        return base64.b64decode(str(text), validate=True)
    except ValueError:
        raise DecryptionError(f"{where / MANIFEST}: {what} is not valid base64") from None


def _aad(rel: str) -> bytes:
    return MAGIC + rel.encode("utf-8")


def _signed_part(manifest: dict) -> bytes:
    """The manifest without its key check, canonically encoded: what the check authenticates."""
    body = {k: v for k, v in manifest.items() if k != "check"}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _plain_files(src: Path) -> list[str]:
    files = []
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src).as_posix()
        if path.is_symlink():
            raise OppuError(f"{path} is a symbolic link; copy the real file there to encrypt it")
        if path.is_file():
            if path.stat().st_size > _MAX_FILE_BYTES:
                raise OppuError(f"{path} is too large to encrypt (2 GiB at most per file)")
            files.append(rel)
    return files


def is_encrypted(directory: str | Path) -> bool:
    """Whether ``directory`` holds an encrypted adapter (has an encryption manifest)."""
    return (Path(directory) / MANIFEST).is_file()


def encrypt_dir(
    src_dir: str | Path,
    passphrase: str | bytes,
    *,
    dest: str | Path | None = None,
    scrypt_n: int = SCRYPT_N,
) -> Path:
    """Encrypt every file of ``src_dir`` into ``dest`` (default: ``src_dir`` itself).

    In place, the directory is swapped whole for its encrypted version (atomic_directory),
    so no plain file remains in it and a crash leaves the plain one intact. The old blocks
    are not wiped from the disk: use full-disk encryption where that matters.
    """
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    src = Path(src_dir)
    target = src if dest is None else Path(dest)
    if not src.is_dir():
        raise OppuError(f"{src} is not a directory; nothing to encrypt")
    if is_encrypted(src):
        raise OppuError(f"{src} is already encrypted ({MANIFEST} is there)")
    files = _plain_files(src)
    salt = secrets.token_bytes(SALT_BYTES)
    aead = AESGCM(derive_key(passphrase, salt, n=scrypt_n))
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "cipher": CIPHER,
        "kdf": {"name": "scrypt", "n": scrypt_n, "r": SCRYPT_R, "p": SCRYPT_P,
                "length": KEY_BYTES, "salt": _b64(salt)},
        "files": files,
    }
    check_nonce = secrets.token_bytes(NONCE_BYTES)
    manifest["check"] = _b64(
        check_nonce + aead.encrypt(check_nonce, _KEY_CHECK, _signed_part(manifest)))
    with atomic_directory(target) as scratch:
        for rel in files:
            nonce = secrets.token_bytes(NONCE_BYTES)
            sealed = aead.encrypt(nonce, (src / rel).read_bytes(), _aad(rel))
            out = scratch / f"{rel}{SUFFIX}"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(MAGIC + nonce + sealed)
        (scratch / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    log.info("Encrypted %d files into %s", len(files), target)
    return target


def _load_manifest(enc_dir: Path) -> dict:
    path = enc_dir / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OppuError(f"{enc_dir} is not an encrypted adapter (no {MANIFEST})") from None
    except (OSError, ValueError) as exc:
        raise DecryptionError(f"{path} cannot be read: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DecryptionError(f"{path} is not an oppu encryption manifest")
    if manifest.get("version") != VERSION or manifest.get("cipher") != CIPHER:
        raise DecryptionError(
            f"{path}: format version {manifest.get('version')!r} / cipher "
            f"{manifest.get('cipher')!r} is not supported by this oppu (version {VERSION}, "
            f"{CIPHER}); upgrade oppu")
    return manifest


def _kdf_params(manifest: dict, enc_dir: Path) -> tuple[bytes, int, int, int]:
    kdf = manifest.get("kdf")
    try:
        n, r, p = int(kdf["n"]), int(kdf["r"]), int(kdf["p"])
        ok = (kdf["name"] == "scrypt" and int(kdf["length"]) == KEY_BYTES
              and 2 <= n <= _MAX_N and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16)
    except (TypeError, KeyError, ValueError):
        ok = False
    if not ok:
        raise DecryptionError(f"{enc_dir / MANIFEST}: unsupported or damaged kdf parameters")
    return _unb64(kdf["salt"], "the salt", enc_dir), n, r, p


def _safe_rel(rel: Any, enc_dir: Path) -> str:
    pure = PurePosixPath(str(rel))
    if not rel or pure.is_absolute() or ".." in pure.parts:
        raise DecryptionError(f"{enc_dir / MANIFEST}: bad file name {rel!r}")
    return pure.as_posix()


def _open(enc_dir: Path, passphrase: str | bytes):
    """(manifest, AESGCM) once the key check proves the passphrase and manifest are right."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    manifest = _load_manifest(enc_dir)
    salt, n, r, p = _kdf_params(manifest, enc_dir)
    aead = AESGCM(derive_key(passphrase, salt, n=n, r=r, p=p))
    check = _unb64(manifest.get("check", ""), "the key check", enc_dir)
    try:
        if aead.decrypt(check[:NONCE_BYTES], check[NONCE_BYTES:],
                        _signed_part(manifest)) != _KEY_CHECK:
            raise InvalidTag
    except InvalidTag:
        raise DecryptionError(
            f"wrong passphrase for the encrypted adapter in {enc_dir} "
            f"(or its {MANIFEST} was changed)") from None
    files = manifest.get("files")
    if not isinstance(files, list):
        raise DecryptionError(f"{enc_dir / MANIFEST}: no file list")
    return [_safe_rel(rel, enc_dir) for rel in files], aead


def _decrypt_file(enc_dir: Path, rel: str, aead) -> bytes:
    from cryptography.exceptions import InvalidTag

    path = enc_dir / f"{rel}{SUFFIX}"
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise DecryptionError(f"{path} is missing from the encrypted adapter") from None
    head = len(MAGIC) + NONCE_BYTES
    if len(blob) < head + 16 or not blob.startswith(MAGIC):
        raise DecryptionError(f"{path} is not an oppu-encrypted file (damaged or replaced)")
    try:
        return aead.decrypt(blob[len(MAGIC):head], blob[head:], _aad(rel))
    except InvalidTag:
        raise DecryptionError(
            f"{path} was modified or damaged (authentication failed); restore it from a "
            "backup or train the adapter again") from None


def read_decrypted(enc_dir: str | Path, name: str, passphrase: str | bytes) -> bytes:
    """One file's plaintext (e.g. the adapter's metadata) without writing anything to disk."""
    enc_dir = Path(enc_dir)
    files, aead = _open(enc_dir, passphrase)
    rel = _safe_rel(name, enc_dir)
    if rel not in files:
        raise OppuError(f"{enc_dir} holds no encrypted file {name!r}")
    return _decrypt_file(enc_dir, rel, aead)


@contextlib.contextmanager
def decrypted_copy(
    enc_dir: str | Path,
    passphrase: str | bytes,
    *,
    scratch_root: str | Path | None = None,
) -> Iterator[Path]:
    """Yield a temporary plain copy of an encrypted directory; it is removed on exit.

    Every file is authenticated before the copy is handed out, so a caller never sees a
    partly decrypted adapter. The copy is owner-only (``mkdtemp``); ``scratch_root`` may
    point at a RAM disk (e.g. /dev/shm) to keep plaintext off the disk entirely.
    """
    enc_dir = Path(enc_dir)
    files, aead = _open(enc_dir, passphrase)
    scratch = Path(tempfile.mkdtemp(prefix="oppu-plain-", dir=scratch_root))
    try:
        for rel in files:
            out = scratch / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(_decrypt_file(enc_dir, rel, aead))
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def passphrase_from_env(var: str) -> str:
    """The passphrase from environment variable ``var`` (never from the command line,
    where other local users could read it in the process list)."""
    value = os.environ.get(var, "")
    if not value:
        raise OppuError(
            f"environment variable {var} is not set or empty; put the adapter passphrase "
            f"there first, e.g.  read -rs {var} && export {var}")
    return value
