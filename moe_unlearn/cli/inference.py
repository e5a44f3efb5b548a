"""Commands that read the run and its current version: registry, generate, evaluate, score, canaries."""

import sys
from typing import Annotated

import typer

from moe_unlearn.cli.common import AsJson, RunDir, emit, err, user_errors
from moe_unlearn.cli.render import render_canaries, render_generate, render_registry, render_score, render_training
from moe_unlearn.run import Run
from moe_unlearn.rundir import DEFAULT_RUN_DIR


@user_errors
def registry(run_dir: RunDir = DEFAULT_RUN_DIR, as_json: AsJson = False):
    """Sources, experts, record counts, the current version and its manifest."""
    emit(Run(run_dir, console=err).info(), as_json, render_registry)


@user_errors
def generate(
    prompt: Annotated[str, typer.Argument(help="Text to continue (may be empty).")],
    max_new_bytes: Annotated[int, typer.Option("--max-new-bytes", "-n", min=0, max=100_000)] = 200,
    temperature: Annotated[float, typer.Option("--temperature", "-t", min=0.0, help="0: greedy.")] = 0.8,
    top_k: Annotated[int, typer.Option("--top-k", min=0, help="Sample among the k likeliest bytes (0: all).")] = 0,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    run_dir: RunDir = DEFAULT_RUN_DIR,
    as_json: AsJson = False,
):
    """Continue PROMPT with the current version."""
    result = Run(run_dir, console=err).generate(prompt, max_new_bytes, temperature, top_k, seed)
    emit(result, as_json, render_generate)


@user_errors
def evaluate(run_dir: RunDir = DEFAULT_RUN_DIR, as_json: AsJson = False):
    """Held-out bits per byte per source and router top-1 accuracy of the current version."""
    emit(Run(run_dir, console=err).evaluate(), as_json, render_training)


@user_errors
def score(
    text: Annotated[str, typer.Argument(help="Text to score ('-' reads stdin).")],
    run_dir: RunDir = DEFAULT_RUN_DIR,
    as_json: AsJson = False,
):
    """Bits per byte of TEXT under the current version, and the router's expert weights."""
    if text == "-":
        text = sys.stdin.read()
    emit(Run(run_dir, console=err).score(text), as_json, render_score)


@user_errors
def canaries(
    ids: Annotated[list[str] | None, typer.Option("--id", help="Only this canary (repeatable).")] = None,
    candidates: Annotated[int, typer.Option("--candidates", min=1, help="Random secrets to rank against.")] = 4096,
    run_dir: RunDir = DEFAULT_RUN_DIR,
    as_json: AsJson = False,
):
    """Does the model know the built-in canaries' secrets? Greedy continuation, rank and exposure."""
    emit(Run(run_dir, console=err).canaries(ids or (), candidates), as_json, render_canaries)
