"""What both benchmark pipelines share: the OPPU reference's recipe, the user, the sequences.

Both pipelines train on exactly what this module hands them, so a speed difference is the
training loop's, not the data's (``fingerprint`` proves the sequences are identical).
"""

from __future__ import annotations

import hashlib
import json
import resource
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oppu.shared.llm.batching import Tokenized
from oppu.shared.personal.evaluation import EvalQuery
from oppu.shared.personal.peft_methods import PeftSettings

SHARED_DATA = Path("/work/shared/data/huffpost_lamp2n")

# The OPPU reference's per-user recipe (OPPU.py); used for both pipelines where they share it.
LORA = PeftSettings(method="lora", r=8, alpha=8, dropout=0.05, target_modules=("q_proj", "v_proj"))
WEIGHT_DECAY = 0.01
WARMUP_RATIO = 0.1
MAX_GRAD_NORM = 0.3
REFERENCE_BATCH = 16
PAD_TO_MULTIPLE_OF = 8


def default_data() -> Path:
    """The real HuffPost LaMP-2N-like data when present, else the bundled sample."""
    if SHARED_DATA.is_dir():
        return SHARED_DATA
    from oppu.simulations.quickstart import sample_dir

    return sample_dir()


# ---- the user and the data both pipelines train on ------------------------------------------


@dataclass(frozen=True)
class BenchUser:
    name: str
    task: Any  # TaskSpec
    history: list[dict]  # what both pipelines train on
    labels: tuple[str, ...]
    queries: list[EvalQuery]  # the user's queries with golds, then held-out items
    held: list[dict] = field(default_factory=list)  # the held-out history items themselves


def choose_user(data: Path, items: int, user: str | None = None, holdout: int = 0) -> BenchUser:
    """The named user, or the one whose history is closest to ``items + holdout`` items."""
    from oppu.shared.data import load_lamp, split_history, user_history

    dataset = load_lamp(data)
    task = dataset.spec
    by_user = dataset.users()
    if user is None:
        sizes = {u: len(user_history(qs)) for u, qs in by_user.items()}
        target = items + holdout
        user = min(sizes, key=lambda u: (abs(sizes[u] - target), -sizes[u], u))
    elif user not in by_user:
        raise ValueError(f"No user {user!r} in {data}; pass one of its user ids with --user.")
    queries = by_user[user]
    history = user_history(queries)
    if not history:
        raise ValueError(f"User {user!r} has no history before their first query.")
    labels = task.label_set(queries[0].input)
    train, held = split_history(history, holdout) if holdout else (history, [])
    evals = [EvalQuery(q.input, q.gold, tuple(q.profile)) for q in queries if q.gold is not None]
    for item in held:
        pair = task.query_from_item(item, labels=labels)
        if pair is not None:
            evals.append(EvalQuery(*pair))
    return BenchUser(user, task, list(train[-items:]), labels, evals, list(held))


def tokenized_examples(tokenizer, bench: BenchUser, max_length: int) -> list[Tokenized]:
    """The exact sequences ``train_private_adapter`` trains on (k=0, no profile)."""
    from oppu.shared.llm.batching import tokenize_example
    from oppu.shared.personal.private_adapter import training_examples

    examples = training_examples(bench.task, bench.history, 0, bench.labels)
    return [tokenize_example(tokenizer, ex, max_length) for ex in examples]


def fingerprint(tokenized: Sequence[Tokenized]) -> str:
    blob = json.dumps([[t.input_ids, t.labels] for t in tokenized]).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def peak_rss_mb() -> float:
    """This process's peak resident set size so far (monotonic)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB else


def loss_summary(losses: Sequence[float]) -> dict[str, float]:
    """First step's loss and the mean of the last three (as oppu's TrainReport does)."""
    if not losses:
        return {"first_loss": float("nan"), "final_loss": float("nan")}
    return {"first_loss": losses[0], "final_loss": sum(losses[-3:]) / len(losses[-3:])}
