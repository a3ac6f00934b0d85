"""CPU threading and cache defaults, applied before torch first runs a kernel.

OpenMP's default spin-wait collapses throughput when the CPU is shared (an op ran 7-9x
slower on a loaded 2-core machine); passive waiting costs ~20% on an idle one. A user's
machine is rarely idle, so oppu's entry points choose passive unless the user set it.

Matrix products on CPU keep what they build for each new shape in two caches: oneDNN's
primitives (``ONEDNN_PRIMITIVE_CACHE_CAPACITY``, 1024 by default) and torch's own LRU cache
in front of oneDNN (``LRU_CACHE_CAPACITY``, 1024 by default; pytorch/pytorch#27971). Each
user's batches bring new sequence lengths, so a long-lived simulation worker grew with
every user until both were full: ~0.5 MB for each new shape. At 256 each, the worker's
memory stopped growing after its 9th LaMP-2N user (an AMX Xeon, in-process: 615 MB of
anonymous memory after users 10, 11 and 12, against 640 -> 663 MB still rising at 1024),
with the same oneDNN builds (346 against 329 over 12 users) and no slower (174.5 s against
197.2 s for the 12). With no cache at all every primitive is rebuilt and a user takes 3-4x
longer.
"""

from __future__ import annotations

import os

SHAPE_CACHE = 256
"""Entries each matrix-product cache keeps (``ONEDNN_PRIMITIVE_CACHE_CAPACITY`` and
``LRU_CACHE_CAPACITY``; set either to override)."""

CACHE_VARIABLES = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")


def apply_cpu_defaults() -> None:
    """Set oppu's defaults for what the user has not set; both caches read their size when
    they are first used, so this must run before the first matrix product."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for name in CACHE_VARIABLES:
        os.environ.setdefault(name, str(SHAPE_CACHE))
