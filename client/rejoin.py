"""Keeping a user's SuperNode in the federation: when Flower's SuperNode exits, start it again.

Flower 1.42's SuperNode gives up and exits (code 305) when its ``ActivateNode`` call fails
for good, and that happens to a healthy, enrolled node: under load (50 SuperNodes starting
at once on two cores) its first call can time out after the SuperLink has already activated
it; the retry is then refused (ApiError 2004, "Failed to activate SuperNode") while that
session counts as online, up to two 30 s heartbeats. A crashed session of the node does the
same to the next start. A node that stays in a federation for weeks must outlive that, so
``join`` (and the load harness, which starts SuperNodes the way ``join`` does) relaunch an
exited SuperNode after a pause. What must still fail is a node that never gets in (an
unenrolled or revoked key): relaunching stops once the node has not been connected for
``window_s``, and the caller then names the refusal.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

CONNECTED_MARK = "SuperNode ID:"
"""What a SuperNode logs once the SuperLink activated it (flwr 1.42)."""

AUTH_REFUSED_MARKERS = ("[code: 2004] Failed to activate SuperNode",
                        "All SuperNodes must be registered via the CLI",
                        "Invalid SuperNode authentication")
"""What Flower 1.42's SuperNode logs when the SuperLink does not accept its key (unknown
key, or a session of it still online; no key while the SuperLink requires one; a bad
signature)."""

RETRYABLE_EXIT = 305
"""Flower's SUPERNODE_CONNECTION_ERROR: the one error exit a later start can cure. Any other
``Exit Code: N`` it logs is a setting that will not change (an invalid key file, TLS with node
auth, an invalid address); an exit without one (killed; shut down after a restarted SuperLink
refused its session) is retried too."""
FATAL_MARKERS = ("CERTIFICATE_VERIFY_FAILED",)
"""Connection errors that are settings too: the coordinator's certificate is not trusted (a
handshake that merely timed out is retried, ``oppu.shared.federation.flower_patches``)."""

REJOIN_WINDOW_S = 180.0
"""How long a node that is not connected keeps being relaunched: a refused session stays
online for up to 2 x 30 s heartbeats after its activation, which itself can take a minute
on a loaded machine."""
FIRST_RETRY_S = 5.0
MAX_RETRY_S = 30.0


def auth_refusal(log_text: str) -> str | None:
    """The line of a SuperNode log that says the SuperLink refused this node's key."""
    for line in log_text.splitlines():
        if any(marker in line for marker in AUTH_REFUSED_MARKERS):
            return line.strip()
    return None


@dataclass
class Rejoin:
    """When to start an exited SuperNode again, from what its last run logged.

    ``since`` is when the node was last known to be in (or first started): the window runs
    from there, so a node that was connected for a week and lost its SuperLink gets the
    whole window again.
    """

    window_s: float = REJOIN_WINDOW_S
    since: float = field(default_factory=time.monotonic)
    relaunches: int = 0
    _failures_in_a_row: int = 0

    def connected(self) -> None:
        """The node is in: a later exit gets the whole window again."""
        self.since = time.monotonic()
        self._failures_in_a_row = 0

    def after_exit(self, log_text: str) -> float | None:
        """Seconds to wait before starting the node again after it exited by itself (code 1
        on an error, 0 when it shut itself down, as after a restarted SuperLink refused its
        session), having logged ``log_text`` in this run; ``None``: give up, the exit was a
        setting (``exit_reason`` says which) or it has been out for longer than the window."""
        if _fatal(log_text):
            return None
        if CONNECTED_MARK in log_text:
            self.connected()
        if time.monotonic() - self.since > self.window_s:
            return None
        self._failures_in_a_row += 1
        self.relaunches += 1
        return min(FIRST_RETRY_S * 2 ** (self._failures_in_a_row - 1), MAX_RETRY_S)


def exit_reason(log_text: str) -> str | None:
    """Flower's own words for why the SuperNode exited: the lines after its last
    ``Exit Code: N`` up to the help link."""
    parts = log_text.rsplit("Exit Code: ", 1)
    if len(parts) < 2:
        return None
    lines = parts[1].split("For more information", 1)[0].splitlines()
    return f"Flower exit code {' '.join(line.strip() for line in lines if line.strip())}"


def _fatal(log_text: str) -> bool:
    codes = {int(code) for code in re.findall(r"Exit Code: (\d+)", log_text)}
    return bool(codes - {RETRYABLE_EXIT}) or any(mark in log_text for mark in FATAL_MARKERS)
