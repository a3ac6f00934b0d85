"""CPU threading and cache defaults, applied before torch first runs a kernel.

OpenMP's default spin-wait collapses throughput when the CPU is shared (an op ran 7-9x
slower on a loaded 2-core machine); passive waiting costs ~20% on an idle one. A user's
machine is rarely idle, so oppu's entry points choose passive unless the user set it.

oneDNN, which runs the bf16 matrix products of training's autocast on CPUs with AMX, keeps
every primitive it builds for a new shape (1024 by default). Each user's batches bring new
sequence lengths, so a long-lived simulation worker grew with every user: in-process over
the first 12 LaMP-2N users (an AMX Xeon), about 22 MB a user at the default against about
14 MB at 128, at the same seconds per user (with no cache at all, every primitive is rebuilt
and a user took 3-4x longer). Where training runs in fp32 (no AMX), oneDNN is not used.
"""

from __future__ import annotations

import os

ONEDNN_PRIMITIVE_CACHE = 128
"""oneDNN primitives kept (``ONEDNN_PRIMITIVE_CACHE_CAPACITY``; set it to override)."""


def apply_cpu_defaults() -> None:
    """Set oppu's defaults for what the user has not set; oneDNN reads its cache size when it
    builds its first primitive, so this must run before the first matrix product."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(ONEDNN_PRIMITIVE_CACHE))
