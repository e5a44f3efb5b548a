"""The unit of data: one record of one source."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Record:
    """A training record. `id` is unique across the whole store; `text` is never logged."""

    id: str
    source: str
    text: str
