"""Load test on loopback: many clients join one coordinator at once and run one round.

    OPPU_HOME=.oppu-home python -m oppu.simulations.load_test --clients 4
    python -m oppu.simulations.load_test --clients 40 --max-clientapps 4 --out runs/load40.json

A real coordinator (SuperLink over TLS, node authentication, BaseStore, signed base) and
``--clients`` real SuperNodes started at the same moment, on a tiny random-init base cached
under ``$OPPU_HOME/load-test``, so the cost measured is the federation's, not the model's.
Reports clients joined / served / failed, join and round times, and the process tree's memory
(rich table on stderr, ``LOAD_JSON {...}`` on stdout, the same JSON in ``--out``); refuses an
N that does not fit in the memory available now unless ``--force``.

This module is the command's entry point; the test lives in ``oppu.simulations.load`` (one
module per job: ``runner``, ``supernode``, ``memory_budget``, ``concurrency``, ``report``...).
"""

from __future__ import annotations

from oppu.simulations.load.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
