"""Hostile messages: what a coordinator or a client receives from the other side, fuzzed.

The coordinator receives each client's sealed reply (any record, any bytes a client can put
in a Flower ``ConfigRecord``) and, with DP on, noisy vectors; it answers BaseStore requests
over real gRPC with TLS. A client receives the coordinator's signed base manifest. For any
input: the statistics, manifest or stream come back valid, or the project's clear error
type (a refused reply, a gRPC status code naming the problem), never another exception: a
crash there would end a round for every client, or take the BaseStore down.

The default suite runs the fast hypothesis profile; ``tests/test_fuzz_depth.py`` (a
``benchmark``) runs this module and ``test_fuzz_inputs.py`` under the deep profile.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from flwr.app import ConfigRecord, MetricRecord, RecordDict
from hypothesis import example, given
from hypothesis import strategies as st

from oppu.client.base_fetch import verify_signed_manifest
from oppu.coordinator.aggregation.sealed import read_sealed_reply
from oppu.coordinator.base_server import CHUNK_SIZE, BaseStoreServer
from oppu.shared.errors import InputError, OppuError
from oppu.shared.federation.keys import SEALED_METRICS, SEALED_RECORD
from oppu.shared.federation.round_config import RoundConfig
from oppu.shared.federation.sealing import SealingError, public_bytes, seal_vector
from oppu.shared.federation.signing import key_id, sign
from oppu.shared.federation.tls import TLSMaterial, channel_credentials, ensure_tls_material
from oppu.shared.llm.base_artifact import write_manifest
from oppu.shared.metrics import make_metric
from oppu.shared.noisy_stats import read_noisy
from oppu.shared.proto.v1 import base_store_pb2 as pb
from oppu.shared.proto.v1 import base_store_pb2_grpc as pb_grpc
from oppu.shared.proto.v1 import manifest_pb2

LABELS = ("a", "b", "c")
METRIC = make_metric("classification", LABELS)
ROUND = RoundConfig(task="LaMP_2N", labels=LABELS, round=3, aggregation="sealed",
                    sealing_key=bytes(range(32)))
RUN, NODE = 17, 4242
COORDINATOR_KEY = X25519PrivateKey.from_private_bytes(bytes(range(32)))
"""A fixed key: a fuzzing example must not depend on a key drawn at import time."""

# ---- values a client can put in a Flower ConfigRecord ---------------------------------------
record_scalars = st.one_of(
    st.binary(max_size=64), st.text(max_size=16), st.booleans(),
    st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=True, allow_infinity=True))
record_values = st.one_of(
    record_scalars, st.lists(st.binary(max_size=8), max_size=3),
    st.lists(st.integers(0, 9), max_size=3), st.lists(st.text(max_size=4), max_size=3))
statistics = st.lists(
    st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 50),
              st.sampled_from([0.0, 1.0, 3.0, 1e308, -0.0])),
    max_size=2 * len(METRIC.stat_names()))


def _sealed(vector: list[float], *, run: int = RUN, round_: int = ROUND.round,
            node: int = NODE) -> bytes:
    return seal_vector(vector, public_bytes(COORDINATOR_KEY), run_id=run, round_=round_,
                       node_id=node)


@st.composite
def sealed_blobs(draw: st.DrawFn) -> bytes:
    """A real sealed vector, then maybe tampered with: truncated, a bit flipped, grown, or
    sealed for another run, round or node."""
    vector = draw(statistics)
    claims = draw(st.sampled_from([{}, {"run": RUN + 1}, {"round_": ROUND.round + 1},
                                   {"node": NODE + 1}]))
    blob = _sealed([float(v) for v in vector], **claims)
    how = draw(st.sampled_from(["as-is", "truncate", "flip", "append"]))
    if how == "truncate":
        return blob[:draw(st.integers(0, len(blob)))]
    if how == "flip":
        at = draw(st.integers(0, len(blob) - 1))
        return blob[:at] + bytes([blob[at] ^ (1 << draw(st.integers(0, 7)))]) + blob[at + 1:]
    if how == "append":
        return blob + draw(st.binary(min_size=1, max_size=16))
    return blob


@st.composite
def replies(draw: st.DrawFn) -> RecordDict:
    """A client's reply content: the sealed record right, missing, mistyped or hostile."""
    shape = draw(st.sampled_from(["sealed", "value", "no-record", "metric-record", "extra"]))
    if shape == "no-record":
        return RecordDict({"other": ConfigRecord({"x": 1})})
    if shape == "metric-record":  # the right name on another kind of record
        return RecordDict({SEALED_RECORD: MetricRecord({SEALED_METRICS: 1.0})})
    value = draw(sealed_blobs()) if shape in ("sealed", "extra") else draw(record_values)
    record = {SEALED_METRICS: value}
    if shape == "extra":
        record.update(draw(st.dictionaries(st.text(max_size=8), record_scalars, max_size=3)))
    return RecordDict({SEALED_RECORD: ConfigRecord(record)})


@given(content=replies())
@example(content=RecordDict({SEALED_RECORD: ConfigRecord({SEALED_METRICS: 5})}))
@example(content=RecordDict({SEALED_RECORD: ConfigRecord({SEALED_METRICS: [b"a", b"b"]})}))
@example(content=RecordDict({SEALED_RECORD: ConfigRecord({SEALED_METRICS: b"\x00" * 9})}))
def test_sealed_reply_is_read_or_refused(content: RecordDict) -> None:
    try:
        stats = read_sealed_reply(content, COORDINATOR_KEY, run_id=RUN, round_cfg=ROUND,
                                  node=NODE, metric=METRIC)
    except (SealingError, InputError):
        return
    METRIC.validate_stats(stats)  # what is accepted is a possible sum


def test_a_valid_sealed_reply_is_read_and_a_retargeted_one_refused() -> None:
    """The fuzz above can only pass by refusing; this pins the accepting side."""
    vector = METRIC.to_vector(METRIC.stats_for(["a", "b", "zz"], ["a", "c", "b"]))
    content = RecordDict({SEALED_RECORD: ConfigRecord({SEALED_METRICS: _sealed(vector)})})
    stats = read_sealed_reply(content, COORDINATOR_KEY, run_id=RUN, round_cfg=ROUND,
                              node=NODE, metric=METRIC)
    assert METRIC.to_vector(stats) == vector
    moved = RecordDict({SEALED_RECORD: ConfigRecord({SEALED_METRICS: _sealed(vector, node=7)})})
    with pytest.raises(SealingError, match="node 7"):
        read_sealed_reply(moved, COORDINATOR_KEY, run_id=RUN, round_cfg=ROUND, node=NODE,
                          metric=METRIC)


@given(vector=st.one_of(statistics, st.lists(st.one_of(
    st.none(), st.text(max_size=3), st.booleans(), st.integers(-(10**400), 10**400)),
    max_size=12), st.text(max_size=5), st.binary(max_size=5), st.integers()))
@example(vector=[10**400] * len(METRIC.stat_names()))
@example(vector="1" * len(METRIC.stat_names()))
def test_noisy_vectors_are_read_or_refused(vector: Any) -> None:
    try:
        stats = read_noisy(METRIC, vector)
    except InputError:
        return
    assert list(stats) == METRIC.stat_names()
    assert all(isinstance(v, float) and math.isfinite(v) for v in stats.values())


# ---- the signed base manifest a client receives ---------------------------------------------
SIGNER = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
DIGEST = "0" * 64
manifest_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=True),
              st.text(max_size=8), st.sampled_from(["../x", "/etc/passwd", "a\\b", "c:x",
                                                    DIGEST, "x.part", ""])),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.text(max_size=8), inner, max_size=3), max_leaves=6)


@st.composite
def manifest_documents(draw: st.DrawFn) -> bytes:
    """Manifest JSON as a (compromised or buggy) coordinator might sign it."""
    good = {"model_id": "m", "task": "LaMP_2N", "variant": "adapted",
            "files": {"model.safetensors": DIGEST}, "training": {}, "format_version": 1}
    shape = draw(st.sampled_from(["edit", "files", "any", "bytes", "deep"]))
    if shape == "any":
        return json.dumps(draw(manifest_values), allow_nan=True).encode()
    if shape == "bytes":
        return draw(st.binary(max_size=80))
    if shape == "deep":
        return b"[" * draw(st.integers(1, 100_000))
    if shape == "files":
        good["files"] = draw(st.dictionaries(
            st.one_of(st.text(max_size=10), st.sampled_from(["../up", "/abs", "a\\b", "c:/x",
                                                             "ok.bin", "x.part", "."])),
            st.one_of(st.just(DIGEST), manifest_values), max_size=3))
    else:
        good.update(draw(st.dictionaries(st.sampled_from([*good, "version", "extra"]),
                                         manifest_values, max_size=2)))
    return json.dumps(good, allow_nan=True).encode()


@given(document=manifest_documents(), sizes=st.dictionaries(
    st.sampled_from(["model.safetensors", "ok.bin", "../up"]), st.integers(0, 2**64 - 1),
    max_size=2), signed_right=st.booleans())
@example(document=b"[" * 100_000, sizes={}, signed_right=True)
@example(document=b'{"files": {"model.safetensors": "' + DIGEST.encode() + b'"}, '
         b'"version": "forged"}', sizes={"model.safetensors": 1}, signed_right=True)
def test_signed_manifest_is_verified_or_refused(document: bytes, sizes: dict[str, int],
                                                signed_right: bool) -> None:
    listing = manifest_pb2.BaseManifest(files=[
        manifest_pb2.FileEntry(path=name, sha256=DIGEST, size=size)
        for name, size in sizes.items()])
    signature = sign(SIGNER, document) if signed_right else os.urandom(64)
    signed = pb.SignedManifest(manifest_json=document, signature=signature,
                               key_id=key_id(SIGNER), listing=listing)
    try:
        manifest, entries = verify_signed_manifest(signed, SIGNER.public_key())
    except OppuError:
        return
    assert signed_right and [e.name for e in entries] == sorted(manifest.files)
    assert all(".." not in e.name and not e.name.startswith("/") for e in entries)


# ---- BaseStore requests, over real gRPC with TLS --------------------------------------------
FILES = {"config.json": 300, "model.safetensors": CHUNK_SIZE + 7}
Store = tuple[BaseStoreServer, grpc.Channel, pb_grpc.BaseStoreStub]
ANSWERS = {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT,
           grpc.StatusCode.OUT_OF_RANGE}
"""What the BaseStore may answer a bad request; UNKNOWN or INTERNAL would mean a crash."""


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory,
          ) -> Iterator[tuple[BaseStoreServer, grpc.Channel, pb_grpc.BaseStoreStub]]:
    root = tmp_path_factory.mktemp("fuzz-store")
    tls: TLSMaterial = ensure_tls_material(root / "tls")
    artifact = root / "artifact"
    artifact.mkdir()
    for name, size in FILES.items():
        (artifact / name).write_bytes(os.urandom(size))
    write_manifest(artifact, model_id="test/tiny", task="LaMP_2N", variant="adapted")
    with (BaseStoreServer(artifact, SIGNER, port=0, tls=tls) as server,
          grpc.secure_channel(server.target, channel_credentials(tls.ca_cert)) as channel):
        yield server, channel, pb_grpc.BaseStoreStub(channel)


def _version(server: BaseStoreServer, draw_version: str | None) -> str:
    return server.manifest.version if draw_version is None else draw_version


@given(version=st.one_of(st.none(), st.text(max_size=70), st.just("")),
       path=st.one_of(st.sampled_from([*FILES, "", "..", "../etc/passwd", "/config.json",
                                       "oppu_manifest.json", "config.json/", "./config.json"]),
                      st.text(max_size=20)),
       offset=st.one_of(st.integers(0, 2 * CHUNK_SIZE), st.just(2**64 - 1)))
@example(version=None, path="config.json", offset=300)
@example(version=None, path="model.safetensors", offset=0)
def test_base_store_answers_every_request_or_names_the_problem(
        store: Store, version: str | None, path: str,
        offset: int) -> None:
    server, _channel, stub = store
    wanted = _version(server, version)
    try:
        signed = stub.GetManifest(pb.GetManifestRequest(version=version or ""), timeout=10)
        assert signed.listing.version == (wanted or server.manifest.version)
    except grpc.RpcError as err:
        assert err.code() in ANSWERS, (err.code(), err.details())
        assert wanted and wanted != server.manifest.version
    try:
        received = sum(len(c.data) for c in stub.FetchFile(
            pb.FetchFileRequest(version=wanted, path=path, offset=offset), timeout=10))
    except grpc.RpcError as err:
        assert err.code() in ANSWERS, (err.code(), err.details())
        return
    assert wanted == server.manifest.version and path in FILES
    assert received == FILES[path] - offset


def test_base_store_survives_bytes_that_are_no_request(store: Store,
                                                       ) -> None:
    """Raw bytes a protobuf parser cannot read get an error status; the server keeps serving."""
    server, channel, stub = store
    raw = channel.unary_unary("/oppu.v1.BaseStore/GetManifest",
                              request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as info:
        raw(b"\xff" * 32, timeout=10)
    assert info.value.code() not in (grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE)
    assert stub.GetManifest(pb.GetManifestRequest(), timeout=10).listing.version == (
        server.manifest.version)
