"""The checked-in generated code in shared/proto/ matches what protos/ generates today."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("grpc_tools", reason="grpcio-tools (dev extra) regenerates the protos")

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gen_protos.py"


def _gen_protos():
    spec = importlib.util.spec_from_file_location("gen_protos", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_code_is_current(tmp_path: Path):
    gen = _gen_protos()
    gen.generate(tmp_path / "v1")
    stale = gen.stale_files(tmp_path / "v1", gen.OUTPUT_DIR)
    assert not stale, f"{stale} differ from protos/: run python scripts/gen_protos.py"


def test_generated_code_imports_under_the_oppu_package():
    from oppu.shared.proto.v1 import base_store_pb2, base_store_pb2_grpc, metrics_pb2

    assert base_store_pb2_grpc.BaseStoreStub
    assert base_store_pb2.SignedManifest.DESCRIPTOR.fields_by_name["listing"].message_type \
        .full_name == "oppu.v1.BaseManifest"
    assert metrics_pb2.SealedMetrics(round=3).round == 3
