"""Base distribution over oppu's BaseStore gRPC service: real servers on 127.0.0.1, TLS on.

The artifact is a few files of random bytes with a real manifest; no model is needed.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from oppu.client.base_fetch import (
    COMPLETE_MARKER,
    PART_SUFFIX,
    fetch_base,
    verify_signed_manifest,
)
from oppu.coordinator.base_server import CHUNK_SIZE, BaseStoreServer
from oppu.shared.errors import OppuError
from oppu.shared.federation.signing import (
    SignatureError,
    generate_signing_key,
    load_signing_key,
    public_key_path,
    sign,
)
from oppu.shared.federation.tls import TLSMaterial, channel_credentials, ensure_tls_material
from oppu.shared.llm.base_artifact import verify_artifact, write_manifest
from oppu.shared.proto.v1 import base_store_pb2 as pb
from oppu.shared.proto.v1 import base_store_pb2_grpc as pb_grpc

FILES = {"config.json": 300, "model.safetensors": 3 * CHUNK_SIZE + 123, "tok/vocab.txt": 5000}
TOTAL = sum(FILES.values())


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSMaterial:
    return ensure_tls_material(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    root = tmp_path / "artifact"
    for name, size in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(os.urandom(size))
    write_manifest(root, model_id="test/tiny", task="LaMP-2N", variant="adapted")
    return root


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "signing_key.pem"
    generate_signing_key(path)
    return path


@pytest.fixture
def server(artifact: Path, key_path: Path, tls: TLSMaterial) -> Iterator[BaseStoreServer]:
    with BaseStoreServer(artifact, load_signing_key(key_path), port=0, tls=tls) as srv:
        yield srv


def _fetch(srv: BaseStoreServer, key_path: Path, cache: Path, tls: TLSMaterial, **kw):
    kw.setdefault("root_cert", tls.ca_cert)
    return fetch_base(srv.target, coordinator_public_key=public_key_path(key_path),
                      cache_root=cache, progress=False, **kw)


class CutFetchAfter(grpc.ServerInterceptor):
    """Drops the first FetchFile stream that reaches ``chunks`` chunks, like a lost link."""

    def __init__(self, chunks: int):
        self.chunks, self.armed = chunks, True

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or not handler_call_details.method.endswith("/FetchFile"):
            return handler

        def cut(request, context):
            for i, chunk in enumerate(handler.unary_stream(request, context)):
                if self.armed and i == self.chunks:
                    self.armed = False
                    context.abort(grpc.StatusCode.UNAVAILABLE, "simulated network drop")
                yield chunk

        return grpc.unary_stream_rpc_method_handler(
            cut, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)


def test_first_fetch_downloads_everything_then_the_cache_serves(server, key_path, tls, tmp_path):
    cache = tmp_path / "cache"
    first = _fetch(server, key_path, cache, tls)
    assert first.bytes_downloaded == TOTAL and first.files_downloaded == len(FILES)
    assert first.path == cache / server.manifest.version
    assert verify_artifact(first.path).version == server.manifest.version
    assert (first.path / COMPLETE_MARKER).is_file()
    assert not list(first.path.rglob(f"*{PART_SUFFIX}"))

    second = _fetch(server, key_path, cache, tls)
    assert second.bytes_downloaded == 0 and second.files_downloaded == 0 and second.from_cache
    assert second.path == first.path


def test_interrupted_transfer_resumes_from_its_offset(artifact, key_path, tls, tmp_path):
    cache = tmp_path / "cache"
    cutter = CutFetchAfter(chunks=2)
    with BaseStoreServer(artifact, load_signing_key(key_path), tls=tls,
                         interceptors=[cutter]) as srv:
        with pytest.raises(OppuError, match=r"interrupted at byte 2097152 .*Run again"):
            _fetch(srv, key_path, cache, tls, retries=0)
        dest = cache / srv.manifest.version
        part = dest / ("model.safetensors" + PART_SUFFIX)
        assert part.stat().st_size == 2 * CHUNK_SIZE
        assert not (dest / COMPLETE_MARKER).exists()
        held = (dest / "config.json").stat().st_size + part.stat().st_size

        resumed = _fetch(srv, key_path, cache, tls, retries=0)
    assert resumed.bytes_resumed == 2 * CHUNK_SIZE
    assert resumed.bytes_downloaded == TOTAL - held
    verify_artifact(resumed.path)


def test_a_cut_stream_is_resumed_within_one_fetch_when_retries_allow(
        artifact, key_path, tls, tmp_path):
    with BaseStoreServer(artifact, load_signing_key(key_path), tls=tls,
                         interceptors=[CutFetchAfter(chunks=1)]) as srv:
        result = _fetch(srv, key_path, tmp_path / "cache", tls, retries=1)
    assert result.bytes_downloaded == TOTAL
    verify_artifact(result.path)


def test_a_tampered_file_is_refused_naming_it(server, artifact, key_path, tls, tmp_path):
    target = artifact / "model.safetensors"
    data = bytearray(target.read_bytes())
    data[CHUNK_SIZE + 7] ^= 0x01
    target.write_bytes(bytes(data))
    cache = tmp_path / "cache"
    with pytest.raises(OppuError, match=r"model\.safetensors .*sha256.*tampered"):
        _fetch(server, key_path, cache, tls)
    dest = cache / server.manifest.version
    assert not (dest / "model.safetensors").exists()
    assert not (dest / ("model.safetensors" + PART_SUFFIX)).exists()
    assert not (dest / COMPLETE_MARKER).exists()


def test_a_manifest_signed_by_another_key_is_refused(server, tls, tmp_path):
    other = tmp_path / "other" / "key.pem"
    generate_signing_key(other)
    with pytest.raises(SignatureError, match="pinned key"):
        fetch_base(server.target, coordinator_public_key=public_key_path(other),
                   cache_root=tmp_path / "cache", root_cert=tls.ca_cert, progress=False)
    assert not (tmp_path / "cache" / server.manifest.version).exists()


def test_a_forged_manifest_does_not_verify(server, key_path, tls):
    channel = grpc.secure_channel(server.target, channel_credentials(tls.ca_cert))
    with channel:
        signed = pb_grpc.BaseStoreStub(channel).GetManifest(pb.GetManifestRequest())
    forged = json.loads(signed.manifest_json)
    forged["files"]["model.safetensors"] = "0" * 64
    signed.manifest_json = json.dumps(forged).encode()
    with pytest.raises(SignatureError, match="does not verify"):
        verify_signed_manifest(signed, public_key_path(key_path))


@pytest.mark.parametrize("name", ["../evil", "/etc/passwd", ".", "a\\b", "complete", "x.part"])
def test_an_unsafe_path_in_a_signed_manifest_is_refused(server, key_path, tls, name):
    channel = grpc.secure_channel(server.target, channel_credentials(tls.ca_cert))
    with channel:
        signed = pb_grpc.BaseStoreStub(channel).GetManifest(pb.GetManifestRequest())
    data = json.loads(signed.manifest_json)
    data["files"][name] = "0" * 64
    data.pop("version")
    signed.manifest_json = json.dumps(data).encode()
    signed.signature = sign(load_signing_key(key_path), signed.manifest_json)
    with pytest.raises(OppuError, match="unsafe file name"):
        verify_signed_manifest(signed, public_key_path(key_path))


@pytest.mark.parametrize("root", ["none", "other-ca"])
def test_tls_is_verified(server, key_path, tls, tmp_path, root):
    root_cert = None if root == "none" else ensure_tls_material(tmp_path / "other-tls").ca_cert
    with pytest.raises(OppuError, match="Cannot reach the coordinator"):
        _fetch(server, key_path, tmp_path / "cache", tls, root_cert=root_cert, timeout=5)


def test_the_server_checks_ip_san_too(server, key_path, tls, tmp_path):
    result = fetch_base(f"127.0.0.1:{server.port}", coordinator_public_key=public_key_path(
        key_path), cache_root=tmp_path / "cache", root_cert=tls.ca_cert, progress=False)
    assert result.bytes_downloaded == TOTAL


def test_insecure_works_only_when_both_sides_ask(artifact, key_path, server, tls, tmp_path):
    key = load_signing_key(key_path)
    with pytest.raises(OppuError, match="Cannot reach"):  # plaintext client, TLS server
        _fetch(server, key_path, tmp_path / "c1", tls, root_cert=None, insecure=True, timeout=5)
    with BaseStoreServer(artifact, key, tls=None) as plain:
        with pytest.raises(OppuError, match="Cannot reach"):  # TLS client, plaintext server
            _fetch(plain, key_path, tmp_path / "c2", tls, timeout=5)
        result = _fetch(plain, key_path, tmp_path / "c3", tls, root_cert=None, insecure=True)
    assert result.bytes_downloaded == TOTAL
    with pytest.raises(OppuError, match="not both"):
        _fetch(server, key_path, tmp_path / "c4", tls, insecure=True)


def test_the_server_serves_only_manifest_files_of_its_version(server, tls):
    version = server.manifest.version
    channel = grpc.secure_channel(server.target, channel_credentials(tls.ca_cert))
    with channel:
        stub = pb_grpc.BaseStoreStub(channel)

        def status(**fields) -> grpc.StatusCode:
            with pytest.raises(grpc.RpcError) as err:
                list(stub.FetchFile(pb.FetchFileRequest(**fields)))
            return err.value.code()

        assert status(version="f" * 64, path="config.json") == grpc.StatusCode.NOT_FOUND
        assert status(version=version, path="nope.bin") == grpc.StatusCode.NOT_FOUND
        assert status(version=version, path="oppu_manifest.json") == grpc.StatusCode.NOT_FOUND
        assert status(version=version, path="../../etc/passwd") == \
            grpc.StatusCode.INVALID_ARGUMENT
        assert status(version=version, path="/etc/passwd") == grpc.StatusCode.INVALID_ARGUMENT
        assert status(version=version, path="config.json", offset=301) == \
            grpc.StatusCode.OUT_OF_RANGE

        chunks = list(stub.FetchFile(pb.FetchFileRequest(
            version=version, path="model.safetensors", offset=CHUNK_SIZE + 5)))
    assert [c.offset for c in chunks] == [CHUNK_SIZE + 5, 2 * CHUNK_SIZE + 5, 3 * CHUNK_SIZE + 5]
    expected = (server.artifact_dir / "model.safetensors").read_bytes()[CHUNK_SIZE + 5:]
    assert b"".join(c.data for c in chunks) == expected


def test_keys_are_owner_only_and_tls_material_is_reused(key_path, tls, tmp_path):
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    key_path.chmod(0o644)
    with pytest.raises(OppuError, match="chmod 600"):
        load_signing_key(key_path)
    state = tmp_path / "tls"
    first = ensure_tls_material(state)
    assert ensure_tls_material(state) == first
    assert stat.S_IMODE((state / "ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((state / "server.key").stat().st_mode) == 0o600
    wider = ensure_tls_material(state, hosts=["coordinator.lan"])
    assert wider.ca_cert == first.ca_cert and wider.server_cert != first.server_cert


class CountCalls(grpc.ServerInterceptor):
    """Counts the BaseStore's RPCs by method name."""

    def __init__(self):
        self.calls: dict[str, int] = {}

    def intercept_service(self, continuation, handler_call_details):
        name = handler_call_details.method.rsplit("/", 1)[-1]
        self.calls[name] = self.calls.get(name, 0) + 1
        return continuation(handler_call_details)


def _family_artifact(root: Path, variant: str, k: int) -> Path:
    for name, size in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(os.urandom(size))
    write_manifest(root, model_id="test/tiny", task="LaMP_2N", variant=variant,
                   training={"k": k})
    return root


def test_a_suite_on_two_bases_fetches_and_verifies_each_once_per_client(
        tmp_path, key_path, tls, monkeypatch) -> None:
    """The paper's per-family bases: one BaseStore serves both, a round names both, and a
    simulation worker fetches (signature, sha256) and loads each once for all its users."""
    from types import SimpleNamespace

    from oppu.client import simulation
    from oppu.coordinator.coordinator import served_bases
    from oppu.shared.federation.keys import SimKey
    from oppu.shared.federation.round_config import RoundConfig
    from oppu.shared.federation.signing import public_key_pem

    plain = _family_artifact(tmp_path / "plain", "plain", 0)
    rag = _family_artifact(tmp_path / "rag", "rag", 1)
    counter = CountCalls()
    signing = load_signing_key(key_path)
    loads: list[str] = []

    def load_base_model(directory, device="auto"):
        verify_artifact(Path(directory))  # what reaches the loader is a verified artifact
        loads.append(directory)
        return object(), object(), None

    monkeypatch.setattr("oppu.shared.llm.model.load_base_model", load_base_model)
    ca = tmp_path / "ca.pem"
    ca.write_bytes(tls.ca_cert)
    with BaseStoreServer(plain, signing, port=0, tls=tls, extra=[rag],
                         interceptors=[counter]) as srv:
        versions = served_bases(srv.manifests)
        assert set(versions) == {"plain", "rag-k1"} and len(set(versions.values())) == 2
        cfg = RoundConfig(task="LaMP_2N", suite="base-k0,rag-k1,oppu-k1,majority",
                          base_version=versions["plain"], base_address=srv.target,
                          base_key=public_key_pem(signing.public_key()).decode(),
                          bases=json.dumps(versions))
        for client in ("worker-1", "worker-2"):  # two simulation workers: two clients
            monkeypatch.setattr(simulation, "_MODELS", {})
            context = SimpleNamespace(node_config={}, run_config={
                SimKey.OUT: str(tmp_path / "out"), SimKey.CA: str(ca)})
            before = dict(counter.calls)
            seen = [simulation.simulation_bases(cfg, context) for _user in range(3)]
            manifests = counter.calls["GetManifest"] - before.get("GetManifest", 0)
            assert manifests == 2, client  # each base's signed manifest once, not per user
            first = seen[0]
            assert all(s.bases == first.bases and s.model is first.model for s in seen)
            assert first.bases["plain"] is first.model
            assert first.bases["rag-k1"] is not first.model
            assert first.versions == versions
    # Bytes travelled once: the second worker found both bases in the shared cache.
    assert counter.calls["FetchFile"] == 2 * len(FILES)
    assert len(loads) == 4 and len(set(loads)) == 2
    with pytest.raises(ValueError, match="rag-k2"):
        RoundConfig(task="LaMP_2N", suite="base-k0,rag-k2", base_version=versions["plain"],
                    bases=json.dumps(versions))
