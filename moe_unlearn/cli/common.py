"""What every command shares: the consoles, the option types, UserError handling and --json output."""

import functools
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from moe_unlearn.errors import UserError

out = Console()
err = Console(stderr=True)  # progress, logs and errors: stdout holds only the result

RunDir = Annotated[Path, typer.Option("--run-dir", help="Run directory (registry, versions, current pointer).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
ConfigFile = Annotated[Path | None, typer.Option("--config", help="YAML merged over configs/default.yaml.")]
IdField = Annotated[str, typer.Option("--id-field", help="JSONL field holding the id.")]
TextField = Annotated[str, typer.Option("--text-field", help="JSONL field holding the text.")]
AllowForgotten = Annotated[
    bool, typer.Option("--allow-forgotten", help="Accept content that was forgotten (the override is recorded).")
]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Show what would go and be retrained.")]
Deadline = Annotated[str | None, typer.Option("--deadline", help="Legal deadline (ISO date), recorded.")]
NoWait = Annotated[bool, typer.Option("--no-wait", help="Queue the request and return.")]


def user_errors(command):
    """Turn UserError into one line on stderr and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UserError as e:
            err.print(f"[red]error:[/] {e}", highlight=False, markup=True, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def emit(result: dict, as_json: bool, render) -> None:
    """Print `result` as JSON, or with `render`."""
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2, sort_keys=True) + "\n")
    else:
        render(result)
