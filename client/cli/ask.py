"""``oppu-client ask``: answer with your own adapter (plus retrieval from your history)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from oppu.client.cli.options import (
    BaseModelOpt,
    DataDirOpt,
    DeviceOpt,
    PassphraseEnvOpt,
    TaskOpt,
    UserOpt,
    adapter_store,
    trained_base,
)
from oppu.shared.cli_support import friendly_errors, quiet_libraries
from oppu.shared.personal.recipe_options import KOpt
from oppu.shared.tasks import TaskSpec, get_task
from oppu.shared.tasks.text import template_fields


def query_input_for(spec: TaskSpec, text: str, labels: tuple[str, ...] | None) -> str:
    """Wrap plain text in the task's query wording, unless it already is a full query."""
    fields = [f for f in template_fields(spec.query_template) if f != "labels"]
    if len(fields) != 1 or spec.retrieval_query(text) != text.strip():
        return text  # a full LaMP-style input, or a task whose query needs several fields
    item = {fields[0]: text}
    return spec.query_from_item({**item, spec.target_field: ""}, labels=labels)[0]


@friendly_errors
def ask(
    query: Annotated[str | None, typer.Argument(
        help="Your query: plain text or a full task input.")] = None,
    task: TaskOpt = ...,
    user: UserOpt = "default",
    data_dir: DataDirOpt = None,
    base_model: BaseModelOpt = None,
    device: DeviceOpt = "auto",
    k: KOpt = 0,
    passphrase_env: PassphraseEnvOpt = None,
    history: Annotated[
        Path | None, typer.Option("--history", help="Your history, for retrieval when --k > 0.")
    ] = None,
    no_adapter: Annotated[
        bool, typer.Option("--no-adapter", help="Answer with the base only, to compare.")
    ] = False,
    queries: Annotated[Path | None, typer.Option(
        "--queries", help="A file of queries, one per line: answered in one call (the model "
        "loads once), one answer per line.")] = None,
) -> None:
    """Answer a query (or a file of them) with your personal adapter, on this machine."""
    quiet_libraries()
    from oppu.shared.data import read_history
    from oppu.shared.llm.model import load_base_model
    from oppu.shared.personal.evaluation import predict
    from oppu.shared.retrieval import retrieve

    spec = get_task(task)
    store = adapter_store(user, data_dir, passphrase_env)
    kept = store.kept(spec.name)
    prior = None if no_adapter else kept.prior
    if prior is not None:
        typer.echo(f"Answering with {prior.described} (what validated best on your own "
                   "items).", err=True)
    if not no_adapter and kept.uses_base:
        typer.echo("Your last training found no adapter better than the base model on your "
                   "own items: answering with the base.", err=True)
        no_adapter = True
    if not no_adapter:
        store.require(spec.name)
    meta = store.metadata(spec.name)
    if base_model is None:
        base_model = trained_base(meta)
    known = meta.get("labels") or kept.labels
    labels = tuple(known) if known else None
    texts = _query_texts(query, queries)
    items = read_history(history, spec) if k > 0 and history is not None else []
    if k > 0 and history is None:
        raise ValueError("--k > 0 retrieves from your history: pass --history YOUR_FILE.")
    model, tokenizer, _ = load_base_model(base_model, device=device)
    if not no_adapter:
        model = store.load(model, spec.name)
    profile = None if no_adapter else meta.get("profile_text")
    for text in texts:
        query_input = query_input_for(spec, text, labels)
        retrieved = retrieve(spec, items, query_input, k) if k > 0 else []
        typer.echo(predict(model, tokenizer, spec, query_input, retrieved=retrieved,
                           profile=profile, prior=prior))


def _query_texts(query: str | None, queries: Path | None) -> list[str]:
    """The query argument, or the non-empty lines of ``--queries`` (exactly one of them)."""
    if (query is None) == (queries is None):
        raise ValueError("Give one query as an argument, or a file of them with --queries.")
    if query is not None:
        return [query]
    texts = [line.strip() for line in queries.read_text(encoding="utf-8").splitlines()]
    texts = [text for text in texts if text]
    if not texts:
        raise ValueError(f"{queries} holds no query (one per line).")
    return texts
