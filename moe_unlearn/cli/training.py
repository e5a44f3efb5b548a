"""Commands that build versions: train, init, ingest, add, update, and moving experts between runs."""

from pathlib import Path
from typing import Annotated

import typer

from moe_unlearn.cli.common import (
    AllowForgotten,
    AsJson,
    ConfigFile,
    IdField,
    RunDir,
    TextField,
    emit,
    err,
    out,
    user_errors,
)
from moe_unlearn.cli.render import render_export, render_import, render_ingest, render_training
from moe_unlearn.errors import UserError
from moe_unlearn.run import Run
from moe_unlearn.rundir import DEFAULT_RUN_DIR


@user_errors
def train(ctx: typer.Context, config: ConfigFile = None, run_dir: RunDir = DEFAULT_RUN_DIR, as_json: AsJson = False):
    """Train the composed model (experts, then router stages); extra arguments are key=value overrides.

    Example: moe-unlearn train --config configs/experiment/tiny.yaml train.expert.max_steps=50
    """
    manifest = Run(run_dir, console=err).train(config, ctx.args)
    emit(manifest, as_json, render_training)


@user_errors
def init(ctx: typer.Context, config: ConfigFile = None, run_dir: RunDir = DEFAULT_RUN_DIR):
    """Create a run directory without training: with the built-in corpus, or empty (`data.builtin=false`)
    for your own sources, added with `ingest`.

    Example: moe-unlearn init --config configs/experiment/dictd.yaml --run-dir checkpoints/dictd
    """
    run = Run(run_dir, console=err)
    if run.exists():
        raise UserError(f"{run_dir} is already a run directory")
    run.init(config, ctx.args)
    out.print(f"created {run_dir} ({run.info()['records']:,} records)", soft_wrap=True)


@user_errors
def ingest(
    files: Annotated[
        list[Path], typer.Argument(help=".txt (blank-line separated) or .jsonl ({id, text[, source]}) files.")
    ],
    source: Annotated[str, typer.Option("--source", help="Source the records belong to (created if new).")],
    expert: Annotated[str | None, typer.Option("--expert", help="Expert of a new source (default: its own).")] = None,
    role: Annotated[
        str | None,
        typer.Option(
            "--role",
            metavar="[expert|base]",
            help="Role of a new source (default: expert). A base source is declared never forgotten; it trains "
            "the shared base model, and forgetting from it rebuilds every expert.",
        ),
    ] = None,
    id_field: IdField = "id",
    text_field: TextField = "text",
    allow_forgotten: AllowForgotten = False,
    run_dir: RunDir = DEFAULT_RUN_DIR,
    as_json: AsJson = False,
):
    """Add records to a source, all or nothing; `update` (or `train`) then trains what changed.

    Files are streamed (never read whole), with a progress bar over the bytes read; a bad line stops the
    ingest with FILE:LINE and nothing added.
    """
    fields = {"id_field": id_field, "text_field": text_field, "allow_forgotten": allow_forgotten}
    result = Run(run_dir, console=err).ingest(source, files, expert=expert, role=role, **fields)
    emit(result, as_json, render_ingest)


@user_errors
def add(
    files: Annotated[list[Path], typer.Argument(help=".txt or .jsonl files of the new source.")],
    source: Annotated[str, typer.Option("--source", help="Name of the new source.")],
    expert: Annotated[
        str | None, typer.Option("--expert", help="Name of its new expert (default: the source).")
    ] = None,
    id_field: IdField = "id",
    text_field: TextField = "text",
    allow_forgotten: AllowForgotten = False,
    run_dir: RunDir = DEFAULT_RUN_DIR,
    as_json: AsJson = False,
):
    """Add a source as a new expert plus one router stage; nothing else is retrained."""
    manifest = Run(run_dir, console=err).add(
        source, files, expert=expert, id_field=id_field, text_field=text_field, allow_forgotten=allow_forgotten
    )
    emit(manifest, as_json, render_training)


@user_errors
def update(run_dir: RunDir = DEFAULT_RUN_DIR, as_json: AsJson = False):
    """Retrain the experts whose sources gained records, and the router stages from the earliest of them."""
    emit(Run(run_dir, console=err).update(), as_json, render_training)


@user_errors
def expert_export(
    name: Annotated[str, typer.Argument(help="Expert to export.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Bundle directory to create (must not exist).")],
    run_dir: RunDir = DEFAULT_RUN_DIR,
    as_json: AsJson = False,
):
    """Write a trained expert and its lineage (config, record ids, sha256, torch, CPU, threads) to a bundle.

    Example: python train.py --run-dir runs/a train.experts=[recipes], then
    moe-unlearn expert export recipes --out recipes.expert --run-dir runs/a
    """
    emit(Run(run_dir, console=err).export_expert(name, out_dir), as_json, render_export)


@user_errors
def expert_import(
    ctx: typer.Context,
    bundle: Annotated[Path, typer.Argument(help="Bundle directory written by `expert export`.")],
    config: ConfigFile = None,
    run_dir: RunDir = DEFAULT_RUN_DIR,
    as_json: AsJson = False,
):
    """Add an exported expert to this run's next version, if it is what this run would train for it.

    Pass the --config and key=value overrides this run trains with: the bundle must match their config
    hash and this registry's training records. `train` then trains only what is still missing.
    """
    emit(Run(run_dir, console=err).import_expert(bundle, config, ctx.args), as_json, render_import)
