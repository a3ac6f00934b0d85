"""What leaves a client: never history text, profile text or adapter weights; under SecAgg+
not even its own statistics vector in the clear.

The federation runs of ``test_federation.py`` (shared, so they run once per session) record
every reply each client sends (the ClientApp's audit mod writes the full serialized content
of each outgoing message) and every request the coordinator's BaseStore receives. Every
file the SuperLink left (its log, installed app bundles; its state is in memory) is searched
too.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from test_federation import FederationRun, sealed_federation, secagg_federation

from oppu.shared.federation.aggregation_modes import SECAGG
from oppu.shared.federation.processes import TELEMETRY_ENV, UNAUTHENTICATED_API_ENV, flower_env
from oppu.shared.federation.secagg_encoding import QUANTIZATION_RANGE, encode_stats

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def secagg_run(tmp_path_factory: pytest.TempPathFactory) -> FederationRun:
    return secagg_federation(tmp_path_factory)


@pytest.fixture(scope="module")
def sealed_run(tmp_path_factory: pytest.TempPathFactory) -> FederationRun:
    return sealed_federation(tmp_path_factory)


@pytest.fixture(params=["secagg", "sealed"])
def run(request: pytest.FixtureRequest) -> FederationRun:
    return request.getfixturevalue(f"{request.param}_run")


def _history_snippets(history: list[dict]) -> list[bytes]:
    out = []
    for item in history:
        for field in ("title", "text"):
            text = item[field]
            out += [text.encode(), text[6:30].encode()]
    return out


def _adapter_chunks(data_dir: Path, size: int = 48) -> list[bytes]:
    """High-entropy slices of the client's adapter tensors (zeros would match anything)."""
    from safetensors.numpy import load_file

    files = list((data_dir / "adapters").rglob("adapter_model.safetensors"))
    assert files, f"no adapter was saved in {data_dir}"
    chunks = []
    for tensor in load_file(files[0]).values():
        raw = np.ascontiguousarray(tensor).tobytes()
        for start in range(0, max(1, len(raw) - size), max(size, len(raw) // 8)):
            chunk = raw[start:start + size]
            if len(set(chunk)) >= size // 2:
                chunks.append(chunk)
    assert chunks, "the adapter has no non-trivial tensor bytes to look for"
    return chunks


def _profile_text(data_dir: Path) -> str | None:
    files = list((data_dir / "profiles").rglob("*.json"))
    return json.loads(files[0].read_text())["profile"] if files else None


def test_replies_hold_no_history_text_and_no_adapter_bytes(run: FederationRun):
    for client in run.clients:
        sent = client.sent_bytes()
        assert sent, "the audit mod recorded nothing"
        for snippet in _history_snippets(client.history):
            assert snippet not in sent
        for chunk in _adapter_chunks(client.data_dir):
            assert chunk not in sent
        assert str(client.data_dir).encode() not in sent  # not even where the data lives


def test_profile_text_stays_on_the_client(sealed_run: FederationRun):
    for client in sealed_run.clients:
        profile = _profile_text(client.data_dir)
        assert profile, f"no profile was built in {client.data_dir}"
        sent = client.sent_bytes()
        assert profile.encode() not in sent
        for start in range(0, max(1, len(profile) - 24), 24):
            assert profile[start:start + 24].encode() not in sent
        assert client.record["metrics"]["count"] == 2


def test_base_store_requests_carry_nothing_about_users(run: FederationRun):
    methods = {method.rsplit("/", 1)[-1] for method, _ in run.base_requests}
    assert methods <= {"GetManifest", "FetchFile"} and "GetManifest" in methods
    blob = b"".join(body for _, body in run.base_requests)
    for client in run.clients:
        for snippet in _history_snippets(client.history):
            assert snippet not in blob
        assert str(client.data_dir).encode() not in blob


def test_superlink_never_stores_user_text(run: FederationRun):
    root = run.clients[0].data_dir.parent / "coordinator" / "superlink"
    stored = b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file())
    for client in run.clients:
        for snippet in _history_snippets(client.history):
            assert snippet not in stored
        assert str(client.data_dir / "history.jsonl").encode() not in stored


def test_secagg_replies_hide_each_clients_statistics(secagg_run: FederationRun):
    """Under SecAgg+ the server gets masked integers; the plain vector never travels."""
    from flwr.common import bytes_to_ndarray
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
    from flwr.common.serde import recorddict_from_proto
    from flwr.proto.recorddict_pb2 import RecordDict as ProtoRecordDict

    result = secagg_run.result
    assert result.aggregation == SECAGG
    bound, clip = result.config["stat_bound"], result.config["clip"]
    for client in secagg_run.clients:
        vector = client.record["vector"]
        assert any(vector), "a client with all-zero statistics proves nothing here"
        encoded = encode_stats(vector, bound, clip)
        sent = client.sent_bytes()
        for plain in (np.asarray(vector, dtype=np.float64).tobytes(),
                      np.asarray(encoded, dtype=np.float64).tobytes(),
                      np.asarray(encoded, dtype=np.float32).tobytes(),
                      json.dumps(vector).encode()):
            assert plain not in sent
        masked = []
        for entry in client.sent:
            proto = ProtoRecordDict()
            proto.ParseFromString(base64.b64decode(entry["content_b64"]))
            content = recorddict_from_proto(proto)
            for name, record in content.array_records.items():
                assert len(record) == 0, f"{name} left the client unmasked"
            if "fitres.num_examples" in content.metric_records:
                assert content.metric_records["fitres.num_examples"]["num_examples"] == 1
                assert len(content.config_records["fitres.metrics"]) == 0
            configs = content.config_records.get(RECORD_KEY_CONFIGS, {})
            masked += [bytes_to_ndarray(b) for b in configs.get(Key.MASKED_PARAMETERS, [])]
        assert len(masked) == 2, "expected [weight, statistics] masked arrays"
        # Quantized plain values sit in [Q/2, Q]; masked ones are uniform modulo 2**32.
        quantized = (np.asarray(encoded) + clip) * QUANTIZATION_RANGE / (2 * clip)
        values = masked[1].astype(np.float64)
        assert values.shape == quantized.shape
        assert int((np.abs(values - quantized) <= 2).sum()) <= 1


def test_flower_and_ray_usage_telemetry_is_off_unless_the_user_turns_it_on(monkeypatch):
    """Flower posts usage events from every process by default (and Ray in simulation):
    nothing but encrypted metrics may leave a client, so every Flower process oppu starts
    runs with them off; a user who set the variable keeps their choice."""
    import inspect

    import flwr.supercore.telemetry as telemetry

    assert 'os.getenv("FLWR_TELEMETRY_ENABLED"' in inspect.getsource(telemetry)  # still its name
    for name in TELEMETRY_ENV:
        monkeypatch.delenv(name, raising=False)
    assert all(flower_env("/tmp/flwr")[name] == "0" for name in TELEMETRY_ENV)
    monkeypatch.setenv("FLWR_TELEMETRY_ENABLED", "1")
    assert flower_env("/tmp/flwr")["FLWR_TELEMETRY_ENABLED"] == "1"


def test_flowers_legacy_grpc_api_switches_never_reach_a_flower_process(monkeypatch):
    """With either switch set, a SuperLink also opens Flower's gRPC Control API on 0.0.0.0,
    unauthenticated, beside the Fleet-only proxy (flwr 1.42 ``flower_superlink.py``)."""
    from flwr.common import constant

    assert set(UNAUTHENTICATED_API_ENV) == {  # still Flower's names for them
        constant.FLWR_INTERNAL_GRPC_CONTROL_API, constant.FLWR_INTERNAL_GRPC_FLEET_API}
    for name in UNAUTHENTICATED_API_ENV:
        monkeypatch.setenv(name, "1")
    assert not set(UNAUTHENTICATED_API_ENV) & set(flower_env("/tmp/flwr"))
