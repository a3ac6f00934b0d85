"""Peak memory of ``oppu-client train`` and ``oppu-client evaluate`` on a long real history.

    python -m oppu.simulations.bench_memory --items 300 --k 0,4
    python -m oppu.simulations.bench_memory --items 300 --k 0,4 --max-steps 8   # minutes

Takes the LaMP test user whose history is closest to ``--items``, writes their newest items as
a history file and the ``--holdout`` newest ones after them as the items to evaluate, then
runs the two real commands as a user would, at each k, and samples the resident memory of
the command's whole process tree. Prints a line per run and a ``MEMORY_JSON {...}`` line;
issue 15's target is at most 3 GB for a 300-item history on the embedded model.

Training keeps at most ``MAX_POSITIONS`` token positions of activations a pass whatever the
history, so a later step adds no more than another pass of the same bound: ``--max-steps``
measures close to a full epoch's peak in a fraction of the time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from oppu.simulations.bench_recipe import choose_user, default_data

JSON_PREFIX = "MEMORY_JSON "
TARGET_MB = 3072


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m oppu.simulations.bench_memory",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None,
                        help="LaMP directory (default: the shared HuffPost LaMP-2N-like data).")
    parser.add_argument("--items", type=int, default=300, help="History items to train on.")
    parser.add_argument("--holdout", type=int, default=20, help="Newest items to evaluate.")
    parser.add_argument("--k", default="0,4", help="Retrieved items per prompt, comma-separated.")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="Cap on optimizer steps (default: one full epoch).")
    parser.add_argument("--base-model", default=None, help="Default: the embedded model.")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_memory.json"))
    args = parser.parse_args(argv)
    if args.items < 1 or args.holdout < 1:
        parser.error("--items and --holdout must be >= 1.")
    return args


def _write_jsonl(path: Path, items: Sequence[dict]) -> Path:
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return path


def measured_run(command: list[str], interval: float = 0.2) -> dict:
    """Run ``command``, sampling its process tree's resident memory; fail loudly if it fails."""
    from oppu.shared.resources import PeakMemory

    start = time.perf_counter()
    with tempfile.TemporaryFile(mode="w+") as log:  # a pipe left unread would block it
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, text=True)
        peak = PeakMemory(child.pid)
        while child.poll() is None:
            peak.sample()
            time.sleep(interval)
        if child.returncode != 0:
            log.seek(0)
            raise RuntimeError(f"{' '.join(command)} failed ({child.returncode}):\n"
                               f"{log.read()[-2000:]}")
    return {"peak_rss_mb": peak.peak_mb, "seconds": round(time.perf_counter() - start, 1)}


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    data = args.data or default_data()
    bench = choose_user(data, args.items, holdout=args.holdout)
    train, held = bench.history, bench.held
    client = [str(Path(sys.executable).with_name("oppu-client"))]  # the installed command
    result: dict = {"task": bench.task.name, "user": bench.name, "items": len(train),
                    "heldout": len(held), "max_steps": args.max_steps, "target_mb": TARGET_MB,
                    "runs": []}
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as scratch:
        root = Path(scratch)
        history_file = _write_jsonl(root / "history.jsonl", train)
        heldout_file = _write_jsonl(root / "heldout.jsonl", held)
        for k in (int(v) for v in args.k.split(",")):
            common = ["--task", bench.task.name, "--data-dir", str(root / f"k{k}"),
                      *(["--base-model", args.base_model] if args.base_model else [])]
            train_cmd = [*client, "train", "--history", str(history_file), "--k", str(k),
                         "--no-select", "--epochs", "1", *common,
                         *(["--max-steps", str(args.max_steps)] if args.max_steps else [])]
            eval_cmd = [*client, "evaluate", "--history", str(heldout_file),
                        "--train-history", str(history_file), *common]
            for command, cmd in (("train", train_cmd), ("evaluate", eval_cmd)):
                print(f"oppu-client {command} k={k}: running...", file=sys.stderr, flush=True)
                run = {"command": command, "k": k, **measured_run(cmd)}
                run["within_target"] = run["peak_rss_mb"] is not None \
                    and run["peak_rss_mb"] <= TARGET_MB
                result["runs"].append(run)
                print(f"oppu-client {command} k={k}: peak {run['peak_rss_mb']} MB "
                      f"in {run['seconds']} s", file=sys.stderr, flush=True)
    from oppu.simulations.bench_output import publish_result

    publish_result(result, args.out, JSON_PREFIX)
    return result


if __name__ == "__main__":
    main()
