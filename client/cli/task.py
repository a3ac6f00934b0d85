"""``oppu-client task init``: draft a custom task file from your own history."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from oppu.shared.atomic import write_text_atomic
from oppu.shared.cli_support import friendly_errors

app = typer.Typer(name="task", help="Custom tasks: draft one from your history.",
                  no_args_is_help=True)


@app.command()
@friendly_errors
def init(
    history: Annotated[Path, typer.Option(
        "--history", help="Your history (JSONL): the draft reads its fields and answers.")],
    name: Annotated[str | None, typer.Option(
        "--name", help="Task name (default: from the file name).")] = None,
    kind: Annotated[str | None, typer.Option(
        "--kind", help="classification, rating or generation (default: guessed from the "
        "answer field's values).")] = None,
    input_field: Annotated[list[str] | None, typer.Option(
        "--input-field", help="A field the model reads (repeat for several; default: every "
        "field but the answer).")] = None,
    answer_field: Annotated[str | None, typer.Option(
        "--answer-field", help="The field holding the answer (default: the field with the "
        "fewest distinct values, else the last).")] = None,
    instruction: Annotated[str | None, typer.Option(
        "--instruction", help="What the model is asked, in one line.")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Where to write the task file (default: NAME.toml here).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Draft a short task file (fields, labels, an instruction) from a history, to edit."""
    from oppu.shared.data.task_draft import draft_task
    from oppu.shared.tasks.custom import read_task_file

    if not history.is_file():
        raise FileNotFoundError(f"No such file: {history}")
    draft = draft_task(history, name=name, kind=kind, input_fields=input_field,
                       answer_field=answer_field, instruction=instruction)
    target = out or Path(f"{draft.keys['name']}.toml")
    if target.exists() and not force:
        raise ValueError(f"{target} exists; pass --force to overwrite it or --out elsewhere.")
    text = draft.toml(history)
    write_text_atomic(target, text)
    read_task_file(target)  # what was written must load: a draft that fails is a bug here
    typer.echo(text)  # unwrapped: the user may copy from it
    typer.echo(f"Written to {target}. Next:\n  oppu-client --task-file {target} validate "
               f"--history {history} --task {draft.keys['name']}")
