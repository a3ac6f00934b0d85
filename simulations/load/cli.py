"""The load test's command line (``python -m oppu.simulations.load_test``).

Prints a rich table on stderr and ``LOAD_JSON {...}`` on stdout, and writes the same JSON to
``--out``; an N that does not fit in memory is refused (exit 2) before anything starts.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from oppu.shared.federation.aggregation_modes import AGGREGATIONS, AUTO
from oppu.simulations.load.memory_budget import Refused
from oppu.simulations.load.report import JSON_PREFIX


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m oppu.simulations.load_test",
        description="Start a real coordinator (SuperLink + TLS + BaseStore, tiny base model) "
        "and N real SuperNodes at once on loopback; run one round; report joins, "
        "timings and the process tree's peak memory.")
    p.add_argument("--clients", type=int, default=4, help="SuperNodes to start at once.")
    p.add_argument("--aggregation", choices=AGGREGATIONS, default=AUTO,
                   help="auto: sealed below 3 clients, SecAgg+ from 3.")
    p.add_argument("--max-clientapps", type=int, default=None, metavar="K",
                   help="At most K ClientApp processes at once, machine-wide (Flower has no "
                   "such option; a slot-waiting wrapper does it, see "
                   "oppu.simulations.load.concurrency). Default: no cap, as Flower runs.")
    p.add_argument("--force", action="store_true",
                   help="Run even if the memory estimate exceeds what is available.")
    p.add_argument("--out", type=Path, default=Path("runs/load_test.json"),
                   help="Where to write the JSON report.")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="Keep state, data dirs and logs here (default: a temp dir, removed).")
    p.add_argument("--keep", action="store_true", help="Keep the temp work dir.")
    p.add_argument("--connect-timeout", type=float, default=None,
                   help="Seconds to wait for all SuperNodes (default 120 + 2 per client).")
    p.add_argument("--round-timeout", type=float, default=1800.0,
                   help="Seconds the round may take.")
    p.add_argument("--no-node-auth", dest="node_auth", action="store_false",
                   help="Let SuperNodes self-register (default: each client's key is "
                   "enrolled first, as the coordinator requires by default).")
    p.add_argument("--build-base", type=Path, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the load test; print the table and ``LOAD_JSON``; write ``--out``."""
    from oppu.shared.cli_support import console
    from oppu.simulations.bench_output import publish_result
    from oppu.simulations.load.runner import run_load_test
    from oppu.simulations.load.table import print_table
    from oppu.simulations.load.tiny_base import build_tiny_base

    args = parse_args(argv)
    if args.build_base is not None:  # ensure_tiny_base's child process
        build_tiny_base(args.build_base)
        return {}
    try:
        report = run_load_test(args.clients, aggregation=args.aggregation,
                               max_clientapps=args.max_clientapps, force=args.force,
                               work_dir=args.work_dir, keep=args.keep,
                               connect_timeout=args.connect_timeout,
                               round_timeout=args.round_timeout, node_auth=args.node_auth)
    except (Refused, ValueError) as exc:
        console.print(f"[bold red]refused:[/] {exc}", highlight=False)
        raise SystemExit(2) from None
    print_table(report)
    publish_result(report, args.out, JSON_PREFIX)
    return report
