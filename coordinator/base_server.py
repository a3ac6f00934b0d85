"""Serve the coordinator's base artifacts over oppu's ``BaseStore`` gRPC service.

A coordinator serves one base per prompt family its rounds use (plain, rag-kJ, profile-kJ:
``oppu.shared.personal.bases``); the first is the default, the others are asked for by
version. Each manifest (the artifact's ``oppu_manifest.json``, byte for byte) is signed once
at start with the coordinator's Ed25519 key; clients verify it against the key they pinned.
Files are served only if a manifest lists them, for its version only, streamed in 1 MiB
chunks from any offset so a client can resume. TLS is on unless the caller passes ``tls=None``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from oppu.shared.errors import OppuError
from oppu.shared.federation.signing import key_id, sign
from oppu.shared.federation.tls import TLSMaterial, server_credentials
from oppu.shared.llm.base_artifact import MANIFEST_FILE, BaseManifest, verify_artifact
from oppu.shared.proto.v1 import base_store_pb2 as pb
from oppu.shared.proto.v1 import base_store_pb2_grpc as pb_grpc
from oppu.shared.proto.v1 import manifest_pb2

log = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
"""Bytes per streamed chunk: well under gRPC's 4 MiB message limit, few messages per file."""


class BaseStoreServer:
    """A running ``BaseStore`` for one or more base artifacts: ``start()``, then ``stop()``.

    ``artifact_dir`` is the default base (what a request without a version gets); ``extra``
    are the other bases its rounds name. ``port=0`` picks a free port (see :attr:`port`
    after start). ``verify`` re-hashes each artifact before signing its manifest, so a
    damaged artifact is never vouched for.
    """

    def __init__(self, artifact_dir: str | Path, signing_key: Ed25519PrivateKey, *,
                 host: str = "127.0.0.1", port: int = 0, tls: TLSMaterial | None,
                 max_workers: int = 8, verify: bool = True,
                 interceptors: Sequence[grpc.ServerInterceptor] = (),
                 extra: Sequence[str | Path] = ()):
        self.artifact_dir = Path(artifact_dir).resolve()
        self.host = host
        self.tls = tls
        self._requested_port = port
        self._servicer = BaseStoreServicer([self.artifact_dir, *map(Path, extra)], signing_key,
                                           verify=verify)
        self._max_workers = max_workers
        self._interceptors = tuple(interceptors)
        self._server: grpc.Server | None = None
        self.port: int | None = None

    @property
    def manifest(self) -> BaseManifest:
        """The default base's."""
        return self._servicer.manifest

    @property
    def manifests(self) -> list[BaseManifest]:
        """Every served base's, the default first."""
        return list(self._servicer.manifests)

    def add(self, artifact_dir: str | Path, *, default: bool = False) -> BaseManifest:
        """Serve one more artifact while running (``oppu-coordinator publish``); bases served
        before stay served, so a client mid-fetch finishes. ``default``: requests without a
        version get this one from now on."""
        return self._servicer.add(Path(artifact_dir), default=default)

    @property
    def target(self) -> str:
        """Where clients connect (``localhost:port``, a name in oppu's server certificate)."""
        if self.port is None:
            raise OppuError("BaseStoreServer is not started.")
        host = "localhost" if self.host in ("127.0.0.1", "0.0.0.0", "[::]", "::") else self.host
        return f"{host}:{self.port}"

    def start(self) -> BaseStoreServer:
        # No SO_REUSEPORT (gRPC's default on Linux): a second coordinator on a busy port
        # must fail here, not silently share the port with the first one.
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=self._max_workers),
                             interceptors=self._interceptors,
                             options=[("grpc.so_reuseport", 0)])
        pb_grpc.add_BaseStoreServicer_to_server(self._servicer, server)
        address = f"{self.host}:{self._requested_port}"
        try:
            if self.tls is None:
                log.warning("Serving the base WITHOUT TLS on %s (insecure mode was asked "
                            "for).", address)
                port = server.add_insecure_port(address)
            else:
                port = server.add_secure_port(address, server_credentials(self.tls))
        except RuntimeError:  # what grpcio raises for a port it cannot bind
            port = 0
        if port == 0:
            raise OppuError(f"Cannot listen on {address} (in use, or not a local address?).")
        server.start()
        self._server, self.port = server, port
        log.info("Serving base %s on %s:%d", self.manifest.version[:12], self.host, port)
        return self

    def stop(self, grace: float | None = 1.0) -> None:
        if self._server is not None:
            self._server.stop(grace).wait()
            self._server = None

    def __enter__(self) -> BaseStoreServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class _Served:
    """One served artifact: its manifest, its files and the signed manifest message."""

    manifest: BaseManifest
    paths: dict[str, Path]
    signed: pb.SignedManifest


class BaseStoreServicer(pb_grpc.BaseStoreServicer):
    """The two RPCs over the served artifact directories, each manifest signed once."""

    def __init__(self, artifact_dirs: Sequence[Path], signing_key: Ed25519PrivateKey, *,
                 verify: bool):
        self.served: dict[str, _Served] = {}
        self.manifests: list[BaseManifest] = []
        """One per artifact given, in order (two families may share identical content)."""
        self._signing_key, self._verify = signing_key, verify
        for directory in artifact_dirs:
            self.add(directory)
        self.manifest = self.manifests[0]

    def add(self, directory: Path, *, default: bool = False) -> BaseManifest:
        served = _serve(Path(directory).resolve(), self._signing_key, self._verify)
        self.served.setdefault(served.manifest.version, served)  # one dict store: thread-safe
        self.manifests.append(served.manifest)
        if default:
            self.manifest = served.manifest
        return served.manifest

    def GetManifest(self, request: pb.GetManifestRequest,
                    context: grpc.ServicerContext) -> pb.SignedManifest:
        served = self.served.get(request.version or self.manifest.version)
        if served is None:
            context.abort(grpc.StatusCode.NOT_FOUND, self._unknown(request.version))
        return served.signed

    def FetchFile(self, request: pb.FetchFileRequest,
                  context: grpc.ServicerContext) -> Iterator[pb.Chunk]:
        served = self.served.get(request.version)
        if served is None:
            context.abort(grpc.StatusCode.NOT_FOUND,
                          self._unknown(request.version) + " (fetch the manifest again)")
        path = served.paths.get(request.path)
        if path is None:
            pure = PurePosixPath(request.path)
            bad = not request.path or pure.is_absolute() or ".." in pure.parts
            context.abort(grpc.StatusCode.INVALID_ARGUMENT if bad else grpc.StatusCode.NOT_FOUND,
                          f"{request.path!r} is not a file of base {request.version[:12]}")
        with path.open("rb") as fh:
            size = fh.seek(0, 2)
            if request.offset > size:
                context.abort(grpc.StatusCode.OUT_OF_RANGE,
                              f"offset {request.offset} is past the end of {request.path} "
                              f"({size} bytes)")
            offset = fh.seek(request.offset)
            while context.is_active() and (data := fh.read(CHUNK_SIZE)):
                yield pb.Chunk(data=data, offset=offset)
                offset += len(data)

    def _unknown(self, version: str) -> str:
        served = ", ".join(v[:12] for v in self.served)
        return f"unknown base version {version[:12]!r}; this coordinator serves {served}"


def _serve(artifact_dir: Path, signing_key: Ed25519PrivateKey, verify: bool) -> _Served:
    manifest_path = artifact_dir / MANIFEST_FILE
    if not manifest_path.is_file():
        raise OppuError(f"{artifact_dir} has no {MANIFEST_FILE}: not an oppu base artifact.")
    manifest_json = manifest_path.read_bytes()
    manifest = verify_artifact(artifact_dir) if verify else BaseManifest.from_json(
        manifest_json.decode())
    paths = {name: _inside(artifact_dir, name) for name in manifest.files}
    listing = manifest_pb2.BaseManifest(
        model_id=manifest.model_id, task=manifest.task, variant=manifest.variant,
        version=manifest.version, format_version=manifest.format_version,
        files=[manifest_pb2.FileEntry(path=name, sha256=digest, size=paths[name].stat().st_size)
               for name, digest in sorted(manifest.files.items())])
    signed = pb.SignedManifest(manifest_json=manifest_json,
                               signature=sign(signing_key, manifest_json),
                               key_id=key_id(signing_key), listing=listing)
    return _Served(manifest, paths, signed)


def _inside(root: Path, name: str) -> Path:
    """``root/name``, refusing a manifest entry that points outside the artifact."""
    path = (root / name).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise OppuError(f"Manifest entry {name!r} is not a file inside {root}; refusing to "
                        "serve this artifact.")
    return path
