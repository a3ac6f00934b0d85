"""``--max-clientapps K``: at most K ClientApp processes at once, machine-wide.

Flower 1.42 has no option to limit concurrent ClientApps (``flower-supernode --help``: only
``--isolation subprocess|process``; ``flower-superexec``'s local ``subprocess`` executor
launches every task at once, only its Kubernetes executor has a capacity). So one is added
here: a ``flwr-clientapp`` wrapper put first on the SuperNodes' PATH waits for one of K
machine-wide slots (file locks) and then ``exec``s the real one, which holds the slot until it
exits. Flower gives a launched ClientApp 30 s to report in; a wrapper that finds no slot within
``SLOT_PATIENCE_S`` exits, the task's token expires, and Flower launches it again (so waiting
clients retry about every 30-35 s). This caps memory at about N x (SuperNode + SuperExec) +
K x ClientApp, at the cost of time.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

SLOT_PATIENCE_S = 15.0
"""How long a capped ClientApp waits for a slot before giving its task back (< Flower's 30 s)."""


def concurrency_wrappers(bin_dir: Path, slots: int) -> Path:
    """Scripts that cap ClientApps at ``slots`` at once, machine-wide (``--max-clientapps``).

    ``flwr-clientapp`` waits for one of ``slots`` file locks, then ``exec``s the next
    ``flwr-clientapp`` on PATH (oppu's FAB gate when the SuperNode is gated, else Flower's);
    the lock's descriptor survives ``exec``, so the slot is held until the app exits. The gate
    puts its own scripts first on the SuperNode's PATH, so ``flower-superexec`` (which the
    SuperNode starts by name and which starts the ClientApps) is wrapped too, to put this
    folder back in front.
    """
    bin_dir.mkdir(parents=True, exist_ok=True)
    slot_dir = bin_dir / "slots"
    slot_dir.mkdir(exist_ok=True)
    real_superexec = Path(sys.executable).parent / "flower-superexec"
    superexec = bin_dir / "flower-superexec"
    superexec.write_text(f'#!/bin/sh\nPATH={shlex.quote(str(bin_dir))}:"$PATH"\nexport PATH\n'
                         f'exec {shlex.quote(str(real_superexec))} "$@"\n')
    clientapp = bin_dir / "flwr-clientapp"
    clientapp.write_text(f'''#!{sys.executable}
"""oppu load test: at most {slots} ClientApps at once (see oppu.simulations.load.concurrency)."""
import fcntl, os, shutil, sys, time
here = os.path.dirname(os.path.abspath(__file__))
rest = os.pathsep.join(d for d in os.environ.get("PATH", "").split(os.pathsep)
                       if d and os.path.abspath(d) != here)
target = shutil.which("flwr-clientapp", path=rest)
if target is None:
    sys.exit("oppu load test: no flwr-clientapp on PATH after " + here)
deadline = time.monotonic() + {SLOT_PATIENCE_S!r}
while True:
    for i in range({slots}):
        fd = os.open(os.path.join({str(slot_dir)!r}, f"slot-{{i}}"), os.O_CREAT | os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        os.set_inheritable(fd, True)
        os.execv(target, [target, *sys.argv[1:]])
    if time.monotonic() > deadline:
        sys.exit(75)  # no slot: the task's token expires and Flower launches it again
    time.sleep(0.25)
''')
    for script in (superexec, clientapp):
        script.chmod(0o755)
    return bin_dir
