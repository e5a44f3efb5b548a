"""Adding sources and their records to a store: `ingest_files` is what `moe-unlearn ingest` does, and
what the oracle does to rebuild a run directory from the retained records."""

from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from moe_unlearn.data.ingest import progress_bar, read_files
from moe_unlearn.errors import UserError
from moe_unlearn.storage.registry import Registry, check_name


def ingest_files(
    registry: Registry,
    source: str,
    files: Sequence[str | Path],
    *,
    expert: str | None = None,
    id_field: str = "id",
    text_field: str = "text",
    allow_forgotten: bool = False,
    console: Console | None = None,
) -> dict:
    """Add the records of `.txt`/`.jsonl` files to `source` (created if new, with an expert of the
    same name unless `expert` is given), all or nothing, with a progress bar on `console`."""
    check_name("source", source)
    with registry.transaction(), progress_bar(console) as progress:
        if not registry.has_source(source):
            registry.add_source(source, expert or source)
        elif expert and registry.source_map()[source] != expert:
            raise UserError(f"source {source!r} belongs to expert {registry.source_map()[source]!r}, not {expert!r}")
        paths = [Path(f) for f in files]
        records = read_files(paths, source, id_field=id_field, text_field=text_field, progress=progress)
        n = registry.insert_records(records, allow_forgotten=allow_forgotten)
    return {"source": source, "expert": registry.source_map()[source], "records_added": n}
