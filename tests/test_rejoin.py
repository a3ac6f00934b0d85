"""When ``join`` (and the load harness) start an exited SuperNode again: Flower 1.42's own
log lines, as its SuperNode writes them, decide."""

from __future__ import annotations

import time

from oppu.client.rejoin import MAX_RETRY_S, Rejoin, auth_refusal, exit_reason

ACTIVATION_REFUSED = """\
WARNING :   Connection attempt failed, retrying in 0.61 seconds
INFO :      Starting Flower SuperExec
WARNING :   Giving up reconnection after 37.31 seconds and 2 tries.
ERROR :     Exit Code: 305
Failed to initialize the connection to the SuperLink.
[code: 2004] Failed to activate SuperNode.
The SuperNode could not establish a connection to the SuperLink.

For more information, visit: <https://flower.ai/docs/framework/1.42/en/ref-exit-codes/305.html>
INFO:     Shutting down
"""
BAD_KEY_FILE = """\
ERROR :     Exit Code: 302
Error while loading the private key file: not an Ed25519 key.
The provided key is invalid.

For more information, visit: <https://flower.ai/docs/framework/1.42/en/ref-exit-codes/302.html>
"""
WAS_IN_THEN_SHUT_DOWN = """\
INFO :      SuperNode ID: 17306177945521409551
INFO :      [RUN 1, ROUND 1]
INFO :      SuperNode terminated gracefully.
"""


def test_a_refused_activation_is_retried_with_growing_pauses():
    rejoin = Rejoin()
    waits = [rejoin.after_exit(ACTIVATION_REFUSED) for _ in range(5)]
    assert waits == [5.0, 10.0, 20.0, MAX_RETRY_S, MAX_RETRY_S]
    assert rejoin.relaunches == 5
    assert auth_refusal(ACTIVATION_REFUSED) == "[code: 2004] Failed to activate SuperNode."


def test_a_node_that_never_gets_in_is_given_up_after_the_window():
    rejoin = Rejoin(window_s=60.0, since=time.monotonic() - 61.0)
    assert rejoin.after_exit(ACTIVATION_REFUSED) is None
    assert rejoin.relaunches == 0


def test_a_node_that_was_in_gets_the_whole_window_again():
    rejoin = Rejoin(window_s=60.0, since=time.monotonic() - 3600.0)
    assert rejoin.after_exit(WAS_IN_THEN_SHUT_DOWN) == 5.0  # connected a moment ago
    assert rejoin.after_exit(ACTIVATION_REFUSED) == 10.0


def test_a_setting_that_cannot_change_is_not_retried():
    rejoin = Rejoin()
    assert rejoin.after_exit(BAD_KEY_FILE) is None
    assert exit_reason(BAD_KEY_FILE) == ("Flower exit code 302 Error while loading the private "
                                         "key file: not an Ed25519 key. The provided key is "
                                         "invalid.")
    untrusted = ("ERROR :     SSL/TLS handshake error detected.\n[SSL: CERTIFICATE_VERIFY_FAILED]"
                 " certificate verify failed: self-signed certificate\nExit Code: 305\n")
    assert rejoin.after_exit(untrusted) is None
    timed_out = ("ERROR :     SSL/TLS handshake error detected.\n"
                 "ERROR :     _ssl.c:989: The handshake operation timed out\nExit Code: 305\n")
    assert rejoin.after_exit(timed_out) == 5.0
    assert exit_reason(WAS_IN_THEN_SHUT_DOWN) is None
