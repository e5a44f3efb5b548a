"""`data prepare`: real corpora converted into JSONL sources for `ingest`."""

from pathlib import Path
from typing import Annotated

import typer

from moe_unlearn.cli.common import AsJson, emit, err, user_errors
from moe_unlearn.cli.render import render_dictd
from moe_unlearn.errors import UserError


@user_errors
def prepare(
    corpus: Annotated[str, typer.Argument(help="Which corpus: dictd (Debian's dictionary packages).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for the JSONL files, one per source.")],
    install: Annotated[
        bool, typer.Option("--install/--no-install", help="apt-get install missing packages (needs root).")
    ] = True,
    dictd_dir: Annotated[Path, typer.Option("--dictd-dir", help="Where the dictd files are.")] = Path(
        "/usr/share/dictd"
    ),
    as_json: AsJson = False,
):
    """Convert a real corpus into JSONL sources (the one command that installs packages).

    Example: moe-unlearn data prepare dictd --out data/dictd, then
    moe-unlearn ingest --source jargon data/dictd/jargon.jsonl (one source per dictionary).
    """
    if corpus != "dictd":
        raise UserError(f"unknown corpus {corpus!r}: the one available is dictd")
    from moe_unlearn.data.dictd import prepare as prepare_dictd  # imported here: only this command needs it

    result = prepare_dictd(out_dir, dictd_dir, install=install, console=err)
    emit(result, as_json, lambda r: render_dictd(r, out_dir))
