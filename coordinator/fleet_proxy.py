"""A Fleet-only front door for the SuperLink: clients reach the Fleet API and nothing else.

Flower 1.42 serves the Fleet API (SuperNodes), the Control API (``flwr run``, ``stop``,
``log``, ``ls``, ``flwr supernode register/unregister/list``) and the ServerApp runtime API on
one HTTP port, and its open-source build authenticates no Control API caller: without
``FLWR_OIDC_ENABLED=1`` and Flower's enterprise plugin every request gets the no-op account
(``flwr/superlink/config_loader.py``: ``load_control_authn_plugin`` returns
``NoOpControlAuthnPlugin``). Whoever reached that port could enroll their own SuperNode key
(defeating node authentication), submit or stop runs and read run logs.

So the coordinator binds the SuperLink to loopback and puts this proxy on the public address:
it terminates TLS with the coordinator's certificate, forwards requests under ``/v1/fleet/``
to the SuperLink unchanged (headers, so Flower's node-auth signature still checks, and body),
and answers anything else with 403. The operator's own ``flwr`` CLI talks to the loopback
port directly.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path

from oppu.shared.errors import OppuError

FLEET_PREFIX = "/v1/fleet/"
"""The only path prefix clients may use: Flower's Fleet API (``flwr/superlink/routers/fleet``)."""
HOP_BY_HOP = frozenset({"host", "content-length", "connection", "keep-alive", "te", "trailer",
                        "transfer-encoding", "upgrade", "proxy-authorization",
                        "proxy-authenticate", "content-encoding"})
UPSTREAM_TIMEOUT_S = 120.0


class FleetProxy:
    """TLS (or plain, with ``tls_dir=None``) HTTP proxy: ``host:port`` -> Fleet API upstream."""

    def __init__(self, *, host: str, port: int, upstream: str, tls_dir: Path | None):
        self.host, self.port, self.upstream = host, port, upstream
        self.tls_dir = tls_dir
        self.refused = 0
        """Requests answered 403 (anything but the Fleet API)."""
        self._server = None
        self._thread: threading.Thread | None = None

    def _app(self):
        import httpx
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import Response
        from starlette.routing import Route

        from oppu.shared.federation.tls import CA_CERT

        scheme = "http" if self.tls_dir is None else "https"
        verify: str | bool = False if self.tls_dir is None else str(self.tls_dir / CA_CERT)
        client = httpx.AsyncClient(base_url=f"{scheme}://{self.upstream}", verify=verify,
                                   timeout=UPSTREAM_TIMEOUT_S)

        async def forward(request: Request) -> Response:
            if not request.url.path.startswith(FLEET_PREFIX):
                self.refused += 1
                return Response("oppu: only Flower's Fleet API is served on this port.\n",
                                status_code=403, media_type="text/plain")
            headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
            try:
                upstream = await client.request(request.method, request.url.path,
                                                params=request.query_params,
                                                headers=headers, content=await request.body())
            except httpx.HTTPError as exc:
                return Response(f"oppu: SuperLink unreachable ({type(exc).__name__}).\n",
                                status_code=502, media_type="text/plain")
            return Response(upstream.content, status_code=upstream.status_code,
                            headers={k: v for k, v in upstream.headers.items()
                                     if k.lower() not in HOP_BY_HOP})

        @contextlib.asynccontextmanager
        async def lifespan(_app):
            yield
            await client.aclose()

        methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
        return Starlette(routes=[Route("/{path:path}", forward, methods=methods)],
                         lifespan=lifespan)

    def start(self, timeout: float = 30.0) -> FleetProxy:
        """Serve in a background thread; return once the port accepts connections."""
        import uvicorn

        from oppu.shared.federation.tls import SERVER_CERT, SERVER_KEY

        probe = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        with contextlib.suppress(OSError), socket.create_connection((probe, self.port), 1.0):
            raise OppuError(f"Port {self.port} is already in use on {probe}; pick another "
                            "with --port.")
        tls = {} if self.tls_dir is None else {
            "ssl_certfile": str(self.tls_dir / SERVER_CERT),
            "ssl_keyfile": str(self.tls_dir / SERVER_KEY)}
        config = uvicorn.Config(self._app(), host=self.host, port=self.port, lifespan="on",
                                log_level="warning", access_log=False, **tls)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="oppu-fleet-proxy",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise OppuError(f"The Fleet proxy could not listen on {self.host}:{self.port}.")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server, self._thread = None, None
