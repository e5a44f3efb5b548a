"""Adding sources and their records to a store: `ingest_files` is what `moe-unlearn ingest` does, and
what the oracle does to rebuild a run directory from the retained records."""

from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from moe_unlearn.data.ingest import progress_bar, read_files
from moe_unlearn.errors import UserError
from moe_unlearn.storage.registry import ROLES, Registry, check_name


def check_role(role: str | None) -> None:
    """None (keep or default) or one of the registry's roles."""
    if role is not None and role not in ROLES:
        raise UserError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")


def ingest_files(
    registry: Registry,
    source: str,
    files: Sequence[str | Path],
    *,
    expert: str | None = None,
    role: str | None = None,
    id_field: str = "id",
    text_field: str = "text",
    allow_forgotten: bool = False,
    console: Console | None = None,
) -> dict:
    """Add the records of `.txt`/`.jsonl` files to `source`, all or nothing, with a progress bar on `console`.
    A new source gets `role` (default expert) and an expert of its own name unless `expert` is given."""
    check_name("source", source)
    check_role(role)
    with registry.transaction(), progress_bar(console) as progress:
        if not registry.has_source(source):
            registry.add_source(source, expert, role=role or "expert")
        else:
            info = next(s for s in registry.sources() if s.name == source)
            if role and info.role != role:
                raise UserError(f"source {source!r} has role {info.role!r}, not {role!r}")
            if expert and info.expert != expert:
                raise UserError(f"source {source!r} belongs to expert {info.expert!r}, not {expert!r}")
        paths, counts = [Path(f) for f in files], {"integer_ids": 0}
        records = read_files(paths, source, id_field=id_field, text_field=text_field, progress=progress, counts=counts)
        n = registry.insert_records(records, allow_forgotten=allow_forgotten)
    info = next(s for s in registry.sources() if s.name == source)
    noted = {k: v for k, v in counts.items() if v}  # integer_ids only when there were some
    return {"source": source, "expert": info.expert, "role": info.role, "records_added": n, **noted}
