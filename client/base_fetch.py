"""Fetch the coordinator's base once per version into a content-addressed cache.

Steps, in order: get the signed manifest; verify its Ed25519 signature with the coordinator
key the user pinned (nothing is downloaded before that); for each file, keep it if the cache
already holds it with the right sha256, else stream it into ``<file>.part``, appending from
the part's current size (so an interrupted transfer resumes), check its sha256 and rename it
into place; when every file checks out, write the manifest and a ``complete`` marker.

A stream cut mid-file (lost link, the coordinator's BaseStore restarting) is resumed within
the same call: the client waits up to ``reconnect_timeout`` for the server to answer again on
its address, then asks for the rest from the byte it holds. Only cuts that make no progress
count against ``retries``, so a long transfer over a flaky link still finishes.

Cache layout: ``<cache_root>/<version>/`` holds the artifact as the coordinator has it
(``oppu_manifest.json`` included, so
:func:`oppu.shared.llm.base_artifact.verify_artifact` works
on it), plus ``oppu_signature.json`` and ``complete``. A second fetch of the same version
re-hashes the cached files and downloads nothing.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import grpc

from oppu.shared.atomic import write_bytes_atomic, write_text_atomic
from oppu.shared.errors import OppuError
from oppu.shared.federation.signing import (
    PublicKeyLike,
    SignatureError,
    key_id,
    load_public_key,
    verify,
)
from oppu.shared.federation.tls import channel_credentials
from oppu.shared.llm.base_artifact import MANIFEST_FILE, BaseManifest, sha256_file
from oppu.shared.paths import oppu_home
from oppu.shared.proto.v1 import base_store_pb2 as pb
from oppu.shared.proto.v1 import base_store_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

COMPLETE_MARKER = "complete"
SIGNATURE_FILE = "oppu_signature.json"
PART_SUFFIX = ".part"
_RESERVED = {MANIFEST_FILE, COMPLETE_MARKER, SIGNATURE_FILE}
_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


def default_cache_root() -> Path:
    return oppu_home() / "bases-cache"


@dataclass(frozen=True)
class FetchResult:
    """Where the verified base is, and what it took to get it there."""

    path: Path
    version: str
    bytes_downloaded: int  # sent over the network by this call
    bytes_resumed: int  # already on disk from an interrupted transfer, not sent again
    files_downloaded: int

    @property
    def from_cache(self) -> bool:
        return self.bytes_downloaded == 0 and self.bytes_resumed == 0


@dataclass(frozen=True)
class _Entry:
    name: str
    sha256: str
    size: int


def fetch_base(target: str, *, coordinator_public_key: PublicKeyLike,
               cache_root: str | Path | None = None, root_cert: bytes | None = None,
               insecure: bool = False, progress: bool = True, timeout: float = 30.0,
               retries: int = 5, reconnect_timeout: float = 60.0,
               version: str = "") -> FetchResult:
    """Download (or find cached) a base served at ``target`` (``host:port``) and verify it.

    ``version``: which of the coordinator's bases (a round names one per prompt family);
    empty: its default base.

    ``root_cert`` is the coordinator's CA certificate (PEM); None trusts the system roots.
    ``insecure=True`` speaks plaintext and works only against a coordinator started without
    TLS; the manifest signature and sha256 checks still apply. ``retries``: how many cuts in
    a row that brought no new bytes are resumed before giving up (0: none; the ``.part`` is
    kept either way); before each resume the server gets ``reconnect_timeout`` seconds to
    come back (e.g. a restarted coordinator).
    """
    if insecure and root_cert is not None:
        raise OppuError("Pass either a CA certificate or insecure=True, not both.")
    public_key = load_public_key(coordinator_public_key)
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    with _channel(target, root_cert, insecure) as channel:
        stub = pb_grpc.BaseStoreStub(channel)
        try:
            signed = stub.GetManifest(pb.GetManifestRequest(version=version), timeout=timeout)
        except grpc.RpcError as exc:
            raise _rpc_error(exc, target, insecure) from None
        manifest, entries = verify_signed_manifest(signed, public_key)
        if version and manifest.version != version:
            raise OppuError(f"Asked {target} for base {version[:12]} and got a manifest for "
                            f"{manifest.version[:12]}; refusing it.")
        dest = root / manifest.version
        dest.mkdir(parents=True, exist_ok=True)
        with _locked(root / f".{manifest.version}.lock"):
            todo = [e for e in entries if not _cached(dest, e)]
            if todo:
                (dest / COMPLETE_MARKER).unlink(missing_ok=True)
            resumed = sum(_part_size(dest, e) for e in todo)
            downloaded = 0
            bar = _progress_bar(sum(e.size for e in todo), resumed, progress)
            with bar:
                def reconnected() -> bool:
                    return _await_server(channel, reconnect_timeout)

                for entry in todo:
                    downloaded += _fetch_file(stub, target, manifest.version, entry, dest, bar,
                                              retries, reconnected)
            if not (dest / COMPLETE_MARKER).is_file():
                _finish(dest, signed)
    if todo:
        log.info("Base %s: %d bytes downloaded, %d resumed, into %s",
                 manifest.version[:12], downloaded, resumed, dest)
    return FetchResult(path=dest, version=manifest.version, bytes_downloaded=downloaded,
                       bytes_resumed=resumed, files_downloaded=len(todo))


def verify_signed_manifest(signed: pb.SignedManifest,
                           public_key: PublicKeyLike) -> tuple[BaseManifest, list[_Entry]]:
    """Check the signature, then the manifest's paths, version and listing; nothing earlier."""
    public = load_public_key(public_key)
    if signed.key_id and signed.key_id != key_id(public):
        raise SignatureError(
            f"The coordinator signed its base with key {signed.key_id}, but the pinned key is "
            f"{key_id(public)}. If the coordinator's key changed on purpose, pin the new one.")
    verify(public, signed.manifest_json, signed.signature, what="the base manifest")
    try:
        manifest = BaseManifest.from_json(signed.manifest_json.decode())
    except ValueError as exc:  # ManifestError, or bytes that are not UTF-8
        raise OppuError(f"The signed base manifest is not a valid manifest: {exc}") from None
    sizes = {f.path: f for f in signed.listing.files}
    entries = []
    for name, digest in sorted(manifest.files.items()):
        _check_relpath(name)
        listed = sizes.get(name)
        if listed is None or listed.sha256 != digest:
            raise OppuError(f"The coordinator's file listing disagrees with its signed manifest "
                            f"on {name}.")
        entries.append(_Entry(name, digest, listed.size))
    return manifest, entries


def _check_relpath(name: str) -> None:
    pure = PurePosixPath(name)
    if (not pure.parts or "\\" in name or pure.is_absolute() or ".." in pure.parts
            or ":" in pure.parts[0] or name in _RESERVED or name.endswith(PART_SUFFIX)):
        raise OppuError(f"The base manifest lists an unsafe file name {name!r}; refusing it.")


def _cached(dest: Path, entry: _Entry) -> bool:
    path = dest / entry.name
    if not path.is_file():
        return False
    if path.stat().st_size == entry.size and sha256_file(path) == entry.sha256:
        return True
    log.warning("Cached %s does not match the manifest; fetching it again.", path)
    path.unlink()
    return False


def _part_size(dest: Path, entry: _Entry) -> int:
    """Bytes a previous transfer left; a part longer than the file is discarded."""
    part = dest / (entry.name + PART_SUFFIX)
    size = part.stat().st_size if part.is_file() else 0
    if size > entry.size:
        part.unlink()
        return 0
    return size


def _fetch_file(stub: pb_grpc.BaseStoreStub, target: str, version: str, entry: _Entry,
                dest: Path, bar, retries: int, reconnected: Callable[[], bool]) -> int:
    """Stream ``entry`` into its part file from where it stops; verify; rename into place.

    A retryable cut is resumed once ``reconnected()`` says the server answers again; cuts in a
    row that added no bytes count against ``retries``.
    """
    final = dest / entry.name
    part = dest / (entry.name + PART_SUFFIX)
    part.parent.mkdir(parents=True, exist_ok=True)
    start = _part_size(dest, entry)
    stalled = 0
    while True:
        before = part.stat().st_size if part.is_file() else 0
        try:
            _append_stream(stub, version, entry, part, bar)
            break
        except grpc.RpcError as exc:
            if exc.code() not in _RETRYABLE:
                raise _rpc_error(exc, target, False) from None
            held = part.stat().st_size if part.is_file() else 0
            stalled = 1 if held > before else stalled + 1
            if stalled <= retries:
                log.warning("Transfer of %s cut at byte %d (%s); resuming once the "
                            "coordinator answers again.", entry.name, held, exc.code().name)
                if reconnected():
                    continue
            raise OppuError(
                f"Transfer of {entry.name} from {target} was interrupted at byte {held} of "
                f"{entry.size} ({exc.details()}). Run again to resume; the {held} bytes "
                f"are kept in {part}.") from None
    received = part.stat().st_size - start
    digest = sha256_file(part)
    if digest != entry.sha256:
        part.unlink()
        raise OppuError(
            f"Base file {entry.name} from {target} does not match its sha256 in the signed "
            f"manifest (got {digest[:16]}…, expected {entry.sha256[:16]}…): the coordinator's "
            "copy is damaged or was tampered with"
            + (f", or the {start} bytes kept from an earlier transfer were" if start else "")
            + ". The download was discarded.")
    os.replace(part, final)
    return received


def _append_stream(stub: pb_grpc.BaseStoreStub, version: str, entry: _Entry, part: Path,
                   bar) -> None:
    with part.open("ab") as fh:
        offset = fh.tell()
        if offset == entry.size:
            return
        request = pb.FetchFileRequest(version=version, path=entry.name, offset=offset)
        try:
            for chunk in stub.FetchFile(request):
                if chunk.offset != offset or offset + len(chunk.data) > entry.size:
                    raise OppuError(f"The coordinator sent bytes {chunk.offset}.."
                                    f"{chunk.offset + len(chunk.data)} of {entry.name} while "
                                    f"{offset}..{entry.size} were expected.")
                fh.write(chunk.data)
                offset += len(chunk.data)
                bar.update(len(chunk.data))
            if offset != entry.size:
                raise OppuError(f"The coordinator ended {entry.name} at byte {offset} of "
                                f"{entry.size}; run again to resume from there.")
        finally:
            fh.flush()
            os.fsync(fh.fileno())


def _finish(dest: Path, signed: pb.SignedManifest) -> None:
    """Record the verified manifest and its signature, then mark the version complete."""
    write_bytes_atomic(dest / MANIFEST_FILE, signed.manifest_json)
    write_text_atomic(dest / SIGNATURE_FILE, json.dumps({
        "key_id": signed.key_id,
        "signature": base64.b64encode(signed.signature).decode(),
        "sha256_of_manifest": hashlib.sha256(signed.manifest_json).hexdigest(),
    }, indent=2))
    write_text_atomic(dest / COMPLETE_MARKER,
                      time.strftime("%Y-%m-%dT%H:%M:%SZ\n", time.gmtime()))


_CHANNEL_OPTIONS = [
    # Reconnect within seconds of a restarted server (gRPC's default backoff grows to 120 s).
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 4000),
]


@contextlib.contextmanager
def _channel(target: str, root_cert: bytes | None, insecure: bool) -> Iterator[grpc.Channel]:
    channel = (grpc.insecure_channel(target, options=_CHANNEL_OPTIONS) if insecure
               else grpc.secure_channel(target, channel_credentials(root_cert),
                                        options=_CHANNEL_OPTIONS))
    try:
        yield channel
    finally:
        channel.close()


def _await_server(channel: grpc.Channel, timeout: float) -> bool:
    """True once ``channel`` connects again (the server is back) within ``timeout`` s."""
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
    except grpc.FutureTimeoutError:
        log.warning("The coordinator's BaseStore did not come back within %.0f s.", timeout)
        return False
    return True


def _rpc_error(exc: grpc.RpcError, target: str, insecure: bool) -> OppuError:
    code, details = exc.code(), exc.details()
    if code == grpc.StatusCode.UNAVAILABLE:
        hint = ("is the coordinator running with --insecure too?" if insecure else
                "if it uses oppu's self-signed TLS, pass its CA certificate (ca.pem); "
                "--insecure works only when the coordinator runs with --insecure too")
        return OppuError(f"Cannot reach the coordinator at {target}: {details} ({hint}).")
    return OppuError(f"The coordinator at {target} refused the request ({code.name}): {details}")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock so two clients never append to the same part file."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock; sha256 checks still catch a garbled file
        yield
        return
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _progress_bar(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024,
                desc="base", disable=not enabled or total == 0, leave=False)
