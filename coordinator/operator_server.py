"""The operator's channel into a running coordinator: oppu's ``Operator`` gRPC service.

It listens on 127.0.0.1 only, and every call must carry the bearer token the coordinator
writes to ``<state>/operator.json`` (mode 0600, so only the operator's account reads it):
another local account that reaches the port still cannot run rounds or publish bases.
``oppu-coordinator round|status|publish`` are its clients (``operator_client``).
"""

from __future__ import annotations

import hmac
import json
import secrets
from concurrent import futures
from pathlib import Path

import grpc

from oppu.coordinator.service import CoordinatorService
from oppu.coordinator.state import StateDir
from oppu.shared.atomic import write_text_atomic
from oppu.shared.errors import ConfigError, OppuError
from oppu.shared.proto.v1 import operator_pb2 as pb
from oppu.shared.proto.v1 import operator_pb2_grpc as pb_grpc

TOKEN_HEADER = "authorization"


def operator_file(state: StateDir) -> Path:
    """Where a running coordinator says how to reach its Operator service."""
    return state.root / "operator.json"


class _Servicer(pb_grpc.OperatorServicer):
    def __init__(self, service: CoordinatorService, token: str):
        self.service, self._token = service, token

    def _admit(self, context: grpc.ServicerContext) -> None:
        given = dict(context.invocation_metadata()).get(TOKEN_HEADER, "")
        if not hmac.compare_digest(given.encode(), f"Bearer {self._token}".encode()):
            context.abort(grpc.StatusCode.UNAUTHENTICATED,
                          "Wrong or missing operator token (it is in the state dir's "
                          "operator.json).")

    def Status(self, request: pb.StatusRequest, context) -> pb.StatusReply:
        self._admit(context)
        return pb.StatusReply(status_json=json.dumps(self.service.status()))

    def RunRound(self, request: pb.RunRoundRequest, context) -> pb.RoundReply:
        self._admit(context)
        try:
            overrides = json.loads(request.run_config_json or "{}")
            if not isinstance(overrides, dict):
                raise ConfigError("The round's settings must be a JSON object.")
            future = self.service.request_round(overrides)
        except (ValueError, ConfigError) as exc:  # refused before any client trains
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except OppuError as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        try:
            outcome = future.result()
        except futures.CancelledError:
            context.abort(grpc.StatusCode.UNAVAILABLE, "The coordinator stopped before the "
                          "round ran.")
        return pb.RoundReply(run_id=outcome.entry.run_id, status=outcome.entry.status,
                             table=outcome.table, error=outcome.entry.error)

    def Publish(self, request: pb.PublishRequest, context) -> pb.PublishReply:
        self._admit(context)
        try:
            name, version = self.service.publish(request.base_dir)
        except OppuError as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        return pb.PublishReply(name=name, version=version)


class OperatorServer:
    """The running ``Operator`` service of one coordinator: ``start()``, then ``stop()``."""

    def __init__(self, service: CoordinatorService, *, port: int = 0):
        self.service = service
        self._port = port
        self._server: grpc.Server | None = None
        self.token = secrets.token_urlsafe(32)

    def start(self) -> OperatorServer:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                             options=[("grpc.so_reuseport", 0)])
        pb_grpc.add_OperatorServicer_to_server(_Servicer(self.service, self.token), server)
        try:
            port = server.add_insecure_port(f"127.0.0.1:{self._port}")  # loopback only
        except RuntimeError:
            raise OppuError(f"Cannot listen on 127.0.0.1:{self._port} for operator "
                            "commands (in use?).") from None
        server.start()
        self._server = server
        write_text_atomic(operator_file(self.service.coordinator.state), json.dumps(
            {"address": f"127.0.0.1:{port}", "token": self.token}))
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=1.0)
            self._server = None
            operator_file(self.service.coordinator.state).unlink(missing_ok=True)

    def __enter__(self) -> OperatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
