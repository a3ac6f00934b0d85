"""Showing a user their own results (stays on their machine)."""

from __future__ import annotations

from rich.table import Table

from oppu.shared.cli_support import console
from oppu.shared.personal.evaluation import EvalResult
from oppu.shared.personal.pipeline import Outcome


def print_outcome(outcome: Outcome) -> None:
    selection = outcome.selection
    if selection is not None:
        tried = ", ".join(f"lr {p.lr:g}: {len(p.scores)} epochs" for p in selection.grid)
        console.print(f"Recipe selection ({tried}) took {selection.seconds:.0f} s of "
                      f"{outcome.seconds:.0f} s.")
        console.print(selection.summary())
    kept_other = selection is not None and selection.chosen != "adapter"
    if outcome.report is not None and not kept_other:  # else the summary said what is used
        r = outcome.report
        console.print(
            f"Trained on {outcome.train_items} items: {r.steps} steps, {r.tokens} tokens in "
            f"{r.seconds:.1f} s ({r.tokens_per_second:.0f} tok/s), loss {r.first_loss:.3f} -> "
            f"{r.final_loss:.3f}."
        )
        if r.truncated:
            console.print(f"[yellow]{r.truncated} over-long item(s) were truncated.[/]")
    elif not kept_other:
        console.print("No new history items: the adapter is unchanged.")
    if outcome.adapter_path and (selection is None or selection.chosen == "adapter"):
        console.print(f"Adapter saved to {outcome.adapter_path}")
    console.print(f"Done in {outcome.seconds:.0f} s.")
    used = {"base": "base (kept: no adapter beat it)", "previous": "your previous adapter"}
    label = used.get(selection.chosen, "your adapter") if selection else "your adapter"
    if selection is not None and selection.prior_weight:
        label += " + your label prior"
    rows = [("base (no adapter)", outcome.baseline), (label, outcome.personal)]
    rows = [(name, result) for name, result in rows if result is not None]
    if not rows:
        console.print("No held-out items to evaluate on (history too short or not evaluable).")
        return
    print_results(f"{outcome.task}: {outcome.evaluated_queries} held-out queries", rows)


def print_results(title: str, rows: list[tuple[str, EvalResult]]) -> None:
    """One table: a row per model, a column per metric (the task's, without the count)."""
    names = [k for k in rows[0][1].metrics if k != "count"]
    table = Table(title=title)
    table.add_column("model")
    for name in names:
        table.add_column(name, justify="right")
    for label, result in rows:
        table.add_row(label, *(f"{result.metrics[n]:.3f}" for n in names))
    console.print(table)
