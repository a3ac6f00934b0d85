"""Fixes oppu applies to Flower 1.42 inside the Flower processes it launches, each for a bug
seen here; each says where in Flower it applies, so a Flower upgrade can check it still must.

A TLS handshake that times out is retried, not given up. Flower's HTTP retry policy
(``flwr/supercore/retry/http_retry.py``, ``_should_giveup``) gives up on any exception whose
text mentions "ssl", and a handshake that times out under load (``httpx.ConnectTimeout``:
"_ssl.c:989: The handshake operation timed out") does. When the call that gives up is the
SuperNode's heartbeat, its thread ends silently and the process lives on without heartbeats:
the SuperLink counts the node offline for good and no round can sample it (seen: 5 of 50
SuperNodes started at once on a two-core machine). A timeout is now retried like every other
timeout; a real TLS error (an untrusted certificate) still gives up at once.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType


def retry_handshake_timeouts(module: ModuleType) -> None:
    """Make ``module``'s ``make_simple_http_retry_invoker`` retry timeouts of any kind."""
    import httpx

    make: Callable = module.make_simple_http_retry_invoker

    def make_invoker():
        invoker = make()
        give_up = invoker.should_giveup

        def should_giveup(exc: Exception) -> bool:
            if isinstance(exc, httpx.TimeoutException):
                return False
            return True if give_up is None else give_up(exc)

        invoker.should_giveup = should_giveup
        return invoker

    module.make_simple_http_retry_invoker = make_invoker


def patch_supernode() -> None:
    """The fixes for ``flower-supernode``'s own process."""
    import flwr.supernode.fleet_http_connection as fleet_connection

    retry_handshake_timeouts(fleet_connection)
