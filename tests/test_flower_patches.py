"""oppu's fixes to Flower, against Flower's own retry code: a TLS handshake that times out is
retried (Flower 1.42 gives up on it, and a SuperNode's heartbeat thread then dies silently);
an untrusted certificate still gives up at once."""

from __future__ import annotations

import types

import httpx
import pytest

TIMED_OUT = httpx.ConnectTimeout("_ssl.c:989: The handshake operation timed out")
UNTRUSTED = httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")


def _module(patched: bool) -> types.ModuleType:
    from flwr.supercore.retry import make_simple_http_retry_invoker

    from oppu.shared.federation.flower_patches import retry_handshake_timeouts

    module = types.ModuleType("fleet_connection")
    module.make_simple_http_retry_invoker = make_simple_http_retry_invoker
    if patched:
        retry_handshake_timeouts(module)
    return module


def _call(module: types.ModuleType, failures: list[Exception]) -> str:
    invoker = module.make_simple_http_retry_invoker()
    invoker.wait_function = lambda seconds: None

    def heartbeat() -> str:
        if failures:
            raise failures.pop(0)
        return "sent"

    return invoker.invoke(heartbeat)


def test_a_handshake_timeout_is_retried():
    assert _call(_module(patched=True), [TIMED_OUT, TIMED_OUT]) == "sent"


def test_flower_itself_gives_up_on_a_handshake_timeout():
    """Why the patch exists; once a Flower release retries it, drop the patch."""
    with pytest.raises(httpx.ConnectTimeout):
        _call(_module(patched=False), [TIMED_OUT])


def test_an_untrusted_certificate_still_gives_up():
    with pytest.raises(httpx.ConnectError):
        _call(_module(patched=True), [UNTRUSTED])


def test_the_supernode_process_gets_the_patch():
    import flwr.supernode.fleet_http_connection as fleet_connection

    from oppu.shared.federation.flower_patches import patch_supernode

    original = fleet_connection.make_simple_http_retry_invoker
    try:
        patch_supernode()
        assert _call(fleet_connection, [TIMED_OUT]) == "sent"
    finally:
        fleet_connection.make_simple_http_retry_invoker = original
