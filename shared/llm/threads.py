"""CPU threading defaults, applied before torch loads its OpenMP runtime.

OpenMP's default spin-wait collapses throughput when the CPU is shared (an op ran 7-9x
slower on a loaded 2-core machine); passive waiting costs ~20% on an idle one. A user's
machine is rarely idle, so oppu's entry points choose passive unless the user set it.
"""

from __future__ import annotations

import os


def apply_cpu_defaults() -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
