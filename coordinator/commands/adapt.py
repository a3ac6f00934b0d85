"""``oppu-coordinator adapt``: task-adapt the base on the base users, merge, version it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from oppu.coordinator.adapt import VARIANTS, AdaptSettings, adapt_base, adaptation_queries
from oppu.shared.cli_support import console, friendly_errors, quiet_libraries
from oppu.shared.data import base_users, load_lamp
from oppu.shared.llm.training import TrainSettings
from oppu.shared.paths import oppu_home
from oppu.shared.personal.bases import PROFILE_BASE_WRITER, base_of_manifest
from oppu.shared.personal.recipe import DEFAULT_RECIPE


@friendly_errors
def adapt(
    data: Annotated[Path, typer.Option("--data", help="A LaMP directory (questions/outputs).")],
    task: Annotated[str | None, typer.Option(help="Task; default: from outputs.json.")] = None,
    variant: Annotated[str, typer.Option(help=f"Prompt variant: {', '.join(VARIANTS)}.")] = "plain",
    k: Annotated[int, typer.Option(
        min=0, help="Retrieved items per prompt (rag: >= 1; profile: 0 or more); one base "
        "per k, as the paper's reference code.")] = 1,
    base_model: Annotated[str | None, typer.Option(help="HF id or directory.")] = None,
    epochs: Annotated[int, typer.Option(min=1)] = 3,
    lr: Annotated[float, typer.Option()] = 1e-4,
    batch_size: Annotated[int, typer.Option(min=1)] = 8,
    max_examples: Annotated[int | None, typer.Option(help="Cap for CPU runs.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Cap for CPU runs.")] = None,
    out: Annotated[Path | None, typer.Option(help="Artifact dir (default: OPPU_HOME).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    check_share: Annotated[float, typer.Option(
        min=0.0, max=0.9, help="Share of base users held out to choose epochs and check the "
        "base (0: no check).")] = 0.2,
    accept_weak_base: Annotated[bool, typer.Option(
        help="Save the base even when it scores below the trivial answer.")] = False,
    recipe_users: Annotated[int, typer.Option(
        min=0, help="Held-out base users to choose the private adapters' lr and epochs on, "
        "stored in the manifest (0: none).")] = 8,
) -> None:
    """Train one LoRA on the base users' queries, keep its best epoch on held-out base users,
    merge it, save a versioned base; print how it compares with the untuned model and the
    base users' most common answer (and refuse a base below that)."""
    quiet_libraries()
    from oppu.shared.llm.model import load_base_model

    dataset = load_lamp(data, task)
    settings = AdaptSettings(variant=variant, k=k, max_examples=max_examples,
                             check_share=check_share, recipe_users=recipe_users,
                             train=TrainSettings(lr=lr, epochs=epochs, batch_size=batch_size,
                                                 max_steps=max_steps))
    users = base_users(dataset)
    model, tokenizer, _ = load_base_model(base_model, device=device)
    profile_of = None
    if variant == "profile":
        from oppu.shared.personal.profiles import build_profile

        def profile_of(items):
            return build_profile(model, tokenizer, dataset.spec, items,
                                 mode=PROFILE_BASE_WRITER)

    queries = adaptation_queries(dataset, users, settings)
    console.print(f"{dataset.task}: {len(queries)} queries of {len(users)} base users.")
    name = base_of_manifest(variant, {"k": k}).name
    target = out or oppu_home() / "bases" / f"{dataset.task}-{name}"
    adapted = adapt_base(model, tokenizer, dataset.spec, queries, settings, out_dir=target,
                         model_id=base_model or "embedded", profile_of=profile_of,
                         personal=DEFAULT_RECIPE, refuse_weak=not accept_weak_base)
    console.print(adapted.summary(), markup=False)
    if adapted.warning():
        console.print(f"[bold red]Warning:[/] {adapted.warning()}")
    console.print(f"Base artifact: {target}\nversion {adapted.manifest.version}")
