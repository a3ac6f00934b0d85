"""Calls into a running coordinator's ``Operator`` service (``operator_server``), for the
``oppu-coordinator round|status|publish`` commands."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import grpc

from oppu.coordinator.operator_server import TOKEN_HEADER, operator_file
from oppu.coordinator.state import StateDir
from oppu.shared.errors import ConfigError, OppuError
from oppu.shared.proto.v1 import operator_pb2 as pb
from oppu.shared.proto.v1 import operator_pb2_grpc as pb_grpc


@contextmanager
def operator_stub(state: StateDir) -> Iterator[tuple[pb_grpc.OperatorStub, list]]:
    """A stub on the coordinator of ``state`` and the call metadata carrying its token."""
    path = operator_file(state)
    if not path.is_file():
        raise OppuError(f"No coordinator is running on {state.root} ({path.name} is missing): "
                        "start one with `oppu-coordinator start --state-dir ...`.")
    reach = json.loads(path.read_text())
    with grpc.insecure_channel(reach["address"]) as channel:  # 127.0.0.1 only
        yield pb_grpc.OperatorStub(channel), [(TOKEN_HEADER, f"Bearer {reach['token']}")]


def _failed(exc: grpc.RpcError, state: StateDir) -> OppuError:
    if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
        return ConfigError(exc.details())
    if exc.code() == grpc.StatusCode.UNAVAILABLE and "stop" not in (exc.details() or ""):
        return OppuError(f"The coordinator of {state.root} does not answer (stopped?).")
    return OppuError(exc.details() or str(exc.code()))


def status(state: StateDir, *, timeout: float = 60) -> dict:
    with operator_stub(state) as (stub, metadata):
        try:
            return json.loads(stub.Status(pb.StatusRequest(), metadata=metadata,
                                          timeout=timeout).status_json)
        except grpc.RpcError as exc:
            raise _failed(exc, state) from None


def run_round(state: StateDir, overrides: dict[str, object], *,
              timeout: float | None = None) -> pb.RoundReply:
    """Run one round now with ``overrides``; waits for its end (``timeout``: no limit)."""
    with operator_stub(state) as (stub, metadata):
        try:
            return stub.RunRound(pb.RunRoundRequest(run_config_json=json.dumps(overrides)),
                                 metadata=metadata, timeout=timeout)
        except grpc.RpcError as exc:
            raise _failed(exc, state) from None


def publish(state: StateDir, base_dir: str, *, timeout: float = 3600) -> pb.PublishReply:
    with operator_stub(state) as (stub, metadata):
        try:
            return stub.Publish(pb.PublishRequest(base_dir=base_dir), metadata=metadata,
                                timeout=timeout)
        except grpc.RpcError as exc:
            raise _failed(exc, state) from None
